"""Backpressure on a real stack: above its bound on queued jobs or on Redis memory, `POST /classify` answers
503 `queue_full` with Retry-After and stores nothing; a job that waited in the queue past its `max_wait`
fails with `deadline_exceeded` instead of running late."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from environment import model_cache
from factories import cat_variants
from integration.conftest import RedisFactory, StackFactory
from integration.stack import FAST_RECOVERY, ApiServer, submit, wait_for, wait_terminal
from visionq.jobs import keys
from visionq.jobs.records import ANONYMOUS, parse_time
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]


def test_a_full_queue_refuses_with_retry_after_until_it_drains(start_stack: StackFactory) -> None:
    settings, worker, server = start_stack("backpressure", max_queued_jobs=3)
    client = redis.Redis.from_url(settings.state_url, decode_responses=True)
    worker.stop()  # nothing drains the queue
    with httpx.Client(base_url=server.url, timeout=30) as api:
        # Urgent jobs may fill the whole bound (lower priorities are refused earlier: the next test).
        queued = [submit(api, CAT_JPEG, priority="urgent").json()["job_id"] for _ in range(3)]
        jobs_before = len(list(client.scan_iter(keys.status("*"))))
        refused = submit(api, CAT_JPEG, priority="urgent")
        jobs_after = len(list(client.scan_iter(keys.status("*"))))
        key = "backpressure-retry"
        refused_with_key = api.post(
            "/classify",
            files={"file": ("c.jpg", CAT_JPEG)},
            data={"priority": "urgent"},
            headers={"Idempotency-Key": key},
        )
        key_held = client.exists(keys.idempotency(ANONYMOUS, key, keys.Shards()))

        worker.start()
        finals = [wait_terminal(api, job_id) for job_id in queued]
        accepted_again = submit(api, CAT_JPEG)

    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["code"] == "queue_full"
    assert "3 jobs are waiting" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert jobs_after == jobs_before, "a refused job is not stored"
    assert (refused_with_key.status_code, key_held) == (503, 0), "its key is free for the retry at once"
    assert [final["status"] for final in finals] == ["completed"] * 3
    assert accepted_again.status_code == 202
    client.close()


def test_under_load_the_lowest_priority_is_refused_first(new_redis: RedisFactory, tmp_path: Path) -> None:
    # An API alone (no worker: nothing drains the queue). Bounds for 20: low 16, normal 18, high 19, urgent 20
    # (Priority.shed_share).
    settings = Settings(**FAST_RECOVERY, model_cache_dir=model_cache(), queue="visionq-test-shedding",
                        data_dir=tmp_path, redis_url=new_redis("shedding"), max_queued_jobs=20)  # fmt: skip
    server = ApiServer(settings)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:

            def accepted(priority: str) -> bool:
                answer: httpx.Response = submit(api, CAT_JPEG, priority=priority)
                assert answer.status_code in (202, 503), answer.text
                return answer.status_code == 202

            filled = [accepted("urgent") for _ in range(16)]
            outcomes = [(priority, accepted(priority)) for priority in ("low", "normal", "normal", "normal", "high",
                                                                        "high", "urgent", "urgent", "low")]  # fmt: skip
    finally:
        server.stop()

    assert all(filled)
    assert outcomes == [
        ("low", False),
        ("normal", True),
        ("normal", True),
        ("normal", False),
        ("high", True),
        ("high", False),
        ("urgent", True),
        ("urgent", False),
        ("low", False),
    ]


def test_above_the_redis_memory_bound_submits_are_refused(start_stack: StackFactory) -> None:
    settings, _, _ = start_stack("memory-bound")
    api_server = ApiServer(settings.model_copy(update={"max_redis_memory": 1}))  # any Redis is over one byte
    api_server.start()
    try:
        with httpx.Client(base_url=api_server.url, timeout=30) as api:
            refused = submit(api, CAT_JPEG)
            ready = api.get("/health")
    finally:
        api_server.stop()

    assert refused.status_code == 503
    assert refused.json()["code"] == "queue_full"
    assert "nearly full" in refused.json()["detail"]
    assert "retry-after" in refused.headers
    assert ready.status_code == 200, "the service stays healthy"


def test_a_job_that_waited_past_its_max_wait_fails_instead_of_running_late(start_stack: StackFactory) -> None:
    _, worker, server = start_stack("deadline")
    worker.stop()
    with httpx.Client(base_url=server.url, timeout=30) as api:
        hurried = submit(api, CAT_JPEG, max_wait=0.5).json()
        patient = submit(api, CAT_JPEG, max_wait=600).json()["job_id"]
        # The worker measures a job's wait from its creation, by the clock: start it once that wait is over.
        over = parse_time(hurried["created_at"]).timestamp() + 0.5
        wait_for(lambda: time.time() > over, 10, "the hurried job's max_wait to pass", interval=0.05)
        worker.start()
        late, in_time = wait_terminal(api, hurried["job_id"]), wait_terminal(api, patient)

    assert late["status"] == "failed"
    assert late["error"]["code"] == "deadline_exceeded"
    assert "0.5 s" in late["error"]["message"]
    assert in_time["status"] == "completed"
