"""Dynamic batching on a real `threads` worker: a burst of queued jobs is classified in shared calls of the
model, each job keeping its own stages and result, and a job that comes alone is run at once, unbatched.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from factories import cat_variants, chelsea, encode
from integration.conftest import StackFactory
from integration.stack import ApiServer, WorkerProcess, submit, wait_terminal
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]
#: Decoded in full (no draft mode for PNG), so the burst's jobs are still decoding when the first is done,
#: even on a busy machine where the worker's threads start them some milliseconds apart.
CAT_PNG = encode(chelsea().resize((1800, 1200)), "PNG")
MAX_BATCH = 4
BURST = 12
MODEL = "efficientnet-lite0@1"


@pytest.fixture(scope="module")
def batching(start_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    # The longest wait allowed: a batch waits for every job of the burst still decoding, and a lone job
    # that waited at all would show it.
    return start_stack(
        "batching", worker_pool="threads", worker_concurrency=8, batch_max_size=MAX_BATCH, batch_max_wait=1.0
    )


def batch_calls(api: httpx.Client) -> tuple[float, float]:
    """The cluster's (calls of the model, images in them) for the default model, from /metrics."""
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        for sample in family.samples
        if sample.name.startswith("visionq_inference_batch_size") and sample.labels.get("model_version") == MODEL
    }
    return values.get("visionq_inference_batch_size_count", 0.0), values.get("visionq_inference_batch_size_sum", 0.0)


def test_a_burst_is_classified_in_shared_calls_of_the_model(
    batching: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    _, worker, server = batching
    with httpx.Client(base_url=server.url, timeout=30) as api:
        calls_before, images_before = batch_calls(api)
        worker.stop()  # the burst queues up, then reaches the worker's threads at once
        job_ids = [submit(api, CAT_PNG, top_k=3).json()["job_id"] for _ in range(BURST)]
        worker.start()
        finals = [wait_terminal(api, job_id) for job_id in job_ids]
        results = [api.get(f"/result/{job_id}").json() for job_id in job_ids]
        calls_after, images_after = batch_calls(api)

    assert [final["status"] for final in finals] == ["completed"] * BURST
    assert [result["job_id"] for result in results] == job_ids
    assert all(result["predictions"][0]["class_id"] == 285 for result in results)
    assert all(len(result["predictions"]) == 3 for result in results), "each job keeps its own options"
    sizes = [result["metadata"]["batch_size"] for result in results]
    assert max(sizes) > 1, f"no job shared a call: {sizes}"
    assert max(sizes) <= MAX_BATCH
    assert images_after - images_before == BURST
    assert calls_after - calls_before < BURST, "fewer calls of the model than jobs"


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
    assert result["predictions"][0]["class_id"] == 285
