"""The Celery broker apart from job state: RabbitMQ (the machine's own, `amqp://`), and a second Redis server. Job
state stays on the stack's Redis; messages go through its outbox (jobs/publisher.py). Each flow a client relies on
runs on both: a job followed over the WebSocket to its result, an idempotent retry, a signed callback, priorities
and cancellation; a job whose API never published its message is published by another API's keeper; a job
published again (promoted while it waited) runs once; a job whose worker is SIGKILLed mid-inference is redelivered
(its message was not acknowledged) and completes once."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kombu.exceptions import OperationalError
from PIL import Image

from factories import cat_variants, encode
from integration.conftest import RedisFactory, StackFactory
from integration.receivers import Receiver, receiving
from integration.stack import (
    RABBITMQ,
    ApiServer,
    CallbackWorkerProcess,
    WorkerProcess,
    delete_broker_queues,
    started_at,
    submit,
    submitted_twice_and_followed,
    wait_for,
    wait_terminal,
)
from model_factories import STAGES_AS_THEY_BEGIN, gated_model
from tests_support import CAT_CLASSES
from visionq.callbacks.signing import verify
from visionq.jobs import keys
from visionq.jobs.publisher import BrokerAway, Publisher
from visionq.settings import Settings

CAT = cat_variants()["jpeg"]
RED = encode(Image.new("RGB", (32, 32), (250, 10, 10)), "PNG")
SECRET = "broker-apart-callback-secret"
Stack = tuple[Settings, WorkerProcess, ApiServer]


@pytest.fixture(scope="module", params=["rabbitmq", "redis"])
def broker(request: pytest.FixtureRequest, new_redis: RedisFactory) -> Iterator[str]:
    """The broker's URL: RabbitMQ, whose queues each stack names for itself and deletes at the end; or a Redis server
    of its own."""
    if request.param == "redis":
        yield new_redis("broker-apart")
        return
    yield RABBITMQ


@pytest.fixture(scope="module")
def stack(broker: str, start_stack: StackFactory) -> Iterator[Stack]:
    name = f"apart-{uuid.uuid4().hex[:8]}"
    settings, worker, api = start_stack(
        name,
        broker_url=broker,
        callback_secret=SECRET,
        callback_allow_private=True,  # the receiver listens on 127.0.0.1
        callback_queue=f"visionq-test-{name}-deliveries",
        outbox_republish_after=1.0,
        queue_pass_interval=0.2,
    )
    deliverer = CallbackWorkerProcess(settings)
    deliverer.start()
    yield settings, worker, api
    for process in (deliverer, worker):  # first: a consumer still running would declare its queue again
        process.stop()
    delete_broker_queues(settings, f"{settings.queue}-held")


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack[2].url, timeout=30) as client:
        yield client


def _held(settings: Settings, **overrides: object) -> Settings:
    """The stack's settings on a queue no worker serves yet."""
    return settings.model_copy(update={"queue": f"{settings.queue}-held", **overrides})


def test_a_job_is_followed_over_the_websocket_and_an_idempotent_retry_replays_it(stack: Stack) -> None:
    _, _, api = stack
    first, again, messages = submitted_twice_and_followed(api, CAT)
    job_id = first.json()["job_id"]
    with httpx.Client(base_url=api.url, timeout=30) as http:
        ready = http.get("/health/ready").json()
        final = http.get(f"/status/{job_id}").json()
    assert first.status_code == 202
    assert (again.status_code, again.json()["job_id"]) == (200, job_id), "the retry replays the first answer"
    assert messages[-1]["predictions"][0]["class_id"] in CAT_CLASSES, "the last message is the result"
    assert final["attempts"] == 1
    assert ready["checks"]["broker"] == "ok"


def test_the_callback_is_delivered_signed(stack: Stack) -> None:
    with receiving() as (state, url), httpx.Client(base_url=stack[2].url, timeout=30) as http:
        job_id = submit(http, CAT, callback_url=url).json()["job_id"]
        received = _received(state)
    headers, body = received[0]
    assert json.loads(body)["job_id"] == job_id
    assert verify(body, SECRET, headers["x-visionq-signature"])


def _received(state: Receiver) -> list[tuple[dict[str, str], bytes]]:
    wait_for(lambda: state.requests, 60, "the callback")
    return state.requests


def test_urgent_work_starts_first_and_a_cancelled_job_never_runs(stack: Stack) -> None:
    held = _held(stack[0], worker_concurrency=1)
    with ApiServer(held) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        lows = [submit(http, CAT, priority="low").json()["job_id"] for _ in range(3)]
        cancelled = submit(http, CAT, priority="normal").json()["job_id"]
        urgent = submit(http, CAT, priority="urgent").json()["job_id"]
        place = http.get(f"/status/{urgent}").json()["queue_position"]
        refused = http.delete(f"/jobs/{cancelled}")
        with WorkerProcess(held):  # one job at a time, from the queue as the broker orders it
            ended = {job: wait_terminal(http, job) for job in [*lows, urgent, cancelled]}
            started = {job: started_at(http.get(f"/result/{job}").json()) for job in [*lows, urgent]}
    assert place == 0
    assert refused.status_code == 200
    assert (ended[cancelled]["status"], ended[cancelled]["attempts"]) == ("cancelled", 0), "it never ran"
    assert all(ended[job]["status"] == "completed" for job in [*lows, urgent])
    assert all(started[urgent] < started[low] for low in lows), "urgent went first"


def test_a_job_whose_api_never_published_it_is_published_by_the_keeper(stack: Stack) -> None:
    settings, _, api = stack
    # An API whose broker is unreachable: its jobs are made, with their message left in the outbox.
    cut_off = settings.model_copy(update={"broker_url": _unreachable(settings.broker)})
    with ApiServer(cut_off) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        accepted = submit(http, CAT)
        ready = http.get("/health/ready").json()
    job_id = accepted.json()["job_id"]
    state = redis.Redis.from_url(settings.state_url, decode_responses=True)
    with httpx.Client(base_url=api.url, timeout=30) as http:
        final = wait_terminal(http, job_id)  # the stack's API, whose keeper reaches the broker
    left = state.zscore(keys.unpublished(settings.queue, ""), job_id)
    state.close()

    assert accepted.status_code == 202, "the job is made, and durable, without the broker"
    assert ready["checks"]["broker"] == "down"
    assert ready["status"] == "degraded"
    assert (final["status"], final["attempts"]) == ("completed", 1), "published by the other API's keeper, run once"
    assert left is None, "and off the outbox"


def _unreachable(broker: str) -> str:
    """`broker` on a port nothing listens on."""
    scheme, _, rest = broker.partition("://")
    credentials, _, address = rest.rpartition("@")
    path = address.partition("/")[2]
    return f"{scheme}://{credentials + '@' if credentials else ''}127.0.0.1:9/{path}"


def test_a_job_promoted_while_it_waited_runs_once_though_published_twice(stack: Stack) -> None:
    held = _held(stack[0], priority_aging=0.5)
    with ApiServer(held) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        job_id = submit(http, CAT, priority="low").json()["job_id"]
        promoted = wait_for(lambda: _promoted(http, job_id), 30, "the job's promotion")
        with WorkerProcess(held.model_copy(update={"priority_aging": 0})):
            final = wait_terminal(http, job_id)
    assert promoted["promoted_to"] == "normal"
    assert (final["status"], final["attempts"]) == ("completed", 1), "run once, by its current message"


def _promoted(http: httpx.Client, job_id: str) -> dict[str, object] | None:
    status: dict[str, object] = http.get(f"/status/{job_id}").json()
    return status if status.get("promoted_to") else None


def test_a_job_whose_worker_is_killed_mid_inference_is_redelivered_and_completes_once(
    broker: str, start_stack: StackFactory, tmp_path: Path
) -> None:
    gate = gated_model(tmp_path)
    name = f"apart-kill-{uuid.uuid4().hex[:8]}"
    settings, worker, server = start_stack(
        name, broker_url=broker, model_dir=tmp_path, warm_models=["gated"], **STAGES_AS_THEY_BEGIN
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            with gate.closed():
                job_id = submit(http, RED, model_version="gated").json()["job_id"]
                wait_for(lambda: _in_the_model(http, job_id), 60, "the job to reach the model")
                worker.kill()  # SIGKILL, mid-inference: its message is not acknowledged
                worker.start()
                wait_for(lambda: _in_the_model(http, job_id, attempt=2), 60, "the job's redelivery")
            final = wait_terminal(http, job_id)
            result = http.get(f"/result/{job_id}").json()
    finally:
        worker.stop()
        delete_broker_queues(settings, f"{settings.queue}-held")
    assert (final["status"], final["attempts"]) == ("completed", 2), "redelivered once, completed once"
    assert result["predictions"][0]["class_name"] == "red"


def _in_the_model(http: httpx.Client, job_id: str, attempt: int | None = None) -> bool:
    status = http.get(f"/status/{job_id}").json()
    return (status["status"], status["stage"]) == ("processing", "inference") and attempt in {None, status["attempts"]}


def test_after_a_failed_publish_requests_leave_their_jobs_to_the_outbox_while_the_keeper_tries_on() -> None:
    publisher = Publisher("amqp://guest:guest@127.0.0.1:9//")  # nothing listens there
    try:
        with pytest.raises(OperationalError):  # tried, and failed
            publisher.publish("job-1", queue="visionq-test-away", broker_priority=6)
        with pytest.raises(BrokerAway):
            publisher.publish("job-2", queue="visionq-test-away", broker_priority=6)  # not tried: failed just now
        with pytest.raises(OperationalError):  # the keeper's pass tries whatever happened before
            publisher.publish("job-2", queue="visionq-test-away", broker_priority=6, in_request=False)
    finally:
        publisher.close()
