"""The result cache on a real stack: an identical image is answered from the first job's result with no inference
(accepted as pending, complete at the first look), two identical submits in flight run the model once, a request
(or a batch) can opt out, and a leader that fails (here: cancelled) leaves its follower to run on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from factories import chelsea, encode
from integration.conftest import StackFactory
from integration.stack import ApiServer, WorkerProcess, inference_count, submit, wait_for, wait_terminal
from visionq.settings import Settings

MODEL = "efficientnet-lite0@1"


def _cat(quality: int) -> bytes:
    """The cat as its own JPEG: each test sends bytes no other test has cached."""
    return encode(chelsea(), "JPEG", quality=quality)


@pytest.fixture(scope="module")
def cache_stack(start_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    return start_stack("result-cache", result_cache=True)


@pytest.fixture
def api(cache_stack: tuple[Settings, WorkerProcess, ApiServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cache_stack[2].url, timeout=30) as client:
        yield client


def _finished(api: httpx.Client, answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    result: dict[str, Any] = api.get(f"/result/{job_id}").json()
    return result


def _lookups(api: httpx.Client, outcome: str) -> float:
    prefix = f'visionq_result_cache_lookups_total{{outcome="{outcome}"}} '
    return float(next(line for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)).split()[-1])


def test_an_identical_image_is_answered_from_the_cache_without_inference(api: httpx.Client) -> None:
    image = _cat(91)
    first = _finished(api, submit(api, image))
    inferences, hits = inference_count(api, MODEL), _lookups(api, "hit")
    again = submit(api, image)
    repeat = _finished(api, again)
    inferences_after_hit = inference_count(api, MODEL)
    other_options = _finished(api, submit(api, image, top_k=3))
    fresh = _finished(
        api, api.post("/classify", files={"file": ("c.jpg", image)}, headers={"Cache-Control": "no-cache"})
    )

    assert first["metadata"]["cache"] == "miss"
    assert again.json()["status"] == "pending", "a 202 says pending (API.md), even for a hit"
    assert repeat["metadata"]["cache"] == "hit"
    assert repeat["job_id"] != first["job_id"]
    assert repeat["predictions"] == first["predictions"]
    assert repeat["metadata"]["receipt"] == first["metadata"]["receipt"]
    assert inferences_after_hit == inferences, "no inference ran for the hit"
    assert _lookups(api, "hit") == hits + 1
    assert other_options["metadata"]["cache"] == "miss", "top_k is part of the request"
    assert len(other_options["predictions"]) == 3
    assert fresh["metadata"]["cache"] == "miss", "Cache-Control: no-cache runs the model"
    assert inference_count(api, MODEL) == inferences + 2


def test_a_hit_is_accepted_as_pending_and_is_complete_at_the_first_look(api: httpx.Client) -> None:
    image = _cat(94)
    _finished(api, submit(api, image))
    single = submit(api, image)
    status = api.get(f"/status/{single.json()['job_id']}").json()
    result = api.get(f"/result/{single.json()['job_id']}")
    several = api.post("/classify", files=[("file", ("a.jpg", image)), ("file", ("b.jpg", image))])
    waited = api.post("/classify", files={"file": ("c.jpg", image)}, headers={"Prefer": "wait=30"})

    assert single.status_code == 202
    assert single.json()["status"] == "pending"
    assert single.json()["estimated_completion"] is not None
    assert (status["status"], status["stage"], status["progress"]) == ("completed", "completed", 100)
    assert (result.status_code, result.json()["status"]) == (200, "completed")
    assert result.json()["metadata"]["cache"] == "hit"
    assert several.status_code == 202
    assert [job["status"] for job in several.json()["jobs"]] == ["pending", "pending"]
    for job in several.json()["jobs"]:
        assert api.get(f"/result/{job['job_id']}").json()["metadata"]["cache"] == "hit"
    assert waited.status_code == 200, "Prefer: wait on a hit answers with the result at once"
    assert (waited.json()["status"], waited.json()["metadata"]["cache"]) == ("completed", "hit")


def _batch_results(api: httpx.Client, image: bytes, **headers: str) -> list[dict[str, Any]]:
    """`image` twice as a batch; once the batch ends, its items' results."""
    answer = api.post("/batches", files=[("file", ("a.jpg", image)), ("file", ("b.jpg", image))], headers=headers)
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    wait_for(lambda: api.get(batch["links"]["status"]).json()["status"] == "completed", 60, "the batch to end")
    lines = [json.loads(line) for line in api.get(batch["links"]["results"]).text.splitlines()]
    return [api.get(f"/result/{line['job_id']}").json() for line in lines]


def test_a_batch_uses_the_cache_unless_cache_control_says_no_cache(api: httpx.Client) -> None:
    image = _cat(95)
    _finished(api, submit(api, image))
    inferences = inference_count(api, MODEL)
    cached = _batch_results(api, image)
    inferences_after_hits = inference_count(api, MODEL)
    fresh = _batch_results(api, image, **{"Cache-Control": "no-cache"})

    assert [result["metadata"]["cache"] for result in cached] == ["hit", "hit"]
    assert inferences_after_hits == inferences
    assert [result["metadata"]["cache"] for result in fresh] == ["miss", "miss"], "no-cache runs the model"
    assert inference_count(api, MODEL) == inferences + 2


def test_identical_submits_in_flight_run_once_and_a_cancelled_leader_leaves_its_follower_to_run(
    cache_stack: tuple[Settings, WorkerProcess, ApiServer], api: httpx.Client
) -> None:
    # Sent to a queue no worker serves yet, so that each pair waits together; then one worker runs them all.
    held = cache_stack[0].model_copy(update={"queue": f"{cache_stack[0].queue}-held"})
    server = ApiServer(held)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            together, alone = _cat(92), _cat(93)
            leader, follower = submit(client, together), submit(client, together)
            cancelled, orphan = (submit(client, alone).json()["job_id"] for _ in range(2))
            refused = client.delete(f"/jobs/{cancelled}")
            inferences = inference_count(api, MODEL)
            worker = WorkerProcess(held)
            worker.start()
            try:
                pair = [_finished(client, answer) for answer in (leader, follower)]
                ran_alone = _finished(client, httpx.Response(202, json={"job_id": orphan}))
                later = _finished(client, submit(client, alone))
            finally:
                worker.stop()
    finally:
        server.stop()

    assert [result["metadata"]["cache"] for result in pair] == ["miss", "hit"], "one ran, the other followed"
    assert pair[0]["predictions"] == pair[1]["predictions"]
    assert refused.status_code == 200
    assert ran_alone["metadata"]["cache"] == "miss", "the follower of a cancelled job ran the model itself"
    assert later["metadata"]["cache"] == "hit", "and its result serves the next identical submit"
    assert inference_count(api, MODEL) == inferences + 2
