"""What admins ask of the models, kept in Redis for every process: which model `latest` means, which models
workers keep loaded, and which they drop (each unload a numbered request: see inference/control.py)."""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from visionq.jobs import keys
from visionq.refreshed import Refreshed

#: Seconds after which an API process reads the admin's `latest` again (in the background); a value twice as old is
#: never used, so a change reaches every API process within 2 s.
LATEST_CACHE_SECONDS = 1.0


class LatestChoice:
    """The API's side of `latest`: an admin's choice in Redis, read again in the background once a second per
    process (a submit never waits for it but the first)."""

    def __init__(self, redis: AsyncRedis) -> None:
        self.redis = redis
        self._choice = Refreshed(self._read, every=LATEST_CACHE_SECONDS, stale_after=2 * LATEST_CACHE_SECONDS)

    async def get(self) -> str | None:
        """The model `latest` means now, or None for VISIONQ_DEFAULT_MODEL."""
        return await self._choice.get()

    async def set(self, ref: str | None) -> None:
        if ref is None:
            await self.redis.delete(keys.MODELS_LATEST)
        else:
            await self.redis.set(keys.MODELS_LATEST, ref)
        self._choice.set(ref)

    async def aclose(self) -> None:
        await self._choice.aclose()

    async def _read(self) -> str | None:
        raw = await self.redis.get(keys.MODELS_LATEST)
        return _text(raw) if raw else None


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
