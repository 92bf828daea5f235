"""`Prefer: wait=N` on GET /result and POST /classify, and the SDK that relies on it, against a real Redis, worker
and model.

Pending jobs are made without timing tricks: they go to a queue that no worker serves, and end when the test
cancels them. Whether a request is being held is seen in Redis: the API subscribes to the job's updates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from factories import cat_variants
from integration.conftest import RedisFactory
from integration.stack import FAST_RECOVERY, ApiServer, submit, wait_for, wait_terminal
from ports import free_port
from tests_support import CAT_CLASSES
from visionq.client import AsyncClient, Client, FailureBody, ResultBody
from visionq.jobs import keys
from visionq.settings import Settings
from visionq.wire.states import JobStatus

CAT_PNG = cat_variants()["png"]
#: Seconds a request that must not be held may take at most.
PROMPT = 5.0
#: Seconds a test waits for the API to start holding a request.
SETTLE_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def redis_url(new_redis: RedisFactory) -> str:
    """This module's own Redis server: its API stacks and the tests that look into their Redis share it."""
    return new_redis("prefer-wait")


@pytest.fixture(scope="module")
def idle(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """An API whose queue no worker serves: its jobs stay pending until cancelled."""
    settings = Settings(
        **FAST_RECOVERY, redis_url=redis_url, queue="visionq-test-prefer-idle", data_dir=tmp_path_factory.mktemp("idle")
    )
    server = ApiServer(settings)
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


@pytest.fixture
def pending(idle: httpx.Client) -> str:
    accepted = submit(idle, CAT_PNG)
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["job_id"]
    return job_id


@pytest.fixture
def completed(api: httpx.Client) -> str:
    job_id: str = submit(api, CAT_PNG).json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    return job_id


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    """A thread for the request that is held while the test goes on."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="held-request") as pool:
        yield pool


def held(client: redis.Redis, job_id: str) -> bool:
    """Whether an API is subscribed to the job's updates: a request for it is being held."""
    [(_, count)] = client.pubsub_numsub(keys.events(job_id))
    return int(count) > 0


def held_job(client: redis.Redis) -> str | None:
    """The job whose updates an API is subscribed to, when there is exactly one: the job of a held request."""
    channels = [c if isinstance(c, str) else c.decode() for c in client.pubsub_channels(keys.events("*"))]
    return channels[0].split("{", 1)[1].split("}", 1)[0] if len(channels) == 1 else None


def result_reads(api: httpx.Client) -> float:
    """`GET /result/{job_id}` requests the API has answered, from its own counter."""
    lines = api.get("/metrics").text.splitlines()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("visionq_http_requests_total{") and 'route="/result/{job_id}"' in line
    )


def test_a_held_request_answers_with_the_predictions_once_the_job_completes(api: httpx.Client) -> None:
    job_id = submit(api, CAT_PNG).json()["job_id"]

    response = api.get(f"/result/{job_id}", headers={"Prefer": "wait=30"}, timeout=60)

    assert response.status_code == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=30"
    assert response.json()["predictions"][0]["class_id"] in CAT_CLASSES


def test_a_held_request_ends_as_soon_as_the_job_does(
    idle: httpx.Client, pending: str, redis_client: redis.Redis, background: ThreadPoolExecutor
) -> None:
    waiting = background.submit(lambda: idle.get(f"/result/{pending}", headers={"Prefer": "wait=30"}, timeout=60))
    wait_for(lambda: held(redis_client, pending), SETTLE_TIMEOUT, "the API to hold the request")

    assert idle.delete(f"/jobs/{pending}").status_code == 200
    response = waiting.result(timeout=PROMPT)

    assert response.status_code == 200
    assert response.headers["Preference-Applied"] == "wait=30"
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"]["code"] == "cancelled"
    wait_for(lambda: not held(redis_client, pending), SETTLE_TIMEOUT, "the API to unsubscribe")


def test_a_held_request_answers_202_once_its_wait_has_passed(
    idle: httpx.Client, pending: str, redis_client: redis.Redis, background: ThreadPoolExecutor
) -> None:
    waiting = background.submit(lambda: idle.get(f"/result/{pending}", headers={"Prefer": "wait=2"}))
    # Held, then answered: the job stays pending, so only the end of the wait can answer it.
    first = wait_for(
        lambda: "held" if held(redis_client, pending) else "answered" if waiting.done() else None,
        SETTLE_TIMEOUT,
        "the API to hold the request",
    )
    response = waiting.result(timeout=SETTLE_TIMEOUT)

    assert first == "held", "answered without being held"
    assert response.status_code == 202
    assert response.headers["Preference-Applied"] == "wait=2"
    assert response.json()["status"] == "pending"
    wait_for(lambda: not held(redis_client, pending), SETTLE_TIMEOUT, "the API to unsubscribe")


@pytest.mark.parametrize(("prefer", "applied"), [(None, None), ("wait=0", "wait=0"), ("respond-async", None)])
def test_a_request_without_a_wait_answers_202_at_once(
    idle: httpx.Client, pending: str, prefer: str | None, applied: str | None
) -> None:
    headers = {"Prefer": prefer} if prefer is not None else {}

    response = idle.get(f"/result/{pending}", headers=headers, timeout=PROMPT)

    assert response.status_code == 202
    assert response.headers.get("Preference-Applied") == applied


@pytest.mark.parametrize("prefer", ["wait=soon", "wait=-5", "wait=2.5"])
def test_a_malformed_wait_is_ignored(
    idle: httpx.Client, pending: str, completed: str, api: httpx.Client, prefer: str
) -> None:
    running = idle.get(f"/result/{pending}", headers={"Prefer": prefer}, timeout=PROMPT)
    done = api.get(f"/result/{completed}", headers={"Prefer": prefer})

    assert (running.status_code, done.status_code) == (202, 200)
    assert "Preference-Applied" not in running.headers
    assert "Preference-Applied" not in done.headers
    assert done.json()["predictions"]


def test_a_wait_over_sixty_seconds_is_applied_as_sixty(
    idle: httpx.Client,
    pending: str,
    completed: str,
    api: httpx.Client,
    redis_client: redis.Redis,
    background: ThreadPoolExecutor,
) -> None:
    done = api.get(f"/result/{completed}", headers={"Prefer": "wait=999"})
    waiting = background.submit(lambda: idle.get(f"/result/{pending}", headers={"Prefer": "wait=999"}, timeout=90))
    wait_for(lambda: held(redis_client, pending), SETTLE_TIMEOUT, "the API to hold the request")
    assert idle.delete(f"/jobs/{pending}").status_code == 200
    cancelled = waiting.result(timeout=PROMPT)

    assert (done.status_code, done.headers["Preference-Applied"]) == (200, "wait=60")
    assert (cancelled.status_code, cancelled.headers["Preference-Applied"]) == (200, "wait=60")
    assert cancelled.json()["status"] == "cancelled"


def test_the_sdk_without_a_progress_callback_waits_on_a_held_request(
    idle: httpx.Client, pending: str, redis_client: redis.Redis, background: ThreadPoolExecutor
) -> None:
    # Its WebSocket address refuses connections, so while the job is pending the only subscriber there can be
    # is a held GET /result (polling subscribes to nothing).
    with Client(str(idle.base_url).rstrip("/"), ws_url=f"ws://127.0.0.1:{free_port()}") as sdk:
        waiting = background.submit(lambda: sdk.wait(pending, timeout=60))
        wait_for(lambda: held(redis_client, pending), SETTLE_TIMEOUT, "the SDK's held request")
        assert idle.delete(f"/jobs/{pending}").status_code == 200
        outcome = waiting.result(timeout=PROMPT)

    assert isinstance(outcome, FailureBody)
    assert outcome.status is JobStatus.CANCELLED


def test_the_sdks_classify_without_a_progress_callback_gets_the_predictions_in_the_uploads_answer(
    api: httpx.Client,
) -> None:
    reads = result_reads(api)
    url = str(api.base_url).rstrip("/")
    with Client(url) as sdk:
        outcome = sdk.classify(CAT_PNG, timeout=60)

    async def classify() -> object:
        async with AsyncClient(url) as sdk:
            return await sdk.classify(CAT_PNG, timeout=60)

    for answer in (outcome, asyncio.run(classify())):
        assert isinstance(answer, ResultBody), answer
        assert answer.predictions[0].class_id in CAT_CLASSES
    assert result_reads(api) == reads  # one request per image: no GET /result followed the uploads


def test_the_sdks_classify_holds_its_upload_until_the_job_ends(
    idle: httpx.Client, redis_client: redis.Redis, background: ThreadPoolExecutor
) -> None:
    reads = result_reads(idle)
    with Client(str(idle.base_url).rstrip("/"), ws_url=f"ws://127.0.0.1:{free_port()}") as sdk:
        waiting = background.submit(lambda: sdk.classify(CAT_PNG, timeout=60))
        job_id = wait_for(lambda: held_job(redis_client), SETTLE_TIMEOUT, "the API to hold the SDK's upload")
        assert idle.delete(f"/jobs/{job_id}").status_code == 200
        outcome = waiting.result(timeout=PROMPT)

    assert isinstance(outcome, FailureBody)
    assert (outcome.job_id, outcome.status) == (job_id, JobStatus.CANCELLED)
    assert result_reads(idle) == reads
