"""Backpressure (HLD §5.2, §8): refuse new jobs with 503 `queue_full` before Redis fills up.

Two bounds, checked on every submit before anything is stored:
- the jobs waiting in the queue (all priorities), against `max_queued_jobs` (checked in the submit's own step,
  `scripts.SUBMIT`);
- Redis's memory, against `max_redis_memory`, or 90% of Redis's own `maxmemory` when that is unset (here).
Each priority may fill only its share of a bound (`Priority.shed_share`: `urgent` all of it, `low` 80%), so
under load the lowest priority is refused first. Redis's memory is read once a second per API process, in the
background (`Refreshed`): `INFO memory` is heavier than a command, and memory moves slowly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from visionq import errors
from visionq.jobs.store import JobStore
from visionq.refreshed import Refreshed
from visionq.settings import Settings
from visionq.wire.states import Priority

#: Share of Redis's `maxmemory` above which submits are refused, when no explicit bound is set.
MAXMEMORY_SHARE = 0.9
#: Seconds a reading of Redis's memory is trusted.
MEMORY_READ_EVERY = 1.0
#: `Retry-After` when the queue is full but no estimate of its draining is known.
DEFAULT_RETRY_AFTER = 5


class Backpressure:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self._memory = Refreshed(self._read_memory, every=MEMORY_READ_EVERY)

    async def check(self, priority: Priority, estimate_wait: Callable[[], Awaitable[float | None]]) -> None:
        """Raise `QueueFull` when Redis's memory is over the bound of `priority`, with the queue's
        `estimate_wait()` (seconds until a job queued now would be done) as its Retry-After."""
        used, bound = await self._redis_memory()
        limit = bound * priority.shed_share
        if not bound or used < limit:
            return
        problem = f"the job store is nearly full ({used // 2**20} MiB of {bound // 2**20} MiB); try again later"
        raise queue_full(problem, await estimate_wait())

    async def aclose(self) -> None:
        await self._memory.aclose()

    async def _redis_memory(self) -> tuple[int, int]:
        """Redis's used memory and the bound it is held to (0: none)."""
        return await self._memory.get()

    async def _read_memory(self) -> tuple[int, int]:
        used, maxmemory = await self.store.memory()
        return used, self.settings.max_redis_memory or int(maxmemory * MAXMEMORY_SHARE)


def queue_full(problem: str, wait: float | None) -> errors.QueueFull:
    """The refusal of a submit while the queue is full, with the estimated wait as its Retry-After."""
    return errors.QueueFull(problem, retry_after=max(1, round(wait)) if wait else DEFAULT_RETRY_AFTER)
