"""What admins ask of the models, kept in Redis for every process: which model `latest` means, which models
workers keep loaded, and which they drop (each unload a numbered request: see inference/control.py)."""

from __future__ import annotations

import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from visionq.jobs import keys

#: Seconds an API process trusts its last read of the admin's `latest`.
LATEST_CACHE_SECONDS = 1.0


class LatestChoice:
    """The API's side of `latest`: an admin's choice in Redis, read at most once a second per process."""

    def __init__(self, redis: AsyncRedis) -> None:
        self.redis = redis
        self._value: str | None = None
        self._read_at = -LATEST_CACHE_SECONDS

    async def get(self) -> str | None:
        """The model `latest` means now, or None for VISIONQ_DEFAULT_MODEL."""
        if time.monotonic() - self._read_at >= LATEST_CACHE_SECONDS:
            raw = await self.redis.get(keys.MODELS_LATEST)
            self._value = _text(raw) if raw else None
            self._read_at = time.monotonic()
        return self._value

    async def set(self, ref: str | None) -> None:
        if ref is None:
            await self.redis.delete(keys.MODELS_LATEST)
        else:
            await self.redis.set(keys.MODELS_LATEST, ref)
        self._value, self._read_at = ref, time.monotonic()


async def request_load(redis: AsyncRedis, ref: str) -> None:
    """Ask every worker to load `ref` and keep it loaded."""
    await redis.sadd(keys.MODELS_LOAD, ref)


async def request_unload(redis: AsyncRedis, ref: str) -> None:
    """Ask every worker to drop `ref` now (a later job for it loads it again)."""
    async with redis.pipeline(transaction=False) as pipe:  # two keys, two slots on a cluster: each change stands alone
        pipe.srem(keys.MODELS_LOAD, ref)
        pipe.hincrby(keys.MODELS_UNLOAD, ref, 1)
        await pipe.execute()


async def kept_loaded(redis: AsyncRedis) -> set[str]:
    """The models every worker was asked to keep loaded."""
    return {_text(ref) for ref in await redis.smembers(keys.MODELS_LOAD)}


def read(redis: Redis) -> tuple[set[str], dict[str, int]]:
    """A worker's read of the asks: the models to keep loaded, and each model's number of unload requests."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.MODELS_LOAD)
        pipe.hgetall(keys.MODELS_UNLOAD)
        wanted, unloads = pipe.execute()
    return {_text(ref) for ref in wanted}, {_text(ref): int(number) for ref, number in unloads.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
