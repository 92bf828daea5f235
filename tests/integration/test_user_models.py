"""A user's model in VISIONQ_MODEL_DIR served by the whole stack, and a model that cannot load."""

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
from model_factories import manifest, model_folder, tiny_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny@1, broken@1, and `mendable@1`: broken too, until the test that mends it does, so that `broken` stays
    broken whatever order the tests run in."""
    root = tiny_model_dir(tmp_path_factory.mktemp("models"))
    mendable = model_folder(root, "mendable", manifest("mendable", 1, "onnx", "model.onnx"))
    shutil.copyfile(root / "broken" / "model.onnx", mendable / "model.onnx")
    return root


def dead_letter(api: httpx.Client, model: str) -> str:
    """A job of `model` (one that cannot load) that used up its attempts: its id."""
    red = encode(Image.new("RGB", (8, 8), (200, 10, 10)), "PNG")
    job_id: str = submit(api, red, model_version=model).json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "failed"
    return job_id


@pytest.fixture(scope="module")
def user_api(start_stack: StackFactory, model_dir: Path) -> Iterator[httpx.Client]:
    # Breakers off: the broken model's jobs use up their attempts and reach the dead-letter queue, which is
    # what these tests are about. test_breaker.py tests the breakers.
    _, _, server = start_stack("user-models", model_dir=model_dir, warm_models=["tiny"], max_attempts=3, breakers=False)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_user_model_is_listed_and_serves_its_own_labels(user_api: httpx.Client) -> None:
    models = {f"{m['name']}@{m['version']}": m for m in user_api.get("/models").json()}
    assert models["tiny@1"]["num_classes"] == 3
    assert models["tiny@1"]["runtime"] == "onnx"
    assert models["tiny@1"]["loaded"]

    green = encode(Image.new("RGB", (40, 30), (10, 200, 20)), "PNG")
    job_id = submit(user_api, green, model_version="tiny", top_k=3).json()["job_id"]
    assert wait_terminal(user_api, job_id)["status"] == "completed"
    result = user_api.get(f"/result/{job_id}").json()

    assert result["model_version"] == "tiny@1"
    assert [p["class_name"] for p in result["predictions"]][0] == "green"
    assert {p["class_name"] for p in result["predictions"]} == {"red", "green", "blue"}


def test_model_that_cannot_load_is_retried_then_fails_with_a_code(user_api: httpx.Client) -> None:
    job_id = submit(user_api, encode(Image.new("RGB", (8, 8)), "PNG"), model_version="broken").json()["job_id"]

    final = wait_terminal(user_api, job_id)
    assert final["status"] == "failed"
    assert final["attempts"] == 3
    assert final["error"]["code"] == "internal_error"
    result = user_api.get(f"/result/{job_id}")
    assert result.status_code == 200
    assert result.json()["error"]["code"] == "internal_error"


def test_a_job_that_used_up_its_attempts_is_dead_lettered_and_runs_again_once_mended(
    user_api: httpx.Client, model_dir: Path
) -> None:
    job_id = dead_letter(user_api, "mendable")

    letters = {entry["job_id"]: entry for entry in user_api.get("/admin/dlq").json()}
    assert letters[job_id]["attempts"] == 3
    assert letters[job_id]["error"]["code"] == "internal_error"
    assert letters[job_id]["model_version"] == "mendable@1"
    assert float(_metric(user_api.get("/metrics").text, "visionq_dlq_size")) >= 1

    shutil.copyfile(model_dir / "tiny" / "model.onnx", model_dir / "mendable" / "model.onnx")  # the fault mended
    retried = user_api.post(f"/admin/dlq/{job_id}/retry")
    assert retried.status_code == 202
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)

    final = wait_terminal(user_api, job_id)
    assert (final["status"], final["attempts"]) == ("completed", 1)
    assert user_api.get(f"/result/{job_id}").json()["predictions"][0]["class_name"] == "red"
    assert job_id not in {entry["job_id"] for entry in user_api.get("/admin/dlq").json()}
    assert user_api.post(f"/admin/dlq/{job_id}/retry").status_code == 404, "only dead letters are retried"
    actions = [(entry["action"], entry["target"]) for entry in user_api.get("/admin/audit").json()]
    assert ("dlq.retry", job_id) in actions


def test_a_job_refused_for_its_input_is_not_dead_lettered(user_api: httpx.Client) -> None:
    """Only faults of the moment that outlast every attempt land in the DLQ; a request cancelled or refused
    for what it is does not."""
    job_id = submit(user_api, encode(Image.new("RGB", (8, 8)), "PNG"), model_version="tiny").json()["job_id"]
    user_api.delete(f"/jobs/{job_id}")
    wait_terminal(user_api, job_id)
    assert job_id not in {entry["job_id"] for entry in user_api.get("/admin/dlq").json()}


def test_purging_the_dead_letter_queue_empties_it(user_api: httpx.Client) -> None:
    job_id = dead_letter(user_api, "broken")
    assert job_id in {entry["job_id"] for entry in user_api.get("/admin/dlq").json()}

    purged = user_api.delete("/admin/dlq")
    assert purged.status_code == 200
    assert purged.json()["purged"] >= 1
    assert user_api.get("/admin/dlq").json() == []
    assert user_api.post(f"/admin/dlq/{job_id}/retry").status_code == 404, "purged letters cannot be retried"
    assert user_api.delete("/admin/dlq/no-such-job").status_code == 404


def _metric(text: str, name: str) -> str:
    return next(line.split()[1] for line in text.splitlines() if line.startswith(f"{name} "))


def test_an_admin_points_latest_at_another_model_and_back(user_api: httpx.Client) -> None:
    green = encode(Image.new("RGB", (40, 30), (10, 200, 20)), "PNG")
    try:
        assert user_api.put("/admin/models/latest", json={"model": "tiny"}).json() == {"latest": "tiny@1"}
        wait_for(lambda: submit(user_api, green).json()["model_version"] == "tiny@1", 5, "latest to move")
        aliases = {f"{m['name']}@{m['version']}": m["aliases"] for m in user_api.get("/models").json()}
        assert "latest" in aliases["tiny@1"]
        assert "latest" not in aliases["efficientnet-lite0@1"]
    finally:
        back = user_api.delete("/admin/models/latest")
    assert back.json() == {"latest": "efficientnet-lite0@1"}
    wait_for(lambda: submit(user_api, green).json()["model_version"] == "efficientnet-lite0@1", 5, "latest back")
    actions = [entry["action"] for entry in user_api.get("/admin/audit").json()]
    assert {"model.set_latest", "model.reset_latest"} <= set(actions)
    assert user_api.put("/admin/models/latest", json={"model": "resnet"}).json()["code"] == "model_not_found"


def test_an_admin_unloads_and_loads_a_model_on_every_worker(user_api: httpx.Client) -> None:
    def tiny() -> dict[str, Any]:
        return next(m for m in user_api.get("/admin/models").json() if m["name"] == "tiny")

    assert tiny()["workers_loaded"] >= 1, "warmed at start"
    assert user_api.post("/admin/models/tiny/unload").status_code == 202
    wait_for(lambda: tiny()["workers_loaded"] == 0, 15, "the workers to drop tiny")
    assert not tiny()["keep_loaded"]

    assert user_api.post("/admin/models/tiny@1/load").status_code == 202
    wait_for(lambda: tiny()["workers_loaded"] >= 1, 15, "the workers to load tiny")
    assert tiny()["keep_loaded"]
    assert user_api.post("/admin/models/nope/load").json()["code"] == "model_not_found"
    actions = [entry["action"] for entry in user_api.get("/admin/audit").json()]
    assert {"model.load", "model.unload"} <= set(actions)
