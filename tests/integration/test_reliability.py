"""Priorities, a worker killed mid-job, result expiry, cancellation, and Redis going away.

A job is held mid-inference by a gated model (`model_factories.Gated`) for exactly as long as a test needs: the
worker is busy with it while the queue fills behind it, or while the test kills the worker or cancels the job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from factories import cat_variants, encode
from integration.conftest import StackFactory
from integration.stack import ApiServer, inference_count, submit, wait_for, wait_terminal
from model_factories import STAGES_AS_THEY_BEGIN, Gate, gated_model
from ports import free_port
from visionq.jobs import keys
from visionq.settings import Settings
from visionq.wire.states import JobStatus

CAT_JPEG = cat_variants()["jpeg"]
RED = encode(Image.new("RGB", (40, 30), (220, 10, 10)), "PNG")
#: Seconds a test waits for a job it holds to reach the model, or for its jobs to finish once released.
JOB_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Gate]:
    """A model dir with `gated@1`, and its gate."""
    root = tmp_path_factory.mktemp("gated-models")
    return root, gated_model(root)


@pytest.fixture(scope="module")
def held(start_stack: StackFactory, gated: tuple[Path, Gate]) -> Iterator[tuple[httpx.Client, redis.Redis, Gate]]:
    """A prefork worker (one process, a prefetch of one) that can run the gated model: while a job is held in the
    model, the worker takes no other."""
    root, gate = gated
    settings, _, server = start_stack(
        "reliability", model_dir=root, warm_models=["latest", "gated"], **STAGES_AS_THEY_BEGIN
    )
    broker = redis.Redis.from_url(settings.state_url, decode_responses=True)
    with httpx.Client(base_url=server.url, timeout=30) as api, broker:
        yield api, broker, gate


def in_the_model(api: httpx.Client, job_id: str, attempt: int = 1) -> bool:
    """Whether delivery `attempt` of the job has reached its model (where the gated model holds it)."""
    status = api.get(f"/status/{job_id}").json()
    return (status["status"], status["stage"], status["attempts"]) == ("processing", "inference", attempt)


def hold_worker(api: httpx.Client) -> str:
    """Submit a job of the gated model (whose gate is closed) and wait until the worker is busy with it."""
    blocker: str = submit(api, RED, model_version="gated").json()["job_id"]
    wait_for(lambda: in_the_model(api, blocker), JOB_TIMEOUT, "the worker to be busy with the held job")
    return blocker


def completion_order(broker: redis.Redis, job_ids: list[str], release: Callable[[], object]) -> list[str]:
    """The order in which the jobs end once `release()` lets them run: one subscriber hears their final updates in
    the order Redis published them, which is the order the worker finished them in."""
    channels = {keys.events(job_id): job_id for job_id in job_ids}
    listener = broker.pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(*channels)
    for _ in channels:  # one confirmation each, before any of them can end
        confirmed = listener.get_message(timeout=JOB_TIMEOUT)
        assert confirmed is not None, "timed out waiting for a subscription"
        assert confirmed["type"] == "subscribe", confirmed
    release()
    order: list[str] = []

    def all_ended() -> bool:
        message = listener.get_message(timeout=1.0)
        if message and message["type"] == "message" and JobStatus(json.loads(message["data"])["status"]).terminal:
            order.append(channels[message["channel"]])
        return len(order) == len(job_ids)

    wait_for(all_ended, JOB_TIMEOUT, "every job to end", interval=0)
    listener.close()
    return order


def test_an_urgent_job_overtakes_queued_low_ones(held: tuple[httpx.Client, redis.Redis, Gate]) -> None:
    api, broker, gate = held
    with gate.closed():
        blocker = hold_worker(api)
        lows = [submit(api, CAT_JPEG, priority="low").json()["job_id"] for _ in range(4)]
        urgent = submit(api, CAT_JPEG, priority="urgent").json()["job_id"]
        order = completion_order(broker, [blocker, *lows, urgent], release=gate.open)

    # Without priorities it would come last.
    assert order == [blocker, urgent, *lows]


def test_queued_jobs_run_high_before_normal_before_low(held: tuple[httpx.Client, redis.Redis, Gate]) -> None:
    api, broker, gate = held
    with gate.closed():
        blocker = hold_worker(api)
        by_priority = {
            priority: [submit(api, CAT_JPEG, priority=priority).json()["job_id"] for _ in range(3)]
            for priority in ("low", "normal", "high")
        }
        order = completion_order(broker, [blocker, *(j for ids in by_priority.values() for j in ids)], gate.open)

    # Each priority in turn, and within one, first come first served.
    assert order == [blocker, *by_priority["high"], *by_priority["normal"], *by_priority["low"]]


def test_job_survives_its_worker_being_killed_mid_job(start_stack: StackFactory, gated: tuple[Path, Gate]) -> None:
    root, gate = gated
    # The job waits for the worker's restart; on a loaded machine that can take longer than FAST_RECOVERY's
    # stale_job_after, and the sweeper would rightly give it up.
    settings, worker, server = start_stack(
        "kill", model_dir=root, warm_models=["gated"], stale_job_after=120, **STAGES_AS_THEY_BEGIN
    )
    client = redis.Redis.from_url(settings.state_url, decode_responses=True)
    with httpx.Client(base_url=server.url, timeout=30) as api, client, gate.closed():
        job_id = submit(api, RED, model_version="gated").json()["job_id"]
        wait_for(lambda: in_the_model(api, job_id), JOB_TIMEOUT, "the job to be held in the model")
        worker.kill()
        assert api.get(f"/status/{job_id}").json()["status"] == "processing"

        gate.open()
        worker.start()
        final = wait_terminal(api, job_id, timeout=JOB_TIMEOUT)
        result = api.get(f"/result/{job_id}").json()

        assert final["status"] == "completed"
        assert final["attempts"] == 2
        assert result["predictions"][0]["class_name"] == "red"
        assert client.exists(keys.image(job_id)) == 0, "the image is deleted once processed"
        assert not client.sismember(keys.PROCESSING_JOBS, job_id)


def test_after_its_ttl_the_result_leaves_redis_and_is_served_from_the_archive(start_stack: StackFactory) -> None:
    settings, _, server = start_stack("expiry", result_ttl=2)
    redis_client = redis.Redis.from_url(settings.state_url, decode_responses=True)
    with redis_client, httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, CAT_JPEG).json()["job_id"]
        wait_terminal(api, job_id)
        live = api.get(f"/result/{job_id}")
        assert live.status_code == 200
        assert 0 < redis_client.ttl(keys.result(job_id)) <= 2

        wait_for(lambda: not redis_client.exists(keys.status(job_id), keys.result(job_id)), 10, "the TTL", 0.2)
        assert api.get(f"/status/{job_id}").status_code == 404, "API.md: 404 for expired ids"
        archived = api.get(f"/result/{job_id}")
        assert archived.status_code == 200
        assert archived.json() == live.json()


def test_redis_down_gives_503_and_readiness_says_so(make_settings: object) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.5)
    server = ApiServer(settings)
    server.start()
    try:
        # The client's timeout is the guard: an API that waited on the missing Redis would not answer within it.
        with httpx.Client(base_url=server.url, timeout=10) as api:
            response = submit(api, CAT_JPEG)
            assert response.status_code == 503
            assert response.json()["code"] == "broker_unavailable"
            assert int(response.headers["retry-after"]) > 0

            ready = api.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["status"] == "down"
            assert int(ready.headers["retry-after"]) > 0, "API.md: 429 and 503 carry Retry-After"
            assert api.get("/health").status_code == 200
    finally:
        server.stop()


def test_cancelling_a_queued_job_means_it_never_runs(held: tuple[httpx.Client, redis.Redis, Gate]) -> None:
    api, _, gate = held
    lite0_inferences = inference_count(api, "efficientnet-lite0@1")
    with gate.closed():
        blocker = hold_worker(api)
        queued = submit(api, CAT_JPEG, priority="low").json()["job_id"]
        response = api.delete(f"/jobs/{queued}")
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
    # Queued behind the cancelled job: once it has run, the worker has been past the cancelled job's message.
    later = submit(api, CAT_JPEG, priority="low").json()["job_id"]
    assert wait_terminal(api, later, timeout=JOB_TIMEOUT)["status"] == "completed"

    status = api.get(f"/status/{queued}").json()
    assert (status["status"], status["attempts"]) == ("cancelled", 0)
    assert "error" not in status, "API.md: a status body's `error` only when failed"
    assert inference_count(api, "efficientnet-lite0@1") == lite0_inferences + 1, "only the later job reached it"
    result = api.get(f"/result/{queued}")
    assert result.status_code == 200
    assert (result.json()["status"], result.json()["error"]["code"]) == ("cancelled", "cancelled")
    finished = api.delete(f"/jobs/{blocker}")
    assert finished.status_code == 409
    assert finished.json()["code"] == "conflict"
    assert api.delete("/jobs/unknown").status_code == 404


def test_cancelling_a_running_job_stops_it_at_the_next_stage(held: tuple[httpx.Client, redis.Redis, Gate]) -> None:
    api, _, gate = held
    with gate.closed():
        job_id = hold_worker(api)
        assert api.delete(f"/jobs/{job_id}").status_code == 200
    # The gate open, the model answers and the job reaches its next stage, where it stops.

    # A later job still runs: the worker dropped the cancelled one and moved on.
    assert wait_terminal(api, submit(api, CAT_JPEG).json()["job_id"], timeout=JOB_TIMEOUT)["status"] == "completed"
    status = api.get(f"/status/{job_id}").json()
    assert (status["status"], status["stage"]) == ("cancelled", "cancelled")
    assert status["progress"] < 100
    assert api.get(f"/result/{job_id}").json()["status"] == "cancelled"
