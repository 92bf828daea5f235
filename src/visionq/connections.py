"""Redis clients built from settings: asyncio for the API, blocking for workers and the CLI."""

from __future__ import annotations

import time

import redis
import redis.asyncio
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from visionq.settings import Settings

#: Retries of one Redis command on a dropped connection before the error reaches the caller.
COMMAND_RETRIES = 2


def async_redis(settings: Settings) -> redis.asyncio.Redis:
    """The API's client: text replies, bounded time-outs, a pooled connection per request."""
    return redis.asyncio.Redis.from_url(
        settings.broker_url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES),
        health_check_interval=30,
    )


def sync_redis(settings: Settings) -> redis.Redis:
    """The worker's client: byte replies (images are bytes), the same time-outs."""
    return redis.Redis.from_url(
        settings.broker_url,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), COMMAND_RETRIES),
        health_check_interval=30,
    )


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
