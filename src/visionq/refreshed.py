"""A value read now and then from elsewhere (Redis), refreshed in the background so that a request never waits for
the read once the first one is done.

An API process checks some things on every submit that move slowly: which model `latest` means, how full Redis is.
Read at most once a second, they still cost a round trip on the submit path of one request in every second: at one
job per second, every job's. `Refreshed` answers with the value it has and, once that value is due, reads it again
in a task of its own; only the first read, and a read after `stale_after` without a successful refresh (Redis
unwell), is waited for, so that its error reaches the caller as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from visionq.cancelling import cancel

log = logging.getLogger(__name__)

T = TypeVar("T")


class Refreshed(Generic[T]):
    """`read()`'s value, read again in the background once it is `every` seconds old.

    >>> latest = Refreshed(lambda: redis.get("visionq:models:latest"), every=1.0)   # doctest: +SKIP
    >>> await latest.get()                                                          # doctest: +SKIP
    """

    def __init__(self, read: Callable[[], Awaitable[T]], *, every: float, stale_after: float | None = None) -> None:
        self._read = read
        self.every = every
        self.stale_after = 5 * every if stale_after is None else stale_after
        self._kept: tuple[T, float] | None = None  # the value, and when it was read
        self._generation = 0  # moved on by set(): a read begun before it is not kept
        self._refresh: asyncio.Task[None] | None = None

    async def get(self) -> T:
        kept = self._kept
        if kept is None or time.monotonic() - kept[1] >= self.stale_after:
            return await self._read_now()
        if time.monotonic() - kept[1] >= self.every and self._refresh is None:
            self._refresh = asyncio.create_task(self._refresh_quietly())
        return kept[0]

    def set(self, value: T) -> None:
        """A value known here first (this process just wrote it): kept, and a read already under way, which may
        have begun before the write, is not."""
        self._kept = (value, time.monotonic())
        self._generation += 1

    async def aclose(self) -> None:
        if self._refresh is not None:
            await cancel(self._refresh)

    async def _read_now(self) -> T:
        generation = self._generation
        value = await self._read()
        if generation != self._generation and self._kept is not None:
            return self._kept[0]
        self._kept = (value, time.monotonic())
        return value

    async def _refresh_quietly(self) -> None:
        try:
            await self._read_now()
        except Exception:  # the first get() past stale_after reads in the open, and its caller sees the error
            log.debug("a background refresh failed", exc_info=True)
        finally:
            self._refresh = None
