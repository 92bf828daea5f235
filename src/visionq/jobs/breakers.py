"""Circuit breakers per model version, kept in Redis so that every worker and API process sees the same.

closed ──(a load failure, or `breaker_failures` failed jobs in a row)──▶ open
open ──(`breaker_cooldown` seconds later, one job is let through as a probe)──▶ half_open
half_open ──(the probe succeeds)──▶ closed;  half_open ──(it fails)──▶ open again

While a model's breaker is open, its jobs go to the fallback model when the client allows it, and fail at
once with `model_unavailable` otherwise (HLD §8.1 "model fallback", §8.2 "circuit breakers").
"""

from __future__ import annotations

import threading
import time
from enum import StrEnum

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from visionq.jobs import keys
from visionq.jobs.steps import Steps


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> int:
        """`visionq_model_breaker_state`: 0 closed, 1 half-open, 2 open."""
        return {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}[self]


# KEYS: breaker hash, probe lock. ARGV: now, failures that open it, reason, 1 to open at once (a load failure).
_FAILED = """
redis.call('DEL', KEYS[2])
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[4] == '1' or failures >= tonumber(ARGV[2]) or state ~= 'closed' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[1], 'reason', ARGV[3])
  return 1
end
return 0
"""


# KEYS: breaker hash, probe lock. Closes the breaker; writes nothing when it is closed with no failures counted
# (nearly every success), so a healthy model costs no writes.
_SUCCEEDED = """
if redis.call('HGET', KEYS[1], 'state') == 'closed' and redis.call('HGET', KEYS[1], 'failures') == '0' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0)
redis.call('HDEL', KEYS[1], 'reason', 'opened_at')
redis.call('DEL', KEYS[2])
return 1
"""


#: Seconds a worker process trusts a breaker it read closed, rather than read it for every job: a breaker that
#: another process opens is seen that much later here (one this process opens, at once). The worker's
#: housekeeping reads the breakers of the models it serves again before then (`refresh`), so that a job never
#: waits for the read; this bound holds when the housekeeping falls behind.
CLOSED_TRUSTED_FOR = 1.0
#: Seconds after its last job a model's breaker is no longer refreshed in the background.
REFRESHED_WHILE_USED = 60.0


class Breakers:
    """The worker's side: ask before using a model, and report how it went."""

    def __init__(self, redis: Redis, *, failures: int, cooldown: float, enabled: bool = True) -> None:
        self.redis = redis
        self.enabled = enabled
        self.failures = failures
        self.cooldown = cooldown
        self._failed = redis.register_script(_FAILED)
        self._succeeded = redis.register_script(_SUCCEEDED)
        self._closed_until: dict[str, float] = {}
        self._used_at: dict[str, float] = {}  # when a job last asked for each model (for `refresh`)
        self._failures = 0  # failures counted here: a refresh that read across one trusts nothing it read
        self._trust = threading.Lock()  # the housekeeping's refresh against a job's failure, in a threads pool

    def allow(self, ref: str) -> bool:
        """Whether a job may use `ref` now: yes while closed; once open, no until the cool-down has passed,
        then yes for one job at a time (the probe) until a probe succeeds."""
        if not self.enabled:
            return True
        now = time.monotonic()
        self._used_at[ref] = now
        if now < self._closed_until.get(ref, 0.0):
            return True
        fields = {_text(k): _text(v) for k, v in self.redis.hgetall(keys.breaker(ref)).items()}
        state = BreakerState(fields.get("state", BreakerState.CLOSED))
        if state is BreakerState.CLOSED:
            self._closed_until[ref] = time.monotonic() + CLOSED_TRUSTED_FOR
            return True
        if time.time() - float(fields.get("opened_at", 0)) < self.cooldown:
            return False
        if not self.redis.set(keys.breaker_probe(ref), b"1", nx=True, ex=max(1, int(self.cooldown))):
            return False  # another job is probing
        self.redis.hset(keys.breaker(ref), "state", BreakerState.HALF_OPEN.value)
        return True

    def refresh(self, ahead: float) -> None:
        """Read again, in one round trip, the breakers of the models used lately, and trust those still closed
        for `ahead` seconds (the time until the next refresh, at most CLOSED_TRUSTED_FOR) more than
        CLOSED_TRUSTED_FOR: at one job a second, the read no longer comes on a job's path. A breaker found open is
        left to `allow` to read."""
        if not self.enabled:
            return
        now = time.monotonic()
        refs = [ref for ref, used in list(self._used_at.items()) if now - used < REFRESHED_WHILE_USED]
        for ref in set(self._used_at) - set(refs):
            self._used_at.pop(ref, None)
        if not refs:
            return
        failures = self._failures
        with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hget(keys.breaker(ref), "state")
            states = pipe.execute()
        # A housekeeping tick longer than the trust does not stretch it: the reads come back on the jobs' path.
        trusted_for = CLOSED_TRUSTED_FOR + min(ahead, CLOSED_TRUSTED_FOR)
        with self._trust:
            if failures != self._failures:  # a breaker this process opened meanwhile may have been read closed
                return
            for ref, state in zip(refs, states, strict=True):
                if state is None or _text(state) == BreakerState.CLOSED:
                    self._closed_until[ref] = now + trusted_for
                else:
                    self._closed_until.pop(ref, None)

    def failed(self, ref: str, reason: str, *, at_once: bool = False) -> bool:
        """Count a failure of `ref`; True if that opened (or kept open) its breaker."""
        if not self.enabled:
            return False
        with self._trust:
            self._failures += 1
            self._closed_until.pop(ref, None)
        opened = self._failed(
            keys=[keys.breaker(ref), keys.breaker_probe(ref)],
            args=[time.time(), self.failures, reason[:500], "1" if at_once else "0"],
        )
        return bool(opened)

    def succeeded(self, ref: str, *, steps: Steps | None = None) -> None:
        """A job of `ref` succeeded: the breaker closes and its count of failures in a row starts again.
        With `steps`, the update is queued there instead of sent."""
        if not self.enabled:
            return
        breaker_keys = [keys.breaker(ref), keys.breaker_probe(ref)]
        if steps is None:
            self._succeeded(keys=breaker_keys)
        else:
            steps.script(self._succeeded, breaker_keys, [])

    def reason(self, ref: str) -> str:
        return _text(self.redis.hget(keys.breaker(ref), "reason") or b"")


async def breaker_states(redis: AsyncRedis, *, closed_too: bool = False) -> dict[str, tuple[BreakerState, str]]:
    """Every model whose breaker is not closed (or every one that has a breaker): its state and why."""
    found: dict[str, tuple[BreakerState, str]] = {}
    async for name in redis.scan_iter(match=f"{keys.BREAKER_PREFIX}*", count=100):
        if str(name).endswith(keys.PROBE_SUFFIX):
            continue
        fields = await redis.hgetall(name)
        state = BreakerState(str(fields.get("state", BreakerState.CLOSED.value)))
        if closed_too or state is not BreakerState.CLOSED:
            found[str(name).removeprefix(keys.BREAKER_PREFIX).strip("{}")] = (state, str(fields.get("reason", "")))
    return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
