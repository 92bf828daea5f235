"""Dynamic batching on a real `threads` worker: jobs that reach the model while it is busy are classified in one
shared call of it, each job keeping its own stages and result, and a job that comes alone is run at once,
unbatched.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from factories import cat_variants, encode
from integration.conftest import StackFactory
from integration.stack import ApiServer, WorkerProcess, submit, wait_for, wait_terminal
from model_factories import STAGES_AS_THEY_BEGIN, Gate, gated_model
from tests_support import CAT_CLASSES
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]
GATED = "gated@1"
#: An image of each class of the gated model, so that each job's answer is its own.
COLOURS = {
    name: encode(Image.new("RGB", (40, 30), rgb), "PNG")
    for name, rgb in (("red", (220, 10, 10)), ("green", (10, 220, 10)), ("blue", (10, 10, 220)))
}
#: The colours of the jobs that make one full batch.
BATCH = ["red", "green", "blue", "green"]
MAX_BATCH = len(BATCH)
#: Seconds a test waits for jobs to reach the model, or to finish once released.
JOB_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Gate]:
    root = tmp_path_factory.mktemp("gated-models")
    return root, gated_model(root)


@pytest.fixture(scope="module")
def batching(start_stack: StackFactory, gated: tuple[Path, Gate]) -> tuple[Settings, WorkerProcess, ApiServer]:
    # The longest wait allowed: a batch waits for every job still preparing its input, and a lone job that
    # waited at all would show it.
    return start_stack(
        "batching",
        model_dir=gated[0],
        worker_pool="threads",
        worker_concurrency=8,
        batch_max_size=MAX_BATCH,
        batch_max_wait=1.0,
        **STAGES_AS_THEY_BEGIN,
    )


def batch_calls(api: httpx.Client, model: str) -> tuple[float, float]:
    """The cluster's (calls of the model, images in them) for `model`, from /metrics."""
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
        if sample.name.startswith("visionq_inference_batch_size") and sample.labels.get("model_version") == model
    }
    return values.get("visionq_inference_batch_size_count", 0.0), values.get("visionq_inference_batch_size_sum", 0.0)


def in_the_model(api: httpx.Client, job_id: str) -> bool:
    status = api.get(f"/status/{job_id}").json()
    return (status["status"], status["stage"]) == ("processing", "inference")


def test_jobs_that_reach_a_busy_model_share_its_next_call(
    batching: tuple[Settings, WorkerProcess, ApiServer], gated: tuple[Path, Gate]
) -> None:
    _, gate = gated
    with httpx.Client(base_url=batching[2].url, timeout=30) as api:
        calls_before, images_before = batch_calls(api, GATED)
        with gate.closed():
            first = submit(api, COLOURS["blue"], model_version="gated", top_k=3).json()["job_id"]
            wait_for(lambda: in_the_model(api, first), JOB_TIMEOUT, "the first job to hold the model")
            # The model is busy with the first job's call: these wait for the next one, together.
            job_ids = [submit(api, COLOURS[c], model_version="gated", top_k=2).json()["job_id"] for c in BATCH]
            wait_for(
                lambda: all(in_the_model(api, job_id) for job_id in job_ids), JOB_TIMEOUT, "the others at the model"
            )
        finals = [wait_terminal(api, job_id, timeout=JOB_TIMEOUT) for job_id in [first, *job_ids]]
        results = [api.get(f"/result/{job_id}").json() for job_id in [first, *job_ids]]
        calls_after, images_after = batch_calls(api, GATED)

    assert [final["status"] for final in finals] == ["completed"] * (1 + MAX_BATCH)
    assert [result["job_id"] for result in results] == [first, *job_ids]
    assert [result["metadata"]["batch_size"] for result in results] == [1] + [MAX_BATCH] * MAX_BATCH
    assert [result["predictions"][0]["class_name"] for result in results] == ["blue", *BATCH], "its own answer"
    assert [len(result["predictions"]) for result in results] == [3] + [2] * MAX_BATCH, "its own options"
    assert (calls_after - calls_before, images_after - images_before) == (2, 1 + MAX_BATCH)


def test_a_lone_job_is_run_at_once_without_waiting_for_a_batch(
    batching: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    with httpx.Client(base_url=batching[2].url, timeout=30) as api:
        job_id = submit(api, CAT_JPEG).json()["job_id"]
        final = wait_terminal(api, job_id)
        result = api.get(f"/result/{job_id}").json()

    assert final["status"] == "completed"
    assert result["metadata"]["batch_size"] == 1
    assert result["metadata"]["batch_wait"] == 0, "a job with no other on its way never waits"
    assert result["predictions"][0]["class_id"] in CAT_CLASSES
