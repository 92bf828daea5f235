"""Refreshed: a slow-moving value read in the background, so that a request waits for the first read only."""

from __future__ import annotations

import asyncio

import pytest

from visionq.refreshed import Refreshed


class Source:
    """What a `Refreshed` reads: a value that changes when told, reads counted, each read held until released."""

    def __init__(self) -> None:
        self.value = "a"
        self.reads = 0
        self.release = asyncio.Event()
        self.release.set()
        self.failing = False

    async def read(self) -> str:
        self.reads += 1
        value = self.value
        await self.release.wait()
        if self.failing:
            raise ConnectionError("Redis is away")
        return value


async def settle() -> None:
    """Let background tasks run to their next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_the_first_read_is_waited_for_and_the_value_is_kept_until_due() -> None:
    async def scenario() -> None:
        source = Source()
        kept = Refreshed(source.read, every=60.0)
        assert await kept.get() == "a"
        source.value = "b"
        assert [await kept.get() for _ in range(3)] == ["a", "a", "a"]
        assert source.reads == 1

    asyncio.run(scenario())


def test_a_due_value_is_answered_at_once_and_read_again_in_the_background() -> None:
    async def scenario() -> None:
        source = Source()
        kept = Refreshed(source.read, every=0.0, stale_after=60.0)
        await kept.get()
        source.value, source.release = "b", asyncio.Event()
        assert await kept.get() == "a", "answered with what it had, not after the read"
        assert await kept.get() == "a"
        await settle()
        assert source.reads == 2, "one refresh at a time"
        source.release.set()
        await settle()
        assert await kept.get() == "b"

    asyncio.run(scenario())


def test_a_failed_refresh_keeps_the_value_until_stale_then_the_caller_sees_the_error() -> None:
    async def scenario() -> None:
        source = Source()
        kept = Refreshed(source.read, every=0.0, stale_after=60.0)
        await kept.get()
        source.failing = True
        assert await kept.get() == "a"
        await settle()
        assert await kept.get() == "a", "a refresh that failed is quiet"

        stale = Refreshed(source.read, every=0.0, stale_after=0.0)
        with pytest.raises(ConnectionError):
            await stale.get()

    asyncio.run(scenario())


def test_a_value_set_here_outlives_a_read_begun_before_it() -> None:
    async def scenario() -> None:
        source = Source()
        kept = Refreshed(source.read, every=0.0, stale_after=60.0)
        await kept.get()
        source.release = asyncio.Event()
        await kept.get()  # starts a refresh, which reads "a" and is held
        await settle()
        kept.set("mine")
        source.release.set()
        await settle()
        assert await kept.get() == "mine"
        await kept.aclose()

    asyncio.run(scenario())
