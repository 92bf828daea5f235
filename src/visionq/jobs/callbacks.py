"""CallbackQueue: the callbacks worker's side of callback deliveries in Redis (worker/deliveries.py).

A finished job (or batch, as `batch:{id}`) with a callback URL is put in the `visionq:callbacks:due` sorted set,
scored by when its next attempt is due, by the same atomic step that finishes it. Callbacks workers take due jobs
off the set (ZREM decides which one of them gets a job), append each attempt to the job's delivery log, and put a
job whose attempt failed back in the set for later: retries wait here, not as Celery ETA messages, so they survive
restarts of every worker.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import orjson
from redis import Redis

from visionq.jobs import batches, keys
from visionq.jobs.records import JobRecord

#: Seconds a callbacks worker's heartbeat lasts; the worker renews it on every housekeeping tick, so a
#: process that stops is forgotten this long after (`visionq:deliverer:{name}`, read by heartbeats.on_host).
DELIVERER_HEARTBEAT_TTL = 10


class CallbackJob(NamedTuple):
    """What one delivery attempt needs from Redis: the job, its stored result, its past attempts."""

    record: JobRecord
    result: bytes | None
    """The job's result JSON as stored (None once gone, or for a job that did not complete)."""
    past: list[dict[str, Any]]
    """Its delivery log, oldest attempt first."""


class CallbackQueue:
    """The due set, the jobs' delivery logs and the callbacks workers' heartbeats, on the worker's sync client."""

    def __init__(self, redis: Redis, shards: keys.Shards | None = None) -> None:
        self.redis = redis
        self.shards = shards or keys.Shards()

    def announce(self, name: str) -> None:
        """Say that the callbacks worker `name` (`host:pid`) is alive, for `DELIVERER_HEARTBEAT_TTL` seconds."""
        self.redis.set(keys.deliverer(name), b"1", ex=DELIVERER_HEARTBEAT_TTL)

    def due(self, until: float, limit: int) -> list[str]:
        """Up to `limit` jobs whose next attempt is due by `until`, the longest due first. Still in the set:
        `claim` each before queuing it."""
        due = [
            (score, _text(raw))
            for shard in self.shards.names
            for raw, score in cast(
                "list[tuple[bytes | str, float]]",
                self.redis.zrangebyscore(keys.callbacks_due(shard), "-inf", until, start=0, num=limit, withscores=True),
            )
        ]
        return [name for _, name in sorted(due)[:limit]]

    def claim(self, job_id: str) -> bool:
        """Take the job off the due set; False when another callbacks worker took it first."""
        return bool(self.redis.zrem(keys.callbacks_due(self.shards.of(job_id)), job_id))

    def traceparent(self, job_id: str) -> str | None:
        """The trace the job was submitted in, for its callback to join; None when it has none."""
        raw = self.redis.hget(keys.status(job_id), "traceparent")
        return _text(raw) if raw else None

    def reschedule(self, job_id: str, at: float) -> None:
        """Put the job back in the due set, its next attempt due at `at` (a claimed job that could not be
        queued goes back due now)."""
        self.redis.zadd(keys.callbacks_due(self.shards.of(job_id)), {job_id: at})

    def read(self, job_id: str) -> CallbackJob | None:
        """The job, its result and its delivery log, read together; None when the job has expired."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.status(job_id))
            pipe.get(keys.result(job_id))
            pipe.lrange(keys.deliveries(job_id), 0, -1)
            fields, result, history = pipe.execute()
        if not fields:
            return None
        record = JobRecord.from_redis({_text(k): _text(v) for k, v in fields.items()})
        return CallbackJob(record, result, [orjson.loads(entry) for entry in history])

    def read_batch(self, member: str) -> tuple[str, bytes, list[dict[str, Any]]] | None:
        """A finished batch's (member `batch:{id}` of the due set) callback URL, its final status body and its
        delivery log; None when the batch has expired."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(member)
            pipe.lrange(keys.deliveries(member), 0, -1)
            fields, history = pipe.execute()
        text = {_text(k): _text(v) for k, v in fields.items()}
        if "callback_url" not in text:
            return None
        return text["callback_url"], orjson.dumps(batches.status_body(text)), [orjson.loads(e) for e in history]

    def record_attempt(self, job_id: str, attempt: dict[str, Any], *, keep: int, retry_at: float | None) -> None:
        """Append `attempt` to the job's delivery log (kept `keep` seconds, as long as the job's result) and,
        with `retry_at`, put the job back in the due set for then. One transaction: a failed attempt is never
        logged without its retry (the callback would be dropped), nor retried unlogged (the log numbers the
        attempts and caps them)."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(keys.deliveries(job_id), orjson.dumps(attempt))
            pipe.expire(keys.deliveries(job_id), keep)
            if retry_at is not None:
                pipe.zadd(keys.callbacks_due(self.shards.of(job_id)), {job_id: retry_at})
            pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
