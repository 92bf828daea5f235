"""The classification queue's wire format: the Celery task message, written by visionq itself.

The API does not hand a job to Celery's synchronous publisher: the job's record and its message go to Redis in
one Lua step (`scripts.SUBMIT`), from the API's own event loop, so a job exists if and only if it is queued.
The message must therefore be exactly what kombu's Redis transport puts on a queue for
`send_task(CLASSIFY_TASK, args=[job_id], queue=..., priority=...)` (task protocol 2, JSON, body in base64), and
what a Celery worker consumes; `tests/integration/test_queue.py` checks both against Celery's own.

A job's status hash names the one message that may run it. Its first message carries no id (the task's `message`
keyword argument is absent, and so is the hash's field: nothing more on the hot path); publishing the job again
(promoted past its priority, republished from the outbox of a broker apart, requeued after a loss) gives it a new
id, in the message and in the hash, so any earlier copy still in the broker is dropped, unrun, when a worker reaches
it (`scripts.TAKE`). A redelivery of the same message keeps its id, or its lack of one, and runs.

Only the task's name and this format are shared with the worker package; the API imports nothing of it.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Mapping

import orjson

#: The classification task's name, as `worker/tasks.py` registers it.
CLASSIFY_TASK = "visionq.classify_image"
#: Celery's "embed" part of a protocol-2 body: no callbacks, errbacks, chain or chord.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
#: Where a message says it came from (Celery: `gen<pid>@<host>`).
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
#: The reply queue Celery names in every message of one publisher; unused here (no result backend).
REPLY_TO = str(uuid.uuid4())
#: The highest AMQP priority visionq uses (RabbitMQ's `x-max-priority` of its queues).
AMQP_MAX_PRIORITY = 9


def new_message_id() -> str:
    """A fresh message id (see the module's docstring)."""
    return uuid.uuid4().hex[:16]


def amqp_priority(broker_priority: int) -> int:
    """The AMQP priority of a Redis priority step: kombu's Redis transport serves step 0 first, RabbitMQ serves the
    highest number first.

    >>> [amqp_priority(step) for step in (0, 3, 6, 9)]
    [9, 6, 3, 0]
    """
    return AMQP_MAX_PRIORITY - broker_priority


def task_parts(
    job_id: str, *, message_id: str | None = None, task: str = CLASSIFY_TASK, headers: Mapping[str, str] | None = None
) -> tuple[bytes, dict[str, object]]:
    """The body (JSON) and headers of the task message taking `job_id`, as Celery's task protocol 2 has them: what
    every broker carries. The task id is the job id: a job's redeliveries and republications keep it."""
    args = [job_id]
    kwargs = {} if message_id is None else {"message": message_id}
    body = orjson.dumps([args, kwargs, _EMBED])
    message_headers: dict[str, object] = {
        "lang": "py",
        "task": task,
        "id": job_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": job_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": repr(kwargs),
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        **(headers or {}),
    }
    return body, message_headers


def task_message(
    job_id: str,
    *,
    queue: str,
    broker_priority: int,
    message_id: str | None = None,
    task: str = CLASSIFY_TASK,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The kombu envelope of one task message taking `job_id`, ready to LPUSH on the queue's priority list
    (`keys.priority_list(queue, broker_priority)`). `headers` adds message headers (the trace context)."""
    body, message_headers = task_parts(job_id, message_id=message_id, task=task, headers=headers)
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": message_headers,
            "properties": {
                "correlation_id": job_id,
                "reply_to": REPLY_TO,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": broker_priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
