"""Turns: which one of the worker processes does a periodic pass that one of them is enough for (requeueing
lost messages, sweeping images).

A turn is a lease for one pass, not a mutex: it is never released, it lapses. The process that takes it does
the pass, and every process (that one too) is refused until `seconds` later, so the pass runs about once per
interval across all workers, whichever of them gets there first. A process that dies mid-pass holds nothing
that needs cleaning up.
"""

from __future__ import annotations

from redis import Redis


def take_turn(redis: Redis, name: str, owner: str, seconds: float) -> bool:
    """Take the turn `name` (a lock key of jobs/keys.py) for `seconds`, as `owner` (a worker id, to see who has
    it); False when another pass already holds it."""
    return bool(redis.set(name, owner, nx=True, px=int(seconds * 1000)))
