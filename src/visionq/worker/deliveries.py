"""What a callbacks worker process (`visionq worker --callbacks`) holds, and how it delivers one callback.

Finished jobs with a callback URL land in the `visionq:callbacks:due` sorted set (scored by when their next
attempt is due) in the same atomic step that finishes them. This process's housekeeping thread queues the
due ones as `deliver_callback` tasks on the callbacks queue; each task makes one attempt, records it in the
job's delivery log, and on failure puts the job back in the set for later. Retries therefore wait in Redis,
not as Celery ETA messages, and survive restarts of every worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import httpx
from celery import Celery
from redis import RedisError

from visionq.callbacks.delivery import Attempt, backoff, deliver
from visionq.connections import shards, sync_redis
from visionq.jobs import keys
from visionq.jobs.callbacks import CallbackQueue
from visionq.jobs.records import JobRecord
from visionq.settings import Settings
from visionq.telemetry import trace_context
from visionq.wire.states import JobStatus

log = logging.getLogger(__name__)

DELIVER_TASK = "visionq.deliver_callback"
#: Due callbacks queued per housekeeping pass.
QUEUE_BATCH = 100
#: Seconds between housekeeping passes (each renews this process's heartbeat, jobs/callbacks.py).
TICK = 0.5
#: Outcomes after which no attempt follows.
FINAL = frozenset({"delivered", "refused"})


class DeliveryWorker:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        if settings.callback_secret is None:
            raise RuntimeError("a callbacks worker needs VISIONQ_CALLBACK_SECRET to sign what it delivers")
        self.settings = settings
        self.celery = celery
        self.secret = settings.callback_secret.get_secret_value()
        self.callbacks = CallbackQueue(sync_redis(settings), shards(settings))
        self.http = httpx.Client(timeout=settings.callback_timeout, follow_redirects=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="visionq-callbacks", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("callbacks worker ready", extra={"queue": self.settings.callback_queue})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=TICK + self.settings.redis_timeout)
        self.http.close()

    def _run(self) -> None:
        name = f"{socket.gethostname()}:{os.getpid()}"
        while not self._stop.wait(TICK):
            try:
                self.callbacks.announce(name)
                self.queue_due()
            except RedisError as exc:
                log.warning("callbacks not queued, Redis unreachable: %s", exc)

    def queue_due(self, now: float | None = None) -> int:
        """Queue a delivery task for each job whose callback attempt is due; returns how many."""
        queued = 0
        for job_id in self.callbacks.due(now or time.time(), QUEUE_BATCH):
            if not self.callbacks.claim(job_id):  # another callbacks worker took it
                continue
            traceparent = self.callbacks.traceparent(job_id)
            try:
                with trace_context(traceparent):  # the callback joins the job's trace
                    self.celery.send_task(DELIVER_TASK, args=[job_id], queue=self.settings.callback_queue)
            except Exception:
                self.callbacks.reschedule(job_id, time.time())
                raise
            queued += 1
        return queued

    def attempt(self, job_id: str) -> Attempt | None:
        """Make the next delivery attempt of the job's callback; None when there is nothing (left) to do."""
        if job_id.startswith(keys.BATCH_PREFIX):  # a batch's: its final status body
            batch = self.callbacks.read_batch(job_id)
            if batch is None:
                log.warning("callback dropped: the batch has expired", extra={"job_id": job_id})
                return None
            url, body, past = batch
        else:
            job = self.callbacks.read(job_id)
            if job is None:
                log.warning("callback dropped: the job has expired", extra={"job_id": job_id})
                return None
            record, result, past = job
            if record.callback_url is None:
                return None
            url = record.callback_url
            body = result if record.status is JobStatus.COMPLETED and result else _failure_json(record)
        if any(entry["outcome"] in FINAL for entry in past):
            return None
        attempt = deliver(
            self.http,
            url,
            body,
            job_id=job_id,
            attempt=len(past) + 1,
            secret=self.secret,
            allow_private=self.settings.callback_allow_private,
        )
        retry_at = None
        if attempt.outcome == "failed" and attempt.attempt < self.settings.callback_max_attempts:
            retry_at = time.time() + backoff(self.settings.callback_backoff, attempt.attempt)
        self.callbacks.record_attempt(job_id, attempt.to_json(), keep=self.settings.result_ttl, retry_at=retry_at)
        log.info(
            "callback attempt",
            extra={
                "job_id": job_id,
                "attempt": attempt.attempt,
                "outcome": attempt.outcome,
                "status": attempt.status_code,
            },
        )
        return attempt


def _failure_json(record: JobRecord) -> bytes:
    return record.failure_body().model_dump_json().encode()


_current: DeliveryWorker | None = None


def install(worker: DeliveryWorker) -> None:
    global _current
    _current = worker


def current() -> DeliveryWorker:
    if _current is None:
        raise RuntimeError("the callbacks worker was not set up: start it with `visionq worker --callbacks`")
    return _current
