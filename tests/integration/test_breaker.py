"""The circuit breaker and the fallback model, on a real stack: a model whose weights cannot load (at the
worker's start, or later) opens its breaker; jobs that allow it are served by the fallback, the others fail
at once; once the weights are back, the breaker's probe closes it.

The models are this module's own (`flaky`, served by `tiny` while it is down), so no other test shares
their breakers in Redis.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from factories import encode
from integration.conftest import StackFactory
from integration.stack import submit, wait_for, wait_terminal
from model_factories import SIZE, TinyColourNet, manifest, model_folder
from visionq.inference.onnx_backend import export_module_onnx

RED = encode(Image.new("RGB", (40, 30), (220, 10, 10)), "PNG")
#: Seconds an open breaker waits before its probe, on this stack.
COOLDOWN = 1.0


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("breaker-models")
    export_module_onnx(
        TinyColourNet(probabilities=True),
        SIZE,
        model_folder(root, "steady", manifest("steady", 1, "onnx", "m.onnx")) / "m.onnx",
    )
    flaky = model_folder(root, "flaky", manifest("flaky", 1, "onnx", "m.onnx"))
    (flaky / "m.onnx").write_bytes(b"weights that cannot load")
    return root


@pytest.fixture(scope="module")
def api(start_stack: StackFactory, models: Path) -> Iterator[httpx.Client]:
    _, _, server = start_stack(
        "breaker",
        model_dir=models,
        warm_models=["steady", "flaky"],  # flaky cannot load: the worker starts all the same
        fallback_model="steady",
        breaker_cooldown=COOLDOWN,
        max_attempts=3,
        worker_pool="solo",
    )
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def model(api: httpx.Client, name: str) -> dict[str, Any]:
    return next(m for m in api.get("/models").json() if m["name"] == name)


def test_a_model_that_cannot_load_is_replaced_by_the_fallback_then_restored(api: httpx.Client, models: Path) -> None:
    # The worker tried to warm it at start, and serves the other models with its breaker open.
    assert (model(api, "flaky")["loaded"], model(api, "flaky")["breaker"]) == (False, "open")
    assert model(api, "steady")["loaded"]

    job_id = submit(api, RED, model_version="flaky").json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"

    result = api.get(f"/result/{job_id}").json()
    assert result["model_version"] == "steady@1"
    assert result["metadata"]["served_by"] == "steady@1"
    assert "flaky@1 is unavailable" in result["metadata"]["degraded_reason"]
    assert "failed to load" in result["metadata"]["degraded_reason"]
    assert result["predictions"][0]["class_name"] == "red"
    assert model(api, "flaky")["breaker"] == "open"
    metrics = api.get("/metrics").text
    assert 'visionq_model_breaker_state{model_version="flaky@1"} 2.0' in metrics
    assert 'visionq_prediction_confidence_count{model_version="steady@1"}' in metrics, "counted for who served it"
    assert 'visionq_prediction_confidence_count{model_version="flaky@1"}' not in metrics
    card = api.get("/models/flaky@1").json()
    assert (card["breaker"], card["loaded"]) == ("open", False)
    assert "failed to load" in card["breaker_reason"]

    strict = submit(api, RED, model_version="flaky", fallback="false").json()["job_id"]
    failed = wait_terminal(api, strict)
    assert (failed["status"], failed["error"]["code"]) == ("failed", "model_unavailable")
    # 1, or 2 when the breaker's cool-down had passed by then (a slow machine): the job was its probe, failed to load
    # the model, was retried and found the breaker open again. Never more: it is not retried past an open breaker.
    assert failed["attempts"] in (1, 2)

    shutil.copyfile(models / "steady" / "m.onnx", models / "flaky" / "m.onnx")  # the weights are back

    def probe_succeeds() -> bool:
        probe = submit(api, RED, model_version="flaky").json()["job_id"]
        wait_terminal(api, probe)
        return bool(api.get(f"/result/{probe}").json()["metadata"]["served_by"] == "flaky@1")

    wait_for(probe_succeeds, 30, "a probe to reach the mended model", interval=COOLDOWN)
    assert model(api, "flaky")["breaker"] == "closed"
    assert 'visionq_model_breaker_state{model_version="flaky@1"} 0.0' in api.get("/metrics").text
    direct = submit(api, RED, model_version="flaky").json()["job_id"]
    wait_terminal(api, direct)
    served = api.get(f"/result/{direct}").json()["metadata"]
    assert (served["served_by"], served["degraded_reason"]) == ("flaky@1", None)
