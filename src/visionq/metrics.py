"""Every Prometheus metric visionq exposes, declared once with the names of API.md.

Two kinds live here. Request metrics are counted by each API process in memory. Job and
worker figures are cluster-wide: workers and Lua scripts keep them in Redis (keys.py), and
each scrape of `/metrics` reads them back (jobs/snapshot.py), so one scrape of any API process shows the whole
fleet, whichever machines its workers run on.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from visionq.jobs.snapshot import ClusterSnapshot
from visionq.jobs.tracker import BATCH_BUCKETS, CONFIDENCE_BUCKETS, INFERENCE_BUCKETS
from visionq.wire.states import JobStatus

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ClusterCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = ClusterSnapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily("visionq_active_jobs", "Jobs a worker is processing now.", value=snap.active_jobs)
        depth = GaugeMetricFamily("visionq_queue_depth", "Jobs waiting in the queue.", labels=["priority"])
        for priority, count in snap.queue_depth.items():
            depth.add_metric([priority], count)
        yield depth
        jobs = CounterMetricFamily("visionq_jobs", "Jobs that reached a terminal state.", labels=["status"])
        for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED):
            jobs.add_metric([status.value], snap.jobs_total.get(status.value, 0))
        yield jobs
        lookups = CounterMetricFamily(
            "visionq_result_cache_lookups",
            "Submits the result cache answered (hit: an identical job's result, no inference) or not (miss).",
            labels=["outcome"],
        )
        for outcome in ("hit", "miss"):
            lookups.add_metric([outcome], snap.cache_lookups.get(outcome, 0))
        yield lookups
        yield CounterMetricFamily(
            "visionq_job_processing_seconds",
            "Worker seconds spent on completed jobs, from pick-up to stored result.",
            value=snap.processing_seconds,
        )
        yield _histogram(
            "visionq_model_inference_seconds",
            "Seconds spent in model prediction.",
            snap.inference,
            "",
            INFERENCE_BUCKETS,
        )
        yield _histogram(
            "visionq_inference_batch_size", "Images per call of the model.", snap.inference, "batch:", BATCH_BUCKETS
        )
        yield _histogram(
            "visionq_prediction_confidence",
            "Top-1 confidence of each completed job, by the model that served it.",
            snap.inference,
            "confidence:",
            CONFIDENCE_BUCKETS,
        )
        loads = GaugeMetricFamily(
            "visionq_model_load_seconds",
            "Seconds a live worker took to load a model.",
            labels=["model_version", "worker"],
        )
        for (model_ref, worker), seconds in sorted(snap.load_seconds.items()):
            loads.add_metric([model_ref, worker], seconds)
        yield loads
        breakers = GaugeMetricFamily(
            "visionq_model_breaker_state",
            "Circuit breaker per model: 0 closed, 1 half-open, 2 open.",
            labels=["model_version"],
        )
        for model_ref, gauge in sorted(snap.breakers.items()):
            breakers.add_metric([model_ref], gauge)
        yield breakers
        yield GaugeMetricFamily("visionq_workers", "Live worker processes (fresh heartbeats).", value=snap.workers)
        yield GaugeMetricFamily(
            "visionq_archive_backlog", "Job changes not yet written to the archive.", value=snap.archive_backlog
        )
        yield GaugeMetricFamily(
            "visionq_dlq_size", "Jobs in the dead-letter queue (used up their attempts).", value=snap.dead_letters
        )
        yield GaugeMetricFamily(
            "visionq_broker_outbox",
            "Jobs made over 5 s ago whose message is not yet in the broker apart from job state (0 on one Redis).",
            value=snap.unpublished,
        )


class Metrics:
    """The registry of one API process.

    >>> metrics = Metrics()
    >>> metrics.http_requests.labels("GET", "/health", "200").inc()
    >>> b"visionq_http_requests_total" in metrics.render(ClusterSnapshot())
    True
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_duration = Histogram(
            "visionq_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "visionq_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        # WebSockets apart from the requests: a socket's duration is its life, which the requests' histogram (and
        # the dashboards' latency percentiles over it) must not mix with answers.
        self.websockets_open = Gauge(
            "visionq_websockets_open", "WebSockets this API process holds open.", ["route"], registry=self.registry
        )
        self.websockets = Counter(
            "visionq_websockets",
            "WebSockets ended: the handshake's status (101 accepted, 403 refused) and the first close code.",
            ["route", "status", "close_code"],
            registry=self.registry,
        )
        self._cluster = _ClusterCollector()
        self.registry.register(self._cluster)

    def render(self, snapshot: ClusterSnapshot) -> bytes:
        self._cluster.snapshot = snapshot
        return generate_latest(self.registry)


def _histogram(
    name: str, documentation: str, stats: dict[str, dict[str, float]], prefix: str, bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    """A histogram per model from the counts the workers keep in Redis (see `JobTracker.record_inference`):
    `<prefix>in:<bound>` per bucket, which are summed here into Prometheus's cumulative `le` buckets, and
    `<prefix>count`, `<prefix>sum`."""
    family = HistogramMetricFamily(name, documentation, labels=["model_version"])
    for model_ref, fields in sorted(stats.items()):
        total, buckets = 0.0, []
        for bound in bounds:
            total += fields.get(f"{prefix}in:{bound}", 0.0)
            buckets.append((str(bound), total))
        buckets.append(("+Inf", fields.get(f"{prefix}count", 0.0)))
        family.add_metric([model_ref], buckets, sum_value=fields.get(f"{prefix}sum", 0.0))
    return family
