"""How many replicas must hold a write before the API answers for it, and the wait for them (Redis `WAIT`).

Redis replicates asynchronously: a master that dies a moment after a write may take the write with it, and a
replica promoted by Sentinel would not know the job that a `202` promised. `WAIT n timeout` on the connection
that wrote blocks until n replicas have acknowledged everything that connection wrote, so a job confirmed so
survives the loss of its master. It costs one round trip and the replication delay (well under a millisecond on
a LAN), and only where replicas exist.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from visionq.refreshed import Refreshed

#: Seconds between two reads of the master's replica count (auto mode).
REFRESH_EVERY = 5.0


class Unconfirmed(RedisError):
    """Fewer replicas than required acknowledged a write in time: it may be lost with its master."""


class ReplicaPolicy:
    """The number of replicas a write must reach: `required` when set, else 1 once the master has been seen with
    replicas (kept from then on: a replica that is down is a reason to refuse, not to stop waiting), else 0. Pure:
    the callers read the master's replica count when `due` says so, and `note` it."""

    def __init__(self, required: int | None) -> None:
        self._fixed = required
        self._seen_replicas = False
        self._read_at = float("-inf")

    def due(self, ahead: float = 0.0) -> bool:
        """Whether the master's replica count should be read now, or within `ahead` seconds (auto mode, none seen
        yet, not read lately)."""
        if self._fixed is not None or self._seen_replicas:
            return False
        return time.monotonic() - self._read_at >= REFRESH_EVERY - ahead

    def note(self, info: dict[str, object]) -> None:
        """Take in the master's `INFO replication`."""
        self._read_at = time.monotonic()
        # A cluster client answers with each node's INFO, by node: the masters' replicas count.
        infos = [info] if "connected_slaves" in info or not info else [v for v in info.values() if isinstance(v, dict)]
        seen = any(int(str(one.get("connected_slaves", 0))) > 0 for one in infos)
        self._seen_replicas = self._seen_replicas or seen

    @property
    def required(self) -> int:
        if self._fixed is not None:
            return self._fixed
        return 1 if self._seen_replicas else 0


def check(acknowledged: int, required: int, timeout: float) -> None:
    """Raise Unconfirmed when fewer than `required` replicas acknowledged (WAIT's answer)."""
    if acknowledged < required:
        raise Unconfirmed(f"{acknowledged} of the {required} replicas required confirmed the write within {timeout:g}s")


class Replication:
    """The API's side: how many replicas a new job must reach, and the wait for them.

    >>> replication = Replication(redis, required=None, timeout=1.0)  # doctest: +SKIP
    >>> await replication.required_now()                              # doctest: +SKIP
    1
    """

    def __init__(self, redis: Redis, *, required: int | None, timeout: float) -> None:
        self.redis = redis
        self.timeout = timeout
        self.policy = ReplicaPolicy(required)
        # Read in the background once due, so that a submit waits for `INFO replication` only the first time.
        self._count = Refreshed(self._read, every=REFRESH_EVERY)

    async def required_now(self) -> int:
        if self.policy.due():
            await self._count.get()
        return self.policy.required

    async def aclose(self) -> None:
        await self._count.aclose()

    async def _read(self) -> None:
        self.policy.note(await self.redis.info("replication"))

    async def confirm(self, connection: Redis, required: int) -> None:
        """Wait until `required` replicas hold what `connection` wrote, or raise Unconfirmed after the timeout."""
        check(int(await connection.wait(required, int(self.timeout * 1000))), required, self.timeout)
