"""The queue as a client sees it, on a real stack: queue positions, deadlines that expire a job unrun, aged jobs
promoted past later urgent arrivals, and a terminal answer's validator (ETag, 304).

Jobs that must wait are sent to a queue of their own that no worker serves (the `held` API), so the stack's
worker never has to be stopped; a test that needs them run starts a worker for that queue."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from factories import cat_variants
from integration.conftest import StackFactory
from integration.stack import ApiServer, WorkerProcess, submit, wait_for, wait_terminal
from visionq.settings import Settings

CAT_JPEG = cat_variants()["jpeg"]
Stack = tuple[Settings, WorkerProcess, ApiServer]


@pytest.fixture(scope="module")
def queue_stack(start_stack: StackFactory) -> Stack:
    """A stack whose API makes no queue passes in a test's time: the tests that need them start an API process
    of their own that does, with the aging it needs."""
    return start_stack("queue-order", queue_pass_interval=3600)


@pytest.fixture(scope="module")
def held_settings(queue_stack: Stack) -> Settings:
    return queue_stack[0].model_copy(update={"queue": f"{queue_stack[0].queue}-held"})


@pytest.fixture(scope="module")
def held(held_settings: Settings) -> Iterator[ApiServer]:
    """An API on a queue that no worker serves: its jobs wait as long as a test needs."""
    server = ApiServer(held_settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(held: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=held.url, timeout=30) as client:
        yield client


@contextmanager
def queue_passes(settings: Settings, *, aging: float) -> Iterator[None]:
    """An API process beside the others that expires and promotes its queue's jobs five times a second."""
    keeper = ApiServer(settings.model_copy(update={"queue_pass_interval": 0.2, "priority_aging": aging}))
    keeper.start()
    try:
        yield
    finally:
        keeper.stop()


def _position(api: httpx.Client, job_id: str) -> int | None:
    position: int | None = api.get(f"/status/{job_id}").json().get("queue_position")
    return position


def test_a_waiting_job_counts_the_jobs_that_will_start_before_it(held: ApiServer, api: httpx.Client) -> None:
    first, second, third = (submit(api, CAT_JPEG).json()["job_id"] for _ in range(3))
    low = submit(api, CAT_JPEG, priority="low").json()["job_id"]
    urgent = submit(api, CAT_JPEG, priority="urgent").json()["job_id"]
    positions = {job_id: _position(api, job_id) for job_id in (first, second, third, low, urgent)}

    seen: list[int] = []
    with connect(f"ws://127.0.0.1:{held.port}/ws/{low}", open_timeout=10) as socket:
        seen.append(json.loads(socket.recv(timeout=10))["queue_position"])
        for job_id in (first, second):
            api.delete(f"/jobs/{job_id}")
        while seen[-1] != 2:  # pushed at most once a second while the job waits
            seen.append(json.loads(socket.recv(timeout=10))["queue_position"])
        api.delete(f"/jobs/{low}")
        messages: list[dict[str, Any]] = []
        with contextlib.suppress(ConnectionClosed):  # closed once the job has ended
            while True:
                messages.append(json.loads(socket.recv(timeout=10)))
    for job_id in (third, urgent):  # the held queue is left empty for the next test
        api.delete(f"/jobs/{job_id}")

    assert positions == {urgent: 0, first: 1, second: 2, third: 3, low: 4}
    distinct = [p for i, p in enumerate(seen) if i == 0 or p != seen[i - 1]]
    assert distinct == sorted(set(distinct), reverse=True), f"positions only fall: {seen}"
    assert distinct[0] == 4
    status, outcome = messages[-2:]
    assert (status["status"], status["stage"]) == ("cancelled", "cancelled")
    assert "queue_position" not in status, "only while it waits"
    assert "error" not in status, "API.md: a status body's `error` only when failed"
    assert (outcome["job_id"], outcome["status"], outcome["error"]["code"]) == (low, "cancelled", "cancelled")


def test_a_job_not_started_by_its_deadline_expires_unrun(held_settings: Settings, api: httpx.Client) -> None:
    hurried = submit(api, CAT_JPEG, deadline=0.3)
    in_an_hour = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    patient = submit(api, CAT_JPEG, deadline=in_an_hour).json()["job_id"]
    refused = submit(api, CAT_JPEG, deadline="2020-01-01T00:00:00Z")

    with queue_passes(held_settings, aging=0):  # expired by an API process: no worker serves this queue
        expired = wait_terminal(api, hurried.json()["job_id"], timeout=30)
    answer = api.get(f"/result/{expired['job_id']}")
    waiting = api.get(f"/status/{patient}").json()
    api.delete(f"/jobs/{patient}")  # it would wait ahead of the next test's jobs

    assert hurried.status_code == 202
    assert (expired["status"], expired["stage"], expired["error"]["code"]) == ("expired", "expired", "expired")
    assert (expired["attempts"], expired["worker_id"]) == (0, None), "never run"
    assert answer.status_code == 200
    assert answer.json()["status"] == "expired"
    assert waiting["status"] == "pending"
    assert waiting["deadline"].startswith(in_an_hour[:16])
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"


def test_an_aged_low_job_is_promoted_past_later_urgent_arrivals(held_settings: Settings, api: httpx.Client) -> None:
    low = submit(api, CAT_JPEG, priority="low").json()["job_id"]
    with queue_passes(held_settings, aging=0.3):  # one step up per 0.3 s waited
        wait_for(
            lambda: api.get(f"/status/{low}").json().get("promoted_to") == "urgent", 30, "the low job to reach urgent"
        )
    later = [submit(api, CAT_JPEG, priority="urgent").json()["job_id"] for _ in range(2)]
    positions = [_position(api, job_id) for job_id in (low, *later)]
    worker = WorkerProcess(held_settings)  # one job at a time (the stacks' setting): they run in queue order
    worker.start()
    try:
        finals = [wait_terminal(api, job_id) for job_id in (low, *later)]
        results = [api.get(f"/result/{job_id}").json() for job_id in (low, *later)]
    finally:
        worker.stop()

    assert positions == [0, 1, 2]
    assert [final["status"] for final in finals] == ["completed"] * 3, "a promoted message is a Celery message"
    assert finals[0]["priority"] == "low", "the job keeps the priority it was submitted with"
    assert results[0]["completed_at"] <= results[1]["completed_at"] <= results[2]["completed_at"]


def test_a_terminal_answer_carries_a_validator_and_is_not_sent_twice(queue_stack: Stack, api: httpx.Client) -> None:
    waiting = submit(api, CAT_JPEG).json()["job_id"]
    pending = api.get(f"/result/{waiting}")
    api.delete(f"/jobs/{waiting}")
    with httpx.Client(base_url=queue_stack[2].url, timeout=30) as served:  # the stack's worker runs this one
        job_id = submit(served, CAT_JPEG).json()["job_id"]
        wait_terminal(served, job_id)
        first = served.get(f"/result/{job_id}")
        again = served.get(f"/result/{job_id}", headers={"If-None-Match": first.headers["etag"]})
        changed = served.get(f"/result/{job_id}", headers={"If-None-Match": '"something-else"'})

    assert pending.status_code == 202
    assert pending.headers["cache-control"] == "no-store"
    assert first.status_code == 200
    assert first.headers["cache-control"].startswith("public")
    assert "immutable" in first.headers["cache-control"]
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["etag"] == first.headers["etag"]
    assert changed.status_code == 200
    assert changed.json() == first.json()
