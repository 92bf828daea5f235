"""Following jobs: the WebSocket stream, /models, /health/ready and /metrics with real figures."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from factories import cat_variants
from integration.stack import ApiServer, WorkerProcess, submit, wait_terminal
from visionq.inference.quantize import int8_unsupported
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]
Stack = tuple[Settings, WorkerProcess, ApiServer]


def ws_url(stack: Stack, job_id: str) -> str:
    return f"ws://127.0.0.1:{stack[2].port}/ws/{job_id}"


def test_websocket_streams_progress_then_the_result_then_closes(api: httpx.Client, stack: Stack) -> None:
    job_id = submit(api, CAT_JPEG, model_version="efficientnet-lite2").json()["job_id"]
    messages: list[dict[str, Any]] = []
    with connect(ws_url(stack, job_id), open_timeout=10) as ws:
        while True:
            try:
                messages.append(json.loads(ws.recv(timeout=30)))
            except ConnectionClosed:
                break
        close_code = ws.close_code

    assert close_code == 1000
    statuses, result = messages[:-1], messages[-1]
    progress = [m["progress"] for m in statuses]
    assert progress == sorted(progress), "progress went down"
    assert statuses[-1]["status"] == "completed"
    assert statuses[-1]["progress"] == 100
    assert result["job_id"] == job_id
    assert result["predictions"]
    assert all("predictions" not in m for m in statuses)


def test_websocket_of_a_finished_job_sends_status_and_result(api: httpx.Client, stack: Stack) -> None:
    job_id = submit(api, CAT_JPEG).json()["job_id"]
    wait_terminal(api, job_id)
    with connect(ws_url(stack, job_id), open_timeout=10) as ws:
        first, second = json.loads(ws.recv(timeout=10)), json.loads(ws.recv(timeout=10))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000
    assert first["status"] == "completed"
    assert second["predictions"][0]["class_id"] in {281, 282, 285}


def test_websocket_for_an_unknown_job_closes_with_4404(stack: Stack) -> None:
    with connect(ws_url(stack, "unknown"), open_timeout=10) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4404


def test_models_lists_the_catalog_with_loaded_state(api: httpx.Client) -> None:
    models = {m["name"]: m for m in api.get("/models").json()}

    assert set(models) >= {"efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"}
    lite0 = models["efficientnet-lite0"]
    assert lite0["version"] == 1
    assert "latest" in lite0["aliases"]
    assert (lite0["input_size"], lite0["num_classes"], lite0["runtime"]) == (224, 1000, "onnx")
    builtins = [models[f"efficientnet-lite{n}"] for n in range(3)]
    assert all(m["loaded"] for m in builtins), "the shared worker warms every exact built-in"
    assert all(m["agreement"] >= 0.99 for m in builtins), "each export was checked against PyTorch"
    assert {m["precision"] for m in builtins} == {"fp32"}
    int8 = models["efficientnet-lite0-int8"]
    assert "latest" not in int8["aliases"]
    if int8_unsupported() is None:
        assert (int8["precision"], int8["runtime"], int8["loaded"]) == ("int8", "onnx", True)
        # How often it agrees with the exact model on the check set: all of it, on some CPUs.
        assert 0.8 <= int8["agreement"] <= 1.0, "the int8 build lists how often it agrees with the exact model"
    else:  # refused on this CPU: listed, not loaded, its breaker open
        assert (int8["precision"], int8["loaded"], int8["breaker"]) == ("int8", False, "open")


def test_readiness_is_ok_with_redis_a_worker_and_the_default_model(api: httpx.Client) -> None:
    response = api.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["workers"] >= 1
    assert set(body["checks"]) == {"redis", "workers", "models", "database"}


def samples(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = api.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_real_jobs_and_requests(api: httpx.Client) -> None:
    before = samples(api)
    job_id = submit(api, CAT_JPEG).json()["job_id"]
    wait_terminal(api, job_id)
    after = samples(api)

    completed = ("visionq_jobs_total", (("status", "completed"),))
    inferences = ("visionq_model_inference_seconds_count", (("model_version", "efficientnet-lite0@1"),))
    posts = ("visionq_http_requests_total", (("method", "POST"), ("route", "/classify"), ("status", "202")))
    assert after[completed] >= before.get(completed, 0) + 1
    assert after[inferences] >= before.get(inferences, 0) + 1
    batches = ("visionq_inference_batch_size_count", (("model_version", "efficientnet-lite0@1"),))
    assert after[batches] >= before.get(batches, 0) + 1, "worker-side: one call of the model"
    loads = [key for key in after if key[0] == "visionq_model_load_seconds"]
    assert any(dict(labels)["model_version"] == "efficientnet-lite0@1" for _, labels in loads), "worker-side load time"
    assert all(after[key] > 0 for key in loads)
    assert after[posts] >= before.get(posts, 0) + 1
    status_route = ("method", "GET"), ("route", "/status/{job_id}"), ("status", "200")
    assert ("visionq_http_request_duration_seconds_count", status_route) in after
    for priority in ("low", "normal", "high", "urgent"):
        assert ("visionq_queue_depth", (("priority", priority),)) in after
    assert ("visionq_active_jobs", ()) in after


def test_metrics_histogram_each_completed_jobs_top1_confidence_per_model(api: httpx.Client) -> None:
    model = "efficientnet-lite1@1"
    before = samples(api)
    job_id = submit(api, CAT_JPEG, model_version=model).json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    confidence = api.get(f"/result/{job_id}").json()["confidence_score"]
    after = samples(api)

    def bucket(le: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return "visionq_prediction_confidence_bucket", (("le", le), ("model_version", model))

    count = ("visionq_prediction_confidence_count", (("model_version", model),))
    assert after[count] >= before.get(count, 0) + 1
    assert after[bucket("+Inf")] == after[count]
    bounds = sorted(float(dict(labels)["le"]) for name, labels in after if name == bucket("1.0")[0])
    assert bounds[-1] == float("inf")
    least = next(f"{bound}" for bound in bounds if confidence <= bound)
    assert after[bucket(least)] >= before.get(bucket(least), 0) + 1, f"{confidence} counts in le={least}"
    total = ("visionq_prediction_confidence_sum", (("model_version", model),))
    assert after[total] >= before.get(total, 0) + confidence - 1e-9
