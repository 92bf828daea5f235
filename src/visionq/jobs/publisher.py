"""Publishing task messages to a Celery broker apart from job state (`VISIONQ_BROKER_URL`: RabbitMQ, or another
Redis), through kombu, Celery's own messaging library.

With the broker on the job-state Redis, a job's record and its message are written in one Lua step
(`scripts.SUBMIT`). Apart, no step spans both servers, so the job-state side keeps an outbox: the submit records the
job in `visionq:queue:{queue}:unpublished` in the same step that makes it, the API publishes its message and takes
it off the outbox (`scripts.PUBLISHED`), and the queue keeper publishes again whatever stayed there (the API died
between the two, or the broker was away): a job made is a job queued, however late. A message published twice is
not run twice: every publication has its own message id, and only the job's current one runs (jobs/queue.py).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from kombu import Connection, Exchange, Queue

from visionq.jobs.keys import PRIORITY_SEPARATOR
from visionq.jobs.queue import AMQP_MAX_PRIORITY, REPLY_TO, amqp_priority, task_parts
from visionq.wire.states import PRIORITY_STEPS

#: kombu's Redis transport options for visionq's queues: one list per priority step, `queue:step` (as the workers').
REDIS_OPTIONS: dict[str, Any] = {"priority_steps": PRIORITY_STEPS, "sep": PRIORITY_SEPARATOR}
#: Seconds to connect to the broker before a publish counts as failed; the outbox keeps the job for a later pass.
PUBLISH_TIMEOUT = 5
#: Seconds after a failed publish during which requests leave their jobs to the outbox at once, instead of each
#: waiting out the broker's time-outs; the queue keeper's passes go on trying, and the first success ends it.
AWAY_FOR = 5.0


class BrokerAway(ConnectionError):
    """The broker failed a publish moments ago: this one was not tried."""


def is_amqp(url: str) -> bool:
    """Whether `url` names an AMQP broker (RabbitMQ)."""
    return url.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}


def broker_queue(name: str, url: str) -> Queue:
    """The declaration of queue `name` on the broker at `url`, exactly as the workers' Celery app declares it (a
    direct exchange of the queue's name, routing key the name; on AMQP, `x-max-priority`): a declaration that
    differed would be refused by RabbitMQ (PRECONDITION_FAILED)."""
    arguments = {"x-max-priority": AMQP_MAX_PRIORITY} if is_amqp(url) else None
    return Queue(name, Exchange(name), routing_key=name, queue_arguments=arguments)


class Publisher:
    """Publishes classification messages to the broker at `url`, from any thread (one connection, one publish at a
    time: a publish takes a millisecond, and kombu's connections are not thread-safe).

    >>> publisher = Publisher("amqp://guest:guest@rabbit:5672//")          # doctest: +SKIP
    >>> publisher.publish("job-1", queue="visionq", broker_priority=6, message_id="m1")  # doctest: +SKIP
    """

    def __init__(self, url: str, *, transport_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.amqp = is_amqp(url)
        options = {} if self.amqp else dict(REDIS_OPTIONS)
        if self.amqp:
            options["confirm_publish"] = True  # a publish returns once RabbitMQ has the message
        options.update(transport_options or {})
        self._connection = Connection(url, transport_options=options, connect_timeout=PUBLISH_TIMEOUT)
        self._lock = threading.Lock()
        self._declared: set[str] = set()
        self._away_until = 0.0

    def publish(
        self,
        job_id: str,
        *,
        queue: str,
        broker_priority: int,
        message_id: str | None = None,
        headers: dict[str, str] | None = None,
        in_request: bool = True,
    ) -> None:
        """Publish the task message taking `job_id` on `queue` at `broker_priority` (a Redis priority step; mapped to
        AMQP's order on RabbitMQ). Raises kombu's connection errors once its retries are spent; `in_request`, raises
        BrokerAway without trying while a publish failed less than AWAY_FOR seconds ago."""
        if in_request and time.monotonic() < self._away_until:
            raise BrokerAway("the broker failed a publish moments ago")
        body, message_headers = task_parts(job_id, message_id=message_id, headers=headers)
        declaration = broker_queue(queue, self.url)
        try:
            self._send(body, message_headers, job_id, queue, broker_priority, declaration)
        except Exception:
            self._away_until = time.monotonic() + AWAY_FOR
            raise
        self._away_until = 0.0

    def _send(
        self,
        body: bytes,
        message_headers: dict[str, object],
        job_id: str,
        queue: str,
        broker_priority: int,
        declaration: Queue,
    ) -> None:
        with self._lock:
            producer = self._connection.Producer()
            producer.publish(
                body,
                exchange="",
                routing_key=queue,
                content_type="application/json",
                content_encoding="utf-8",
                headers=message_headers,
                priority=amqp_priority(broker_priority) if self.amqp else broker_priority,
                correlation_id=job_id,
                reply_to=REPLY_TO,
                delivery_mode=2,
                declare=[] if queue in self._declared else [declaration],
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.2},
            )
            self._declared.add(queue)

    def ping(self) -> None:
        """Raise kombu's connection error unless the broker answers."""
        with self._lock:
            self._connection.ensure_connection(max_retries=1, timeout=PUBLISH_TIMEOUT)

    def close(self) -> None:
        with self._lock:
            self._connection.release()
