"""A user's model in VISIONQ_MODEL_DIR served by the whole stack, and a model that cannot load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from factories import encode
from integration.conftest import StackFactory
from integration.stack import submit, wait_terminal
from model_factories import tiny_model_dir


@pytest.fixture(scope="module")
def user_api(start_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    model_dir: Path = tiny_model_dir(tmp_path_factory.mktemp("models"))
    _, _, server = start_stack("user-models", model_dir=model_dir, warm_models=["tiny"], max_attempts=3)
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
