"""Rate limits in Redis: fixed one-minute windows per client address and per principal (API key or external
user; HLD §3.3).

Each window is one counter per client in Redis (`jobs/ratelimits.py`), raised and given its expiry in one step,
so the count is exact across any number of API processes sharing the Redis. The client address is
the TCP peer's, unless the peer is a trusted proxy: only then is `X-Forwarded-For` read, from the right,
skipping the trusted hops, so a client cannot choose its own address by sending the header.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from visionq import errors
from visionq.auth.principals import Principal
from visionq.jobs.ratelimits import RateCounters
from visionq.jobs.records import ANONYMOUS
from visionq.settings import Settings
from visionq.wire.states import Role

#: Seconds in a window.
WINDOW = 60

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Quota:
    """What the `RateLimit-*` headers of a response say: the tightest limit that applied."""

    limit: int
    remaining: int
    reset: int
    exceeded: str | None = None
    """What went over its limit (`this address`, `this API key`), or None."""

    def refusal(self) -> errors.RateLimited:
        return errors.RateLimited(
            f"{self.exceeded} made more than {self.limit} requests this minute; try again in {self.reset} s",
            retry_after=self.reset,
        )

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class RateLimiter:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.counters = RateCounters(redis)
        self.per_ip = settings.rate_limit_ip
        self.per_role = {Role.USER: settings.rate_limit_user, Role.ADMIN: settings.rate_limit_admin}
        self.trusted = trusted_networks(settings.trusted_proxies)

    async def check_address(self, connection: HTTPConnection) -> Quota | None:
        """Count the request against its client address."""
        address = client_address(connection, self.trusted)
        return await self._take(f"ip:{address}", self.per_ip, "this address")

    async def check_principal(self, principal: Principal) -> Quota | None:
        """Count the request against who makes it: its API key (and the tokens made from it), or the external
        user of an OpenID Connect token. Nobody is counted while authentication is off."""
        if principal.id == ANONYMOUS:
            return None
        whose = "this API key" if principal.key_id is not None else "this user"
        return await self._take(principal.id, self.per_role[principal.role], whose)

    async def _take(self, who: str, limit: int, whose: str) -> Quota | None:
        if limit == 0:
            return None
        now = time.time()
        window = int(now // WINDOW)
        count = await self.counters.count(who, window, seconds=WINDOW)
        reset = max(1, math.ceil((window + 1) * WINDOW - now))
        return Quota(limit, max(0, limit - count), reset, exceeded=whose if count > limit else None)


def trusted_networks(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in entries]


def client_address(connection: HTTPConnection, trusted: list[Network]) -> str:
    """The client's address: the peer's, or, from a trusted proxy, the last untrusted X-Forwarded-For hop."""
    peer = connection.client.host if connection.client else "unknown"
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in connection.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed(hops):
        if hop and not _is_trusted(hop, trusted):
            return hop
    return peer


def _is_trusted(address: str, trusted: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
