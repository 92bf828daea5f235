"""Worker heartbeats: each worker process announces itself in Redis (what it serves, what it has loaded), and
the API, `/metrics` and the CLI read who is alive. The one place that knows their keys and fields.

`visionq:worker:{id}` holds one process's last beat and expires after `HEARTBEAT_MISSES` intervals;
`visionq:workers` scores each process by when its beat goes stale, for counting live workers in one command.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, Field
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from visionq.jobs import keys


class Heartbeat(BaseModel):
    """One worker process's last beat."""

    worker_id: str
    hostname: str
    pid: int
    queue: str
    started_at: str
    seen_at: str
    models: list[str] = Field(default_factory=list)
    """The models it has loaded (refs)."""
    load_seconds: dict[str, float] = Field(default_factory=dict)
    """How long each of them took to load."""
    exports: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """How each model it loaded runs, by ref: `runtime`; `agreement` and `sample` of a built-in's verified export
    (None for a model run as it is); `weights_sha256` and `runtime_version` of the weights file that runs."""
    jobs_done: int = 0
    pool: str | None = None
    """The Celery pool it runs its jobs in (`auto` resolved); None from a worker of an earlier version."""
    concurrency: int | None = None
    """The jobs this process runs at once (1 for each prefork child)."""

    def to_redis(self) -> dict[str, str | int]:
        fields: dict[str, str | int] = {}
        for name, value in self.model_dump().items():
            fields[name] = orjson.dumps(value).decode() if isinstance(value, list | dict) else value
        return fields

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> Heartbeat:
        parsed: dict[str, Any] = dict(fields)
        for name in ("models", "load_seconds", "exports"):
            if name in parsed:
                parsed[name] = orjson.loads(parsed[name])
        return cls.model_validate(parsed)


def beat(redis: Redis, heartbeat: Heartbeat, *, interval: float, shards: keys.Shards | None = None) -> None:
    """Announce `heartbeat`'s process as alive for `HEARTBEAT_MISSES` × `interval` seconds: in its own hash, and in
    every shard's count of live workers (the submit step of each shard reads its own, for estimates)."""
    name = keys.worker(heartbeat.worker_id)
    stale_at = time.time() + interval * keys.HEARTBEAT_MISSES
    with redis.pipeline(transaction=False) as pipe:
        pipe.hset(name, mapping=heartbeat.to_redis())  # type: ignore[arg-type]
        pipe.expire(name, int(interval * keys.HEARTBEAT_MISSES) + 1)
        for shard in (shards or keys.Shards()).names:
            pipe.zadd(keys.workers_seen(shard), {heartbeat.worker_id: stale_at})
        pipe.execute()


def forget(redis: Redis, worker_id: str, shards: keys.Shards | None = None) -> None:
    """The process is going away: no longer count it."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.worker(worker_id))
        for shard in (shards or keys.Shards()).names:
            pipe.zrem(keys.workers_seen(shard), worker_id)
        pipe.execute()


async def live(redis: AsyncRedis) -> list[Heartbeat]:
    """Every worker process whose heartbeat has not expired, by id. (A client with `decode_responses`.)"""
    names = [name async for name in redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=100)]
    if not names:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(name)
        beats = await pipe.execute()
    return sorted(
        (Heartbeat.from_redis(fields) for fields in beats if fields and "worker_id" in fields),
        key=lambda heartbeat: heartbeat.worker_id,
    )


def on_host(redis: Redis, hostname: str, *, callbacks: bool = False) -> bool:
    """Whether a worker process (or a callbacks worker) on `hostname` is alive."""
    prefix = keys.deliverer("") if callbacks else keys.worker("")
    return any(redis.scan_iter(match=f"{prefix}{hostname}:*", count=1000))
