"""The classification queue's wire format: the Celery task message, written by visionq itself.

The API does not hand a job to Celery's synchronous publisher: the job's record and its message go to Redis in
one Lua step (`scripts.SUBMIT`), from the API's own event loop, so a job exists if and only if it is queued.
The message must therefore be exactly what kombu's Redis transport puts on a queue for
`send_task(CLASSIFY_TASK, args=[job_id], queue=..., priority=...)` (task protocol 2, JSON, body in base64), and
what a Celery worker consumes; `tests/integration/test_queue.py` checks both against Celery's own.

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
_REPLY_TO = str(uuid.uuid4())


def task_message(
    job_id: str,
    *,
    queue: str,
    broker_priority: int,
    task: str = CLASSIFY_TASK,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """The kombu envelope of one task message taking `job_id`, ready to LPUSH on the queue's priority list
    (`keys.priority_list(queue, broker_priority)`). `headers` adds message headers (the trace context). The
    task id is the job id: a job has one message, and its redeliveries keep it."""
    args = [job_id]
    body = orjson.dumps([args, {}, _EMBED])
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
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        **(headers or {}),
    }
    return orjson.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": message_headers,
            "properties": {
                "correlation_id": job_id,
                "reply_to": _REPLY_TO,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": broker_priority,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )
