"""Redis clients built from settings: asyncio for the API, blocking for workers and the CLI; for a
Sentinel-managed Redis, clients of the master the sentinels name, which find the new one after a failover. And the
publisher to a broker apart from job state."""

from __future__ import annotations

import time
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from visionq.jobs.keys import CLUSTER_SHARDS, Shards
from visionq.jobs.publisher import Publisher, is_amqp
from visionq.settings import Settings

#: Retries of one Redis command on a dropped connection before the error reaches the caller.
COMMAND_RETRIES = 2


def broker_publisher(settings: Settings) -> Publisher | None:
    """The publisher to the broker when it is apart from job state; None when a job's message is written in the step
    that makes the job."""
    if not settings.broker_apart:
        return None
    options: dict[str, Any] = {}
    if settings.broker.startswith("sentinel://"):
        options["master_name"] = settings.redis_sentinel_master
    if not is_amqp(settings.broker):
        options |= {"socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout}
    return Publisher(settings.broker, transport_options=options)


def shards(settings: Settings) -> Shards:
    """How job state is laid out: one shard on one Redis, CLUSTER_SHARDS over a Redis Cluster's masters."""
    return Shards(CLUSTER_SHARDS if settings.redis_cluster else 1)


def async_redis(settings: Settings) -> redis.asyncio.Redis:
    """The API's client: text replies, bounded time-outs, a pooled connection per request. On a Redis Cluster, a
    cluster client (typed as a client of one Redis: the commands visionq sends are the same)."""
    options = _options(settings) | {"decode_responses": True}
    if settings.redis_cluster:
        cluster = redis.asyncio.cluster.RedisCluster.from_url(settings.state_url, **_cluster_options(options))
        return cast(redis.asyncio.Redis, cluster)
    if settings.redis_sentinels:
        sentinels = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses, **_sentinel_options(settings)
        )
        client: redis.asyncio.Redis = sentinels.master_for(
            settings.redis_sentinel_master or "", redis_class=_AsyncSentinelMaster, **options
        )
        return client
    return redis.asyncio.Redis.from_url(settings.state_url, **options)


def sync_redis(settings: Settings, *, decode: bool = False) -> redis.Redis:
    """The worker's client: byte replies (images are bytes) unless `decode`, the same time-outs."""
    options = _options(settings) | {"decode_responses": decode}
    if settings.redis_cluster:
        cluster = redis.cluster.RedisCluster.from_url(settings.state_url, **_cluster_options(options))
        return cast(redis.Redis, cluster)
    if settings.redis_sentinels:
        sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses, **_sentinel_options(settings)
        )
        master: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_master or "", redis_class=_SentinelMaster, **options
        )
        return master
    return redis.Redis.from_url(settings.state_url, **options)


class _AsyncSentinelMaster(redis.asyncio.Redis):
    """A client of the master the sentinels name, which closes its connections to the sentinels with its own."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        # Only the client that owns the pool closes the sentinels: a single-connection client made from it
        # (`client()`, for WAIT) shares them, and closing them there broke the next master lookup.
        closes_pool = close_connection_pool or (close_connection_pool is None and self.auto_close_connection_pool)
        await super().aclose(close_connection_pool)
        if closes_pool:
            await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


class _SentinelMaster(redis.Redis):
    """The blocking `_AsyncSentinelMaster`."""

    def close(self) -> None:
        closes_pool = self.auto_close_connection_pool
        super().close()
        if closes_pool:
            self.connection_pool.sentinel_manager.close()  # type: ignore[attr-defined]


def _options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": settings.redis_timeout,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES),
        "health_check_interval": 30,
    }
    if settings.redis_sentinels:  # the URL's host is not used: the sentinels name the master
        url = urlsplit(settings.state_url)
        options |= {"db": int(url.path.strip("/") or 0), "username": url.username, "password": url.password}
        options = {name: unquote(value) if isinstance(value, str) else value for name, value in options.items()}
    return options


def _cluster_options(options: dict[str, Any]) -> dict[str, Any]:
    """A cluster client retries on its own (and refreshes its map of the slots after a failover)."""
    return {name: value for name, value in options.items() if name not in ("retry", "health_check_interval")}


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """Options for the connections to the sentinels themselves (the master's come from `_options`)."""
    timeouts = {"socket_timeout": settings.redis_timeout, "socket_connect_timeout": settings.redis_timeout}
    return timeouts | {"sentinel_kwargs": dict(timeouts)}


def wait_for_redis(url: str, timeout: float) -> None:
    """Block until Redis at `url` answers PING, or raise ConnectionError after `timeout` seconds."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"Redis at {url} did not answer within {timeout:.0f}s: {exc}") from exc
                time.sleep(0.05)
    finally:
        client.close()
