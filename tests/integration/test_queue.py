"""The task message visionq writes itself (`jobs/queue.py`): what Celery's own `send_task` publishes, and what a
real worker runs."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import httpx
import redis
from kombu import Connection

from factories import cat_variants
from integration.records import QUEUE, create, new_record
from integration.stack import wait_terminal
from tests_support import CAT_CLASSES
from visionq.jobs import keys
from visionq.jobs.publisher import Publisher, broker_queue
from visionq.jobs.queue import CLASSIFY_TASK, amqp_priority, task_message
from visionq.jobs.tracker import STALE_MESSAGE, JobTracker
from visionq.settings import Settings
from visionq.wire.states import Priority
from visionq.worker.celery_app import create_celery_app

#: The machine's RabbitMQ (CI's too); VISIONQ_TEST_AMQP_URL names another.
RABBITMQ = os.environ.get("VISIONQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: Fields that differ between any two messages: ids, the publisher's name and reply queue, the delivery tag.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "origin", "reply_to"}


def _comparable(raw: bytes | str) -> dict[str, Any]:
    message = json.loads(raw)
    return {
        "body": json.loads(base64.b64decode(message["body"])),
        "envelope": {k: v for k, v in message.items() if k not in {"body", "headers", "properties"}},
        "headers": {k: v for k, v in message["headers"].items() if k not in PER_MESSAGE},
        "properties": {k: v for k, v in message["properties"].items() if k not in PER_MESSAGE},
        "header_names": sorted(message["headers"]),
        "property_names": sorted(message["properties"]),
    }


def test_the_message_is_what_celery_s_send_task_publishes(redis_url: str) -> None:
    queue = f"visionq-test-message-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    celery = create_celery_app(Settings(redis_url=redis_url, queue=queue))
    try:
        # A job's first message (no id), and one it was published again with (an id).
        for priority, message_id in zip(Priority, [None, "m-1", None, "m-2"], strict=True):
            step = priority.broker_priority
            kwargs = {} if message_id is None else {"message": message_id}
            celery.send_task(CLASSIFY_TASK, args=["a-job"], kwargs=kwargs, queue=queue, priority=step)
            [published] = client.lrange(keys.priority_list(queue, step), 0, -1)
            client.delete(keys.priority_list(queue, step))
            ours = task_message("a-job", queue=queue, broker_priority=step, message_id=message_id)

            assert _comparable(ours) == _comparable(published)
    finally:
        celery.close()
        client.close()


def test_the_task_id_is_the_job_id_and_the_trace_context_travels_in_the_headers() -> None:
    message = json.loads(
        task_message("j-1", queue="q", broker_priority=3, message_id="m-1", headers={"traceparent": "00-ab-cd-01"})
    )
    first = json.loads(task_message("j-1", queue="q", broker_priority=3))
    assert json.loads(base64.b64decode(first["body"]))[:2] == [["j-1"], {}], "a job's first message has no id"
    assert (message["headers"]["id"], message["properties"]["correlation_id"]) == ("j-1", "j-1")
    assert message["headers"]["traceparent"] == "00-ab-cd-01"
    assert json.loads(base64.b64decode(message["body"]))[:2] == [["j-1"], {"message": "m-1"}]


def test_a_real_worker_runs_a_job_made_by_the_one_step_submit(stack: tuple[Settings, Any, Any]) -> None:
    settings, _, server = stack
    record = new_record().model_copy(update={"image_format": "JPEG", "top_k": 3})
    made = create(settings.state_url, record, cat_variants()["jpeg"], queue=settings.queue)

    with httpx.Client(base_url=server.url, timeout=30) as api:
        final = wait_terminal(api, record.job_id)
        result = api.get(f"/result/{record.job_id}").json()

    assert made.accepted
    assert (final["status"], final["attempts"]) == ("completed", 1)
    assert result["predictions"][0]["class_id"] in CAT_CLASSES
    assert len(result["predictions"]) == 3


def test_a_message_the_job_was_published_again_after_is_dropped_unrun(redis_url: str) -> None:
    record = new_record()
    create(redis_url, record, queue=QUEUE)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    tracker = JobTracker(client, worker_id="test:1", result_ttl=60, stale_after=20, queue=QUEUE)
    first = client.hget(keys.status(record.job_id), "message")  # none: a first message has no id
    tracker.requeue(record.job_id, QUEUE, Priority.NORMAL)  # its first message thought lost
    second = client.hget(keys.status(record.job_id), "message")
    assert second is not None
    stale = tracker.take(record.job_id, None)  # the first message turns up after all
    after_stale = client.hget(keys.status(record.job_id), "status")
    current = tracker.take(record.job_id, str(second))
    redelivered = tracker.take(record.job_id, str(second))  # the same message again: a dead worker's
    client.close()

    assert first is None
    assert (stale.claim.attempts, stale.record) == (STALE_MESSAGE, None)
    assert after_stale == "pending", "the stale copy wrote nothing"
    assert current.claim.attempts == 1
    assert redelivered.claim.attempts == 2, "a redelivery keeps its message id, and runs"


def test_the_message_published_to_rabbitmq_is_what_celery_s_send_task_publishes() -> None:
    queue = f"visionq-test-amqp-message-{uuid.uuid4().hex[:8]}"
    settings = Settings(redis_url="redis://127.0.0.1:6379/0", broker_url=RABBITMQ, queue=queue)
    celery = create_celery_app(settings)
    publisher = Publisher(RABBITMQ)
    with Connection(RABBITMQ) as connection:
        declared = broker_queue(queue, RABBITMQ)(connection.channel())
        declared.declare()
        try:
            for priority in Priority:
                step = priority.broker_priority
                celery.send_task(  # Celery passes a priority through as it is: on AMQP, the highest first
                    CLASSIFY_TASK,
                    args=["a-job"],
                    kwargs={"message": "m-1"},
                    queue=queue,
                    priority=amqp_priority(step),
                    task_id="a-job",
                )
                publisher.publish("a-job", queue=queue, broker_priority=step, message_id="m-1")
                theirs, ours = declared.get(no_ack=True), declared.get(no_ack=True)
                assert theirs is not None
                assert ours is not None

                assert _amqp_comparable(ours) == _amqp_comparable(theirs)
                assert _amqp_comparable(ours)["properties"]["priority"] == amqp_priority(step), "the highest first"
        finally:
            declared.delete()
            publisher.close()
            celery.close()


def _amqp_comparable(message: Any) -> dict[str, Any]:
    return {
        "body": json.loads(message.body),
        "content_type": message.content_type,
        "headers": {k: v for k, v in message.headers.items() if k not in PER_MESSAGE},
        "properties": {
            k: v for k, v in message.properties.items() if k not in PER_MESSAGE and k != "application_headers"
        },
    }
