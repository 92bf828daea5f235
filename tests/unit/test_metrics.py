"""The Prometheus exposition of one API process: every metric name and label of API.md."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from visionq.jobs.snapshot import ClusterSnapshot
from visionq.jobs.tracker import CONFIDENCE_BUCKETS, INFERENCE_BUCKETS, bucket_of
from visionq.metrics import Metrics

MODEL = "efficientnet-lite0@1"
#: Counts per bucket, as the workers keep them in Redis: 4 observations, two in the first bucket, one in the
#: 0.1 s bucket and one slower than every bound.
INFERENCE_FIELDS = {f"in:{INFERENCE_BUCKETS[0]}": 2.0, "in:0.1": 1.0, "count": 4.0, "sum": 12.5}
SNAPSHOT = ClusterSnapshot(
    active_jobs=2,
    queue_depth={"urgent": 1, "high": 0, "normal": 3, "low": 7},
    jobs_total={"completed": 5, "failed": 1},
    inference={MODEL: INFERENCE_FIELDS},
    workers=1,
)


def scrape(metrics: Metrics, snapshot: ClusterSnapshot = SNAPSHOT) -> dict[str, tuple[str, list[Sample]]]:
    """Metric family name → (type, samples), parsed by Prometheus's own parser."""
    text = metrics.render(snapshot).decode()
    return {family.name: (family.type, family.samples) for family in text_string_to_metric_families(text)}


@pytest.fixture
def metrics() -> Metrics:
    metrics = Metrics()
    metrics.http_requests.labels("GET", "/health", "200").inc()
    metrics.http_requests.labels("POST", "/classify", "202").inc(2)
    metrics.http_duration.labels("GET", "/health", "200").observe(0.02)
    return metrics


def _samples(families: dict[str, tuple[str, list[Sample]]], family: str, name: str) -> list[Sample]:
    return [sample for sample in families[family][1] if sample.name == name]


def test_http_request_duration_is_a_histogram_by_method_route_and_status(metrics: Metrics) -> None:
    families = scrape(metrics)
    kind, _ = families["visionq_http_request_duration_seconds"]
    assert kind == "histogram"
    [count] = _samples(families, "visionq_http_request_duration_seconds", "visionq_http_request_duration_seconds_count")
    assert count.labels == {"method": "GET", "route": "/health", "status": "200"}
    assert count.value == 1


def test_http_requests_total_counts_by_method_route_and_status(metrics: Metrics) -> None:
    families = scrape(metrics)
    assert families["visionq_http_requests"][0] == "counter"
    totals = {
        (s.labels["method"], s.labels["route"], s.labels["status"]): s.value
        for s in _samples(families, "visionq_http_requests", "visionq_http_requests_total")
    }
    assert totals == {("GET", "/health", "200"): 1.0, ("POST", "/classify", "202"): 2.0}


def test_active_jobs_is_a_gauge_from_the_snapshot(metrics: Metrics) -> None:
    families = scrape(metrics)
    kind, samples = families["visionq_active_jobs"]
    assert kind == "gauge"
    assert [sample.value for sample in samples] == [2.0]


def test_queue_depth_is_a_gauge_per_priority(metrics: Metrics) -> None:
    kind, samples = scrape(metrics)["visionq_queue_depth"]
    assert kind == "gauge"
    assert {s.labels["priority"]: s.value for s in samples} == {"urgent": 1, "high": 0, "normal": 3, "low": 7}


def test_jobs_total_counts_every_terminal_status(metrics: Metrics) -> None:
    families = scrape(metrics)
    assert families["visionq_jobs"][0] == "counter"
    totals = {s.labels["status"]: s.value for s in _samples(families, "visionq_jobs", "visionq_jobs_total")}
    assert totals == {"completed": 5.0, "failed": 1.0, "cancelled": 0.0, "expired": 0.0}


def test_model_inference_seconds_is_a_histogram_per_model(metrics: Metrics) -> None:
    families = scrape(metrics)
    assert families["visionq_model_inference_seconds"][0] == "histogram"
    buckets = _samples(families, "visionq_model_inference_seconds", "visionq_model_inference_seconds_bucket")
    assert {sample.labels["model_version"] for sample in buckets} == {MODEL}
    by_bound = {sample.labels["le"]: sample.value for sample in buckets}
    assert by_bound["0.05"] == 2.0
    assert by_bound["0.1"] == 3.0
    [count] = _samples(families, "visionq_model_inference_seconds", "visionq_model_inference_seconds_count")
    [total] = _samples(families, "visionq_model_inference_seconds", "visionq_model_inference_seconds_sum")
    assert by_bound["+Inf"] == count.value == 4.0
    assert total.value == 12.5


def test_inference_buckets_are_cumulative(metrics: Metrics) -> None:
    families = scrape(metrics)
    buckets = _samples(families, "visionq_model_inference_seconds", "visionq_model_inference_seconds_bucket")
    values = [sample.value for sample in buckets]
    assert values == sorted(values)
    assert len(values) == len(INFERENCE_BUCKETS) + 1


def test_prediction_confidence_is_a_cumulative_histogram_per_model(metrics: Metrics) -> None:
    # Three jobs as the workers count them: two confident answers (0.93, 0.999) and one unsure (0.31).
    fields = {"confidence:in:0.95": 1.0, "confidence:in:0.999": 1.0, "confidence:in:0.35": 1.0}
    fields |= {"confidence:count": 3.0, "confidence:sum": 2.239}
    families = scrape(metrics, ClusterSnapshot(inference={MODEL: fields}))

    assert families["visionq_prediction_confidence"][0] == "histogram"
    buckets = _samples(families, "visionq_prediction_confidence", "visionq_prediction_confidence_bucket")
    assert {sample.labels["model_version"] for sample in buckets} == {MODEL}
    by_bound = {sample.labels["le"]: sample.value for sample in buckets}
    assert len(by_bound) == len(CONFIDENCE_BUCKETS) + 1
    assert (by_bound["0.3"], by_bound["0.35"], by_bound["0.9"], by_bound["0.95"]) == (0.0, 1.0, 1.0, 2.0)
    assert by_bound["1.0"] == by_bound["+Inf"] == 3.0
    [count] = _samples(families, "visionq_prediction_confidence", "visionq_prediction_confidence_count")
    assert count.value == 3.0


def test_the_inference_histogram_is_apart_from_the_confidence_one(metrics: Metrics) -> None:
    families = scrape(metrics)  # the model has inference figures only
    [count] = _samples(families, "visionq_prediction_confidence", "visionq_prediction_confidence_count")
    assert count.value == 0.0
    [count] = _samples(families, "visionq_model_inference_seconds", "visionq_model_inference_seconds_count")
    assert count.value == 4.0


@pytest.mark.parametrize(
    ("confidence", "bucket"), [(0.0, 0.05), (0.05, 0.05), (0.3100001, 0.35), (0.98, 0.99), (0.9995, 1.0), (1.0, 1.0)]
)
def test_a_confidence_counts_in_the_least_bucket_it_does_not_exceed(confidence: float, bucket: float) -> None:
    assert bucket_of(confidence, CONFIDENCE_BUCKETS) == bucket


def test_confidence_buckets_are_probabilities_finer_near_one() -> None:
    assert list(CONFIDENCE_BUCKETS) == sorted(set(CONFIDENCE_BUCKETS))
    assert CONFIDENCE_BUCKETS[0] > 0
    assert CONFIDENCE_BUCKETS[-1] == 1.0
    assert [str(bound) for bound in CONFIDENCE_BUCKETS[:3]] == ["0.05", "0.1", "0.15"], "bounds print exactly"


def test_an_empty_cluster_still_exposes_every_metric() -> None:
    families = scrape(Metrics(), ClusterSnapshot())
    expected = {
        "visionq_http_request_duration_seconds",
        "visionq_http_requests",
        "visionq_active_jobs",
        "visionq_queue_depth",
        "visionq_model_inference_seconds",
        "visionq_prediction_confidence",
        "visionq_jobs",
    }
    assert expected <= set(families)
    assert [s.value for s in families["visionq_active_jobs"][1]] == [0.0]


def test_each_scrape_shows_the_latest_snapshot(metrics: Metrics) -> None:
    scrape(metrics)
    later = ClusterSnapshot(active_jobs=9)
    assert [s.value for s in scrape(metrics, later)["visionq_active_jobs"][1]] == [9.0]


def test_two_apps_in_one_process_keep_separate_registries() -> None:
    first, second = Metrics(), Metrics()
    first.http_requests.labels("GET", "/health", "200").inc()
    families = scrape(second)
    assert _samples(families, "visionq_http_requests", "visionq_http_requests_total") == []
