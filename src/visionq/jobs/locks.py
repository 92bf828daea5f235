"""Turns: which one of several processes does a periodic pass that one of them is enough for (workers requeueing
lost messages and sweeping images; API processes expiring and promoting queued jobs).

A turn is a lease for one pass, not a mutex: it is never released, it lapses. The process that takes it does
the pass, and every process (that one too) is refused until `seconds` later, so the pass runs about once per
interval across all workers, whichever of them gets there first. A process that dies mid-pass holds nothing
that needs cleaning up.
"""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis


def take_turn(redis: Redis, name: str, owner: str, seconds: float) -> bool:
    """Take the turn `name` (a lock key of jobs/keys.py) for `seconds`, as `owner` (a worker id, to see who has
    it); False when another pass already holds it."""
    return bool(redis.set(name, owner, nx=True, px=int(seconds * 1000)))


async def take_turn_async(redis: AsyncRedis, name: str, owner: str, seconds: float) -> bool:
    """`take_turn` for an asyncio client (the API's passes)."""
    return bool(await redis.set(name, owner, nx=True, px=int(seconds * 1000)))
