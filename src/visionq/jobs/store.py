"""JobStore: the API's side of job state in Redis (create, read, give up).

Workers change jobs through `JobTracker` (tracker.py); both run the same Lua scripts
(scripts.py), whose key and argument lists are built once here.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from visionq import errors
from visionq.jobs import keys, scripts
from visionq.jobs.idempotency import IDEMPOTENCY_TTL
from visionq.jobs.records import JobRecord, isoformat, utcnow
from visionq.jobs.states import PRIORITY_STEPS, JobStatus

ScriptCall = tuple[list[str], list[str | int | float]]
#: The status-hash field naming the queue a job was handed to: set by `JobStore.confirm` once its message is in
#: the broker and its client is about to be told 202. Workers run only jobs that have it.
QUEUED_FIELD = "queued"


def claim_call(job_id: str, worker_id: str, deadline: float) -> ScriptCall:
    return (
        [keys.status(job_id), keys.LIVE_JOBS, keys.events(job_id), keys.PROCESSING_JOBS],
        [isoformat(utcnow()), worker_id, deadline],
    )


def advance_call(job_id: str, stage: str, progress: int, deadline: float) -> ScriptCall:
    return (
        [keys.status(job_id), keys.LIVE_JOBS, keys.events(job_id)],
        [stage, progress, isoformat(utcnow()), deadline],
    )


def complete_call(
    job_id: str, result_json: bytes | str, completed_at: str, result_ttl: int, processing_seconds: float
) -> ScriptCall:
    body = result_json.decode() if isinstance(result_json, bytes) else result_json
    return (
        [
            keys.status(job_id),
            keys.result(job_id),
            keys.image(job_id),
            keys.LIVE_JOBS,
            keys.events(job_id),
            keys.JOB_STATS,
            keys.PROCESSING_JOBS,
            keys.ARCHIVE_OUTBOX,
            keys.CALLBACKS_DUE,
        ],
        [body, completed_at, result_ttl, processing_seconds, time.time()],
    )


def finish_call(
    job_id: str,
    status: JobStatus,
    code: str,
    message: str,
    result_ttl: int,
    dead_letter_ttl: int = 0,
    *,
    unconfirmed_only: bool = False,
) -> ScriptCall:
    """Fail or cancel a live job; with `dead_letter_ttl`, it also lands in the dead-letter queue, kept
    (image included) that long so that an admin can retry it. With `unconfirmed_only`, only while the API has
    not confirmed the job (see `JobStore.confirm`)."""
    return (
        [
            keys.status(job_id),
            keys.image(job_id),
            keys.LIVE_JOBS,
            keys.events(job_id),
            keys.JOB_STATS,
            keys.PROCESSING_JOBS,
            keys.ARCHIVE_OUTBOX,
            keys.CALLBACKS_DUE,
            keys.DEAD_LETTERS,
        ],
        [status.value, code, message, isoformat(utcnow()), result_ttl, time.time(), dead_letter_ttl,
         int(unconfirmed_only)],
    )  # fmt: skip


def give_up_call(job_id: str, result_ttl: int) -> ScriptCall:
    """Fail a job unrun that its API never confirmed (its submit was refused), unless it is confirmed by now."""
    message = "the submit that made this job was refused before the job was confirmed as queued; it was not run"
    return finish_call(job_id, JobStatus.FAILED, "broker_unavailable", message, result_ttl, unconfirmed_only=True)


class JobStore:
    """Job state as the API reads and writes it.

    >>> store = JobStore(redis, result_ttl=3600, image_ttl=1800)      # doctest: +SKIP
    >>> await store.create(record, image_bytes)                        # doctest: +SKIP
    >>> (await store.get(record.job_id)).status                       # doctest: +SKIP
    <JobStatus.PENDING: 'pending'>
    """

    def __init__(self, redis: Redis, *, result_ttl: int, image_ttl: int) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.image_ttl = image_ttl
        self._finish = redis.register_script(scripts.FINISH_UNSUCCESSFULLY)
        self._revive = redis.register_script(scripts.REVIVE)
        self._confirm = redis.register_script(scripts.CONFIRM)

    async def create(self, record: JobRecord, image: bytes, *, queue: str) -> float | None:
        """Store a new pending job and its image in one transaction, and mark it for the archive. The job's
        deadline in the live set is its image's expiry: a job still queued then can never run. Returns the
        estimated wait of the job on `queue` (see `estimate_wait`), read in the same round trip.

        No worker runs the job until it is confirmed (`confirm`), once its message is in the broker."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.status(record.job_id), mapping=record.to_redis())  # type: ignore[arg-type]
            pipe.expire(keys.status(record.job_id), self.image_ttl + self.result_ttl)
            pipe.set(keys.image(record.job_id), image, ex=self.image_ttl)
            pipe.zadd(keys.LIVE_JOBS, {record.job_id: time.time() + self.image_ttl})
            pipe.zadd(keys.ARCHIVE_OUTBOX, {record.job_id: time.time()})
            _read_queue_ahead(pipe, queue, record.priority.broker_priority)
            answers = await pipe.execute()
        return _estimate(answers[5:])

    async def confirm(self, job_id: str, queue: str, *, remember: tuple[str, bytes] | None = None) -> bool:
        """Confirm the job as queued on `queue` once its message is in the broker: from now on it may run. With
        `remember` (an Idempotency-Key's entry name and its answer), the key is given its answer in the same
        step (see `scripts.CONFIRM`). False when the job is no longer live: a worker that got its message gave
        up waiting for this, and it will never run."""
        job_keys: list[str] = [keys.status(job_id)]
        args: list[str | bytes | int] = [queue]
        if remember is not None:
            job_keys.append(remember[0])
            args += [remember[1], IDEMPOTENCY_TTL]
        return bool(await self._confirm(keys=job_keys, args=args))

    async def settle_refused(self, job_id: str, reservation: str | None) -> None:
        """Make certain what became of a submit that was answered 503 after its job was stored, with Redis
        away: a job not confirmed is failed unrun (it never runs), and then its request's Idempotency-Key
        `reservation` (an entry name) is freed for the client's retry. A confirmed job is left as it is: it
        runs, and the key holds its answer. Raises RedisError while Redis is still away."""
        job_keys, args = give_up_call(job_id, self.result_ttl)
        await self._finish(keys=job_keys, args=args)
        if reservation is not None and not await self.redis.hexists(keys.status(job_id), QUEUED_FIELD):
            await self.redis.delete(reservation)

    async def get(self, job_id: str) -> JobRecord | None:
        fields = await self.redis.hgetall(keys.status(job_id))
        return JobRecord.from_redis({str(k): str(v) for k, v in fields.items()}) if fields else None

    async def require(self, job_id: str) -> JobRecord:
        """The job, or JobNotFound (404) when the id is unknown or has expired."""
        record = await self.get(job_id)
        if record is None:
            raise errors.JobNotFound(f"no job {job_id!r}: the id is unknown or its result has expired")
        return record

    async def get_deliveries(self, job_id: str) -> list[bytes]:
        """The callback delivery attempts recorded for the job, oldest first, each a JSON object."""
        return [
            item.encode() if isinstance(item, str) else item
            for item in await self.redis.lrange(keys.deliveries(job_id), 0, -1)
        ]

    async def get_result(self, job_id: str) -> bytes | None:
        """The stored result JSON of a completed job, exactly as the worker wrote it."""
        raw: bytes | str | None = await self.redis.get(keys.result(job_id))
        return raw.encode() if isinstance(raw, str) else raw

    async def cancel(self, job_id: str) -> bool:
        """Cancel a live job: a queued one is never processed, a running one stops at its next stage.
        False if the job is unknown or already terminal."""
        job_keys, args = finish_call(job_id, JobStatus.CANCELLED, "cancelled", "cancelled by request", self.result_ttl)
        return bool(await self._finish(keys=job_keys, args=args))

    async def fail(self, job_id: str, code: str, message: str) -> bool:
        """Fail a live job (for example one the broker refused); False if it was already terminal."""
        job_keys, args = finish_call(job_id, JobStatus.FAILED, code, message, self.result_ttl)
        return bool(await self._finish(keys=job_keys, args=args))

    async def dead_letters(self) -> list[tuple[JobRecord, float]]:
        """The dead-letter queue, oldest first: each job and when it landed there (unix seconds)."""
        entries = await self.redis.zrange(keys.DEAD_LETTERS, 0, -1, withscores=True)
        records = [(await self.get(str(entry[0])), float(entry[1])) for entry in entries if isinstance(entry, tuple)]
        return [(record, score) for record, score in records if record is not None]

    async def revive(self, job_id: str) -> int:
        """Put a dead-lettered job back to pending (the caller queues it): 1, or 0 if it is not in the
        dead-letter queue, or -1 if its image has expired."""
        deadline = time.time() + self.image_ttl
        return int(
            await self._revive(
                keys=[keys.status(job_id), keys.image(job_id), keys.LIVE_JOBS, keys.events(job_id),
                      keys.DEAD_LETTERS, keys.ARCHIVE_OUTBOX],
                args=[isoformat(utcnow()), deadline, self.image_ttl + self.result_ttl, self.image_ttl, time.time()],
            )
        )  # fmt: skip

    async def purge_dead_letters(self, job_ids: list[str] | None = None) -> int:
        """Drop dead-lettered jobs (all of them by default) and their images; their failure stays visible."""
        if job_ids is None:
            job_ids = [str(job_id) for job_id in await self.redis.zrange(keys.DEAD_LETTERS, 0, -1)]
        if not job_ids:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.DEAD_LETTERS, *job_ids)
            for job_id in job_ids:
                pipe.delete(keys.image(job_id))
                pipe.expire(keys.status(job_id), self.result_ttl)
            removed, *_ = await pipe.execute()
        return int(removed)

    async def estimate_wait(self, queue: str, broker_priority: int) -> float | None:
        """Seconds until a job queued now at `broker_priority` should be done: the jobs ahead of it
        (its priority and higher) and itself, times the mean processing time, shared among live workers.
        None until some job has completed, or while no worker is live."""
        async with self.redis.pipeline(transaction=False) as pipe:
            _read_queue_ahead(pipe, queue, broker_priority)
            return _estimate(await pipe.execute())


def _read_queue_ahead(pipe: Pipeline, queue: str, broker_priority: int) -> None:
    """Queue in `pipe` what `_estimate` needs: the lists of `broker_priority` and higher, the mean processing
    time, the live workers."""
    for step in PRIORITY_STEPS:
        if step <= broker_priority:
            pipe.llen(keys.priority_list(queue, step))
    pipe.hmget(keys.JOB_STATS, ["completed", "processing_seconds"])
    pipe.zcount(keys.WORKERS_SEEN, time.time(), "+inf")


def _estimate(answers: list[Any]) -> float | None:
    *depths, (completed, seconds), workers = answers
    if not completed or not workers:
        return None
    mean = float(seconds or 0.0) / int(completed)
    return float((sum(depths) + 1) * mean / int(workers))
