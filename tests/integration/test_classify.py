"""Submit → stages → result through HTTP, on a real worker with the real models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from factories import cat_variants
from integration.conftest import RedisFactory
from integration.stack import FAST_RECOVERY, ApiServer, submit, wait_terminal
from tests_support import CAT_CLASSES, EGYPTIAN_CAT
from visionq.inference.quantize import int8_unsupported
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]


@pytest.fixture(scope="module")
def idle_api(new_redis: RedisFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """An API whose queue no worker serves: its jobs stay pending, whatever the machine's speed."""
    settings = Settings(
        **FAST_RECOVERY,
        redis_url=new_redis("classify-idle"),
        queue="visionq-test-classify-idle",
        data_dir=tmp_path_factory.mktemp("classify-idle"),
    )
    server = ApiServer(settings)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


def classify(api: httpx.Client, image: bytes, **fields: Any) -> dict[str, Any]:
    accepted = submit(api, image, **fields)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    result = api.get(f"/result/{job_id}")
    assert result.status_code == 200
    body: dict[str, Any] = result.json()
    return body


@pytest.mark.parametrize("model", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_each_builtin_model_sees_the_cat(api: httpx.Client, model: str) -> None:
    result = classify(api, CAT_JPEG, model_version=model)

    assert result["model_version"] == f"{model}@1"
    assert (result["predictions"][0]["class_id"], result["predictions"][0]["class_name"]) == (
        EGYPTIAN_CAT,
        "Egyptian cat",
    )
    assert result["confidence_score"] == result["predictions"][0]["confidence"]


def test_the_int8_build_sees_the_cat_where_the_cpu_runs_it_and_is_refused_with_why_elsewhere(
    api: httpx.Client,
) -> None:
    # The shared worker warms it; on a CPU without VNNI that fails, and the worker serves the others.
    why = int8_unsupported()
    if why is None:
        result = classify(api, CAT_JPEG, model_version="efficientnet-lite0-int8")
        assert result["model_version"] == "efficientnet-lite0-int8@1"
        assert result["predictions"][0]["class_id"] in CAT_CLASSES
        return
    job_id = submit(api, CAT_JPEG, model_version="efficientnet-lite0-int8").json()["job_id"]
    failed = wait_terminal(api, job_id)
    assert (failed["status"], failed["error"]["code"]) == ("failed", "model_unavailable")
    assert why in failed["error"]["message"]


@pytest.mark.parametrize("variant", sorted(cat_variants()))
def test_every_supported_encoding_of_the_cat_is_a_cat(api: httpx.Client, variant: str) -> None:
    result = classify(api, cat_variants()[variant])

    assert result["predictions"][0]["class_id"] == EGYPTIAN_CAT, result["predictions"]
    assert (result["metadata"]["image"]["width"], result["metadata"]["image"]["height"]) == (451, 300)


def test_accepted_answer_matches_the_contract(api: httpx.Client) -> None:
    response = submit(api, CAT_JPEG, filename="cat.jpg", priority="high")

    body = response.json()
    assert response.status_code == 202
    assert response.headers["location"] == f"/status/{body['job_id']}"
    assert body["status"] == "pending"
    assert body["priority"] == "high"
    assert body["model_version"] == "efficientnet-lite0@1"
    assert body["links"] == {
        "status": f"/status/{body['job_id']}",
        "result": f"/result/{body['job_id']}",
        "websocket": f"/ws/{body['job_id']}",
    }
    assert body["created_at"].endswith("Z")


def test_result_has_top_k_predictions_sorted_with_timings(api: httpx.Client) -> None:
    result = classify(api, CAT_JPEG, top_k=7)

    confidences = [p["confidence"] for p in result["predictions"]]
    assert len(confidences) == 7
    assert confidences == sorted(confidences, reverse=True)
    assert result["predictions"][0]["class_name"] == "Egyptian cat"
    assert 0 < result["processing_time"] <= result["metadata"]["total_time"]
    assert result["metadata"]["queue_time"] >= 0
    assert result["metadata"]["image"]["format"] == "JPEG"
    assert result["completed_at"] >= result["created_at"]


def test_status_reports_the_finished_job(api: httpx.Client) -> None:
    job_id = submit(api, CAT_JPEG).json()["job_id"]
    wait_terminal(api, job_id)

    status = api.get(f"/status/{job_id}").json()
    assert status["status"] == "completed"
    assert status["stage"] == "completed"
    assert status["progress"] == 100
    assert status["attempts"] == 1
    assert status["worker_id"]
    assert "error" not in status


def test_result_of_an_unfinished_job_is_202_with_its_status(idle_api: httpx.Client) -> None:
    job_id = submit(idle_api, CAT_JPEG, priority="low").json()["job_id"]

    response = idle_api.get(f"/result/{job_id}")

    assert response.status_code == 202
    status = response.json()
    assert (status["job_id"], status["status"], status["stage"], status["progress"]) == (job_id, "pending", "queued", 0)
    assert "predictions" not in status


def test_estimated_completion_follows_from_measured_processing_time(api: httpx.Client) -> None:
    wait_terminal(api, submit(api, CAT_JPEG).json()["job_id"])

    accepted = submit(api, CAT_JPEG).json()
    assert accepted["estimated_completion"] is not None
    assert accepted["estimated_completion"] > accepted["created_at"]
    wait_terminal(api, accepted["job_id"])
