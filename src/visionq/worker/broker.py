"""kombu's Redis transport, with one fault of its reconnection mended.

When a worker's broker connection drops (Redis restarted), Celery collects and then closes the old
connection. Collecting detaches the transport from its connection (`transport.client = None`); if closing
the channel then tries to put the unacknowledged messages back, kombu builds a new connection pool from
that missing client and raises AttributeError. Celery does not take that for a connection error, calls
it unrecoverable and the whole worker exits, leaving its queue unserved (seen in CI, in the Redis-restart
chaos test). Here a detached channel raises a connection error instead, which the close ignores as it
does every other: the worker reconnects, and the messages it held come back to the queue after the
visibility timeout, as those of a dead worker do.

It also keeps one synchronous client per channel: kombu builds a new `redis.Redis` for each unacknowledged-message
bookkeeping step (two per job: the delivery and the ack), and building one (its ~200 response callbacks) costs
~60 µs of CPU, nearly what the round trip itself costs. A client is a stateless front of its connection pool, so one
serves them all.

kombu takes the transport of a `<name>+socket://` URL (a Unix socket) from its prefix, whatever `broker_transport`
says, so `redis+socket://` (the embedded Redis of `visionq serve`) got kombu's own transport and neither change:
`broker_url` names this one there instead.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

#: What `broker_transport` names, so that both the API and the workers use this transport.
TRANSPORT = f"{__name__}:Transport"
#: The same for a Sentinel-managed Redis (`sentinel://` broker URLs).
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
#: The name of this transport in a URL's prefix (kombu's registry of transports by name, where third-party
#: transports go): `visionq-redis+socket:///path/redis.sock?virtual_host=0`.
URL_PREFIX = "visionq-redis"
TRANSPORT_ALIASES.setdefault(URL_PREFIX, TRANSPORT)


def broker_url(url: str) -> str:
    """The broker URL as Celery gets it: a Unix socket's `redis+socket://` names this transport."""
    return URL_PREFIX + url.removeprefix("redis") if url.startswith("redis+socket://") else url


class Channel(kombu_redis.Channel):
    _sync_client: tuple[Any, Any] | None = None
    """The pool and the client of it that `_create_client` hands out."""

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # a new one after a reconnection: the client follows it
        if self._sync_client is None or self._sync_client[0] is not pool:
            self._sync_client = (pool, super()._create_client())  # type: ignore[misc]
        return self._sync_client[1]

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed; reconnecting")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (it asks the sentinels for the master on each new connection) with the mend."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
