"""What admins ask of the models, kept in Redis for every process: which model `latest` means, which models
workers keep loaded, and which they drop. Workers read it on their housekeeping tick (`ModelControl.apply`).

An unload is a request, numbered per model: each worker drops the model once per new number, and a worker
that starts later does not replay the requests made before it (numbers, not clocks, so that machines whose
clocks disagree still agree).
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from visionq.inference.catalog import Catalog
from visionq.inference.registry import ModelRegistry
from visionq.jobs import keys

log = logging.getLogger(__name__)

#: Seconds an API process trusts its last read of the admin's `latest`.
LATEST_CACHE_SECONDS = 1.0


class ModelControl:
    """One worker process's side: bring its registry in line with what admins asked."""

    def __init__(self, redis: Redis, catalog: Catalog, registry: ModelRegistry) -> None:
        self.redis = redis
        self.catalog = catalog
        self.registry = registry
        self._unloads_seen: dict[str, int] | None = None

    def apply(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.MODELS_LOAD)
            pipe.hgetall(keys.MODELS_UNLOAD)
            wanted, raw_unloads = pipe.execute()
        unloads = {_text(ref): int(number) for ref, number in raw_unloads.items()}
        seen, self._unloads_seen = self._unloads_seen, unloads
        if seen is not None:  # on the first pass, only learn where the numbers stand
            for ref, number in unloads.items():
                if number > seen.get(ref, 0) and self.registry.unload(ref):
                    log.info("model unloaded on request", extra={"model_version": ref})
        for ref in sorted(map(_text, wanted)):
            if ref in self.catalog.refs() and ref not in self.registry.loaded():
                try:
                    self.registry.get(self.catalog.resolve(ref))
                except Exception:  # a model that cannot load must not stop the worker's housekeeping
                    log.exception("model %s could not be loaded on request", ref)
                else:
                    log.info("model loaded on request", extra={"model_version": ref})


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    async with redis.pipeline(transaction=True) as pipe:
        pipe.srem(keys.MODELS_LOAD, ref)
        pipe.hincrby(keys.MODELS_UNLOAD, ref, 1)
        await pipe.execute()
