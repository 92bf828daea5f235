"""The counters of the API's rate limits: one per client (address or principal) and window, shared by every API
process. The limits themselves (windows, quotas, whose address counts) are the API's (`api/ratelimit.py`)."""

from __future__ import annotations

from redis.asyncio import Redis

from visionq.jobs import keys

# KEYS: the window's counter. ARGV: its TTL (the window's length). Raised and given its expiry in one step, so the
# count is exact across API processes and a counter never outlives its window.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RateCounters:
    def __init__(self, redis: Redis) -> None:
        self._count = redis.register_script(_COUNT)

    async def count(self, who: str, window: int, *, seconds: int) -> int:
        """Count one more request of `who` in the `window`-th window of `seconds`; the count so far, this one in."""
        return int(await self._count(keys=[keys.rate_limit(who, window)], args=[seconds]))
