"""Callbacks against the real stack and real local receivers: signature, retries, a hanging receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from factories import cat_variants
from integration.conftest import StackFactory
from integration.receivers import Receiver, receiving
from integration.stack import ApiServer, CallbackWorkerProcess, submit, wait_for, wait_terminal
from model_factories import broken_model
from visionq.callbacks.signing import verify
from visionq.jobs import keys
from visionq.settings import Settings
from visionq.wire.states import PRIORITY_STEPS

SECRET = "callback-test-secret"
CAT = cat_variants()["jpeg"]
#: Seconds a test waits for deliveries to arrive.
DELIVERY_TIMEOUT = 30.0


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as (state, url):
        yield state, url


@dataclass
class CallbacksStack:
    """The module's stack: its settings, its callbacks worker and its API."""

    settings: Settings
    deliverer: CallbackWorkerProcess
    api: ApiServer


@pytest.fixture(scope="module")
def callbacks_stack(start_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallbacksStack]:
    models = tmp_path_factory.mktemp("callback-models")
    broken_model(models)
    settings, _, server = start_stack(
        "callbacks",
        worker_pool="solo",
        model_dir=models,  # `broken`, whose jobs fail
        breakers=False,  # so that they fail, rather than go to the fallback model
        callback_secret=SECRET,
        callback_allow_private=True,  # the receivers listen on 127.0.0.1
        callback_backoff=0.2,
        callback_timeout=2.0,
        callback_queue="visionq-test-deliveries",
    )
    deliverer = CallbackWorkerProcess(settings)
    deliverer.start()
    yield CallbacksStack(settings, deliverer, server)
    deliverer.stop()


@pytest.fixture
def callbacks_api(callbacks_stack: CallbacksStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=callbacks_stack.api.url, timeout=30) as client:
        yield client


def deliveries(api: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    answer = api.get(f"/jobs/{job_id}/deliveries")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["deliveries"]
    return found


def attempt_to_come(client: redis.Redis, settings: Settings, job_id: str) -> bool:
    """Whether an attempt of the job's callback is still to come: due, or queued for a callbacks worker or held
    by one. Asked of a stopped callbacks worker, whose tasks are then all in Redis, it is the whole answer."""
    with client.pipeline(transaction=True) as pipe:
        pipe.zscore(keys.CALLBACKS_DUE, job_id)
        for step in PRIORITY_STEPS:
            pipe.lrange(keys.priority_list(settings.callback_queue, step), 0, -1)
        pipe.hvals(keys.BROKER_UNACKED)
        due, *messages = pipe.execute()
    return due is not None or any(job_id in message for batch in messages for message in batch)


def test_the_result_arrives_signed_with_the_job_headers(
    callbacks_api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    job_id = submit(callbacks_api, CAT, callback_url=url).json()["job_id"]
    assert wait_terminal(callbacks_api, job_id)["status"] == "completed"

    wait_for(lambda: deliveries(callbacks_api, job_id), DELIVERY_TIMEOUT, "the delivery")
    ((headers, body),) = state.requests
    assert verify(body, SECRET, headers["x-visionq-signature"])
    assert not verify(body + b" ", SECRET, headers["x-visionq-signature"]), "the signature covers the raw body"
    assert headers["content-type"] == "application/json"
    assert headers["x-visionq-job-id"] == job_id
    assert body == callbacks_api.get(f"/result/{job_id}").content, "the result body, byte for byte"
    (attempt,) = deliveries(callbacks_api, job_id)
    assert attempt["outcome"] == "delivered"
    assert attempt["status_code"] == 200
    assert attempt["attempt"] == 1
    assert attempt["delivery_id"] == headers["x-visionq-delivery"]
    assert attempt["url"] == url


def test_a_receiver_that_fails_twice_gets_one_success_and_three_attempts_are_recorded(
    callbacks_stack: CallbacksStack, callbacks_api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.answers = [500, 503, 200]
    job_id = submit(callbacks_api, CAT, callback_url=url).json()["job_id"]

    wait_for(lambda: len(deliveries(callbacks_api, job_id)) == 3, DELIVERY_TIMEOUT, "three attempts")
    # Stopped, the callbacks worker leaves any attempt still to come in Redis, where it can be seen.
    callbacks_stack.deliverer.stop()
    try:
        with redis.Redis.from_url(callbacks_stack.settings.state_url, decode_responses=True) as client:
            another_to_come = attempt_to_come(client, callbacks_stack.settings, job_id)
        attempts = deliveries(callbacks_api, job_id)
    finally:
        callbacks_stack.deliverer.start()

    assert not another_to_come, "a fourth attempt was on its way"
    assert [a["outcome"] for a in attempts] == ["failed", "failed", "delivered"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert len({a["delivery_id"] for a in attempts}) == 1, "one delivery id for the whole series"
    assert len(state.requests) == 3
    assert len({body for _, body in state.requests}) == 1


def test_a_failed_job_is_called_back_with_its_failure_body(
    callbacks_api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    job_id = submit(callbacks_api, CAT, model_version="broken", callback_url=url).json()["job_id"]

    final = wait_terminal(callbacks_api, job_id)
    wait_for(lambda: deliveries(callbacks_api, job_id), DELIVERY_TIMEOUT, "the delivery")
    ((headers, body),) = state.requests

    assert final["status"] == "failed"
    assert json.loads(body) == {"job_id": job_id, "status": "failed", "error": final["error"]}
    assert final["error"]["code"] == "internal_error"
    assert body == callbacks_api.get(f"/result/{job_id}").content, "the failure body, byte for byte"
    assert verify(body, SECRET, headers["x-visionq-signature"])


def test_a_hanging_receiver_does_not_hold_up_classification(
    callbacks_api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    state.answers = ["hang"]  # until the test ends
    hung = submit(callbacks_api, CAT, callback_url=url).json()["job_id"]
    wait_terminal(callbacks_api, hung)
    wait_for(lambda: state.in_flight, DELIVERY_TIMEOUT, "the receiver to hang")

    others = [submit(callbacks_api, CAT).json()["job_id"] for _ in range(3)]
    statuses = [wait_terminal(callbacks_api, job_id)["status"] for job_id in others]

    assert statuses == ["completed"] * 3
    assert state.in_flight >= 1, "the other jobs finished while the receiver was still holding a delivery"
    wait_for(lambda: deliveries(callbacks_api, hung), DELIVERY_TIMEOUT, "the timed-out attempt")
    first = deliveries(callbacks_api, hung)[0]
    assert first["outcome"] == "failed"
    assert "Timeout" in first["error"]


def test_without_a_secret_callbacks_are_refused_at_submit(api: httpx.Client) -> None:
    answer = submit(api, CAT, callback_url="https://example.com/hook")
    assert answer.status_code == 422
    assert "VISIONQ_CALLBACK_SECRET" in answer.json()["detail"]


def test_the_deliveries_of_an_unknown_job_are_not_found(callbacks_api: httpx.Client) -> None:
    assert callbacks_api.get("/jobs/no-such-job/deliveries").status_code == 404


def test_a_batch_is_called_back_once_signed_with_its_final_status(
    callbacks_stack: CallbacksStack, callbacks_api: httpx.Client, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    files = [("file", (f"{n}.jpg", CAT, "image/jpeg")) for n in range(3)]
    answer = callbacks_api.post("/batches", files=files, data={"callback_url": url})
    assert answer.status_code == 202, answer.text
    batch_id = answer.json()["batch_id"]

    wait_for(lambda: state.requests, DELIVERY_TIMEOUT, "the batch's callback")
    callbacks_stack.deliverer.stop()  # any attempt still to come is then in Redis, where it can be seen
    try:
        with redis.Redis.from_url(callbacks_stack.settings.state_url, decode_responses=True) as client:
            another_to_come = attempt_to_come(client, callbacks_stack.settings, f"batch:{{{batch_id}}}")
    finally:
        callbacks_stack.deliverer.start()
    ((headers, body),) = state.requests
    final = json.loads(body)

    assert not another_to_come
    assert verify(body, SECRET, headers["x-visionq-signature"])
    assert (headers["x-visionq-batch-id"], headers["x-visionq-job-id"]) == (batch_id, f"batch:{batch_id}")
    assert (final["batch_id"], final["status"], final["total"]) == (batch_id, "completed", 3)
    assert final["counts"]["completed"] == 3
    assert final == {
        **callbacks_api.get(f"/batches/{batch_id}").json(),
        "estimated_completion": final["estimated_completion"],
    }


def test_a_job_that_expired_unrun_is_called_back_with_its_expiry(
    callbacks_stack: CallbacksStack, receiver: tuple[Receiver, str]
) -> None:
    state, url = receiver
    # A queue no worker serves: the job waits until an API process's queue pass expires it.
    held = callbacks_stack.settings.model_copy(
        update={"queue": f"{callbacks_stack.settings.queue}-held", "queue_pass_interval": 0.2}
    )
    server = ApiServer(held)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as api:
            job_id = submit(api, CAT, callback_url=url, deadline=0.2).json()["job_id"]
            final = wait_terminal(api, job_id)
            wait_for(lambda: state.requests, DELIVERY_TIMEOUT, "the expiry's callback")
            answer = api.get(f"/result/{job_id}").content
    finally:
        server.stop()
    ((headers, body),) = state.requests

    assert (final["status"], final["error"]["code"]) == ("expired", "expired")
    assert json.loads(body) == {"job_id": job_id, "status": "expired", "error": final["error"]}
    assert body == answer, "the failure body, byte for byte"
    assert verify(body, SECRET, headers["x-visionq-signature"])
