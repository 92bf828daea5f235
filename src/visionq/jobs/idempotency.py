"""Idempotency-Key: the same key from the same principal within 24 h gives back the original job.

A key is reserved (SET NX) before the job is made and holds the request's fingerprint; once the job is
accepted, the reservation is replaced by the original `202` body, in the same step that makes and queues the
job (`JobStore.submit`), and later requests with that key get it back as a `200`. The same key with a different
request, or while the first is still being handled, is a 409 `conflict` (the latter with `Retry-After`). A
request that fails before its job is made releases its key, so the client may retry it as it is; if it cannot
(Redis is away), it frees the key once Redis is back if the job was not made, and the reservation expires by
itself within a minute in any case.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from visionq import errors
from visionq.jobs import keys
from visionq.jobs.records import isoformat, parse_time

#: Seconds a key is remembered (API.md: 24 h).
IDEMPOTENCY_TTL = 24 * 3600
#: Seconds a reservation lives before its request has been answered. A request stores and queues its job in
#: well under this; if it fails and cannot release its key (Redis went away), the key frees itself.
RESERVATION_TTL = 60


def fingerprint(*parts: str | bytes) -> str:
    """A digest of what makes two requests the same request: the image and every form field."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))  # lengths keep ("ab", "c") apart from ("a", "bc")
        digest.update(data)
    return digest.hexdigest()


class IdempotencyKeys:
    def __init__(self, redis: Redis, shards: keys.Shards | None = None) -> None:
        self.redis = redis
        self.shards = shards or keys.Shards()
        """A key's entry lives in the shard its name picks, and its job is made there (keys.Shards)."""

    async def reserve(self, owner: str, key: str, request: str) -> dict[str, Any] | None:
        """Claim `key` for this request (its fingerprint); None when the caller should make the job, or the
        original answer's body to give back. Raises Conflict for another request under the same key."""
        name = keys.idempotency(owner, key, self.shards)
        claim = orjson.dumps({"request": request, "accepted": None})
        if await self.redis.set(name, claim, nx=True, ex=RESERVATION_TTL):
            return None
        stored = await self.redis.get(name)
        if stored is None:  # expired between the two commands: it is free again
            return await self.reserve(owner, key, request)
        entry = orjson.loads(stored)
        if entry["request"] != request:
            raise errors.Conflict(
                "this Idempotency-Key was used with a different request in the last 24 hours; "
                "use a new key for a new request"
            )
        if entry["accepted"] is None:
            raise errors.Conflict(
                "a request with this Idempotency-Key is still being handled; retry it in a moment", retry_after=1
            )
        accepted: dict[str, Any] = entry["accepted"]
        if entry.get("wait"):  # the estimate the original answer gave, written with it (`scripts.SUBMIT`)
            done = parse_time(accepted["created_at"]) + timedelta(seconds=float(entry["wait"]))
            accepted["estimated_completion"] = isoformat(done)
        return accepted

    async def release(self, owner: str, key: str) -> None:
        await self.redis.delete(keys.idempotency(owner, key, self.shards))

    def name(self, owner: str, key: str) -> str:
        """The Redis entry of `owner`'s `key`."""
        return keys.idempotency(owner, key, self.shards)

    def shard(self, owner: str, key: str) -> str:
        """The shard the job made under `owner`'s `key` belongs in: its entry's."""
        return self.shards.of(self.name(owner, key))


def answer_entry(
    owner: str, key: str, request: str, accepted: dict[str, Any], shards: keys.Shards
) -> tuple[str, bytes]:
    """The entry that keeps the answer given to the request that reserved `key` (for the rest of its 24 h):
    its name and value, for `JobStore.submit` to write in the step that makes the job."""
    return keys.idempotency(owner, key, shards), orjson.dumps({"request": request, "accepted": accepted})
