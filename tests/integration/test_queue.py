"""The task message visionq writes itself (`jobs/queue.py`): what Celery's own `send_task` publishes, and what a
real worker runs."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import redis

from factories import cat_variants
from integration.records import create, new_record
from integration.stack import wait_terminal
from tests_support import CAT_CLASSES
from visionq.jobs import keys
from visionq.jobs.queue import CLASSIFY_TASK, task_message
from visionq.settings import Settings
from visionq.wire.states import Priority
from visionq.worker.celery_app import create_celery_app

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
        for priority in Priority:
            step = priority.broker_priority
            celery.send_task(CLASSIFY_TASK, args=["a-job"], queue=queue, priority=step)
            [published] = client.lrange(keys.priority_list(queue, step), 0, -1)
            client.delete(keys.priority_list(queue, step))

            assert _comparable(task_message("a-job", queue=queue, broker_priority=step)) == _comparable(published)
    finally:
        celery.close()
        client.close()


def test_the_task_id_is_the_job_id_and_the_trace_context_travels_in_the_headers() -> None:
    message = json.loads(task_message("j-1", queue="q", broker_priority=3, headers={"traceparent": "00-ab-cd-01"}))
    assert (message["headers"]["id"], message["properties"]["correlation_id"]) == ("j-1", "j-1")
    assert message["headers"]["traceparent"] == "00-ab-cd-01"
    assert json.loads(base64.b64decode(message["body"]))[0] == ["j-1"]


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
