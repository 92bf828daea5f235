"""The broker transport against a real Redis: closing a connection that Celery has already collected, with a
message in hand, is a connection error the close ignores, not a crash (see `visionq.worker.broker`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from kombu import Connection

from visionq.embedded import EmbeddedRedis
from visionq.settings import Settings
from visionq.worker.broker import TRANSPORT, Channel
from visionq.worker.celery_app import create_celery_app

QUEUE = "visionq-test-broker"


@pytest.mark.parametrize(("transport", "survives"), [(None, False), (TRANSPORT, True)])
def test_closing_a_collected_connection_with_a_message_in_hand(
    redis_url: str, redis_client: redis.Redis, transport: str | None, survives: bool
) -> None:
    """kombu's own transport (None) shows the fault the test guards against: were it mended upstream, the
    workaround could go."""
    connection = Connection(redis_url, transport=transport)
    channel = connection.default_channel
    queue = connection.SimpleQueue(QUEUE)
    queue.put({"job": 1})
    message = queue.get(timeout=5)  # delivered and unacknowledged: closing the channel puts it back
    connection.transport.client = None  # as Connection.collect leaves it, on a connection lost

    try:
        if survives:
            connection.maybe_close_channel(channel)
        else:
            with pytest.raises(AttributeError):
                connection.maybe_close_channel(channel)
    finally:
        redis_client.delete(QUEUE)
        tag = str(message.delivery_tag)
        redis_client.hdel("unacked", tag)
        redis_client.zrem("unacked_index", tag)


def test_a_channel_keeps_one_synchronous_client_per_pool(redis_url: str, redis_client: redis.Redis) -> None:
    """kombu built a new client for each bookkeeping step of a delivery (two per job); ours keeps one per connection
    pool, through which the unacknowledged copy is still written and removed, and a new pool (after a
    reconnection) gets a client of its own."""
    connection = Connection(redis_url, transport=TRANSPORT)
    tag = ""
    try:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        client = channel._create_client()
        assert channel._create_client() is client
        queue = connection.SimpleQueue(QUEUE)
        queue.put({"job": 2})
        message = queue.get(timeout=5)
        tag = str(message.delivery_tag)
        assert redis_client.hexists("unacked", tag)
        message.ack()
        assert not redis_client.hexists("unacked", tag)
        assert redis_client.zscore("unacked_index", tag) is None

        channel._disconnect_pools()  # type: ignore[attr-defined]
        renewed = channel._create_client()
        assert renewed is not client
        assert renewed.connection_pool is channel.pool
        assert renewed.ping()
    finally:
        connection.close()
        redis_client.delete(QUEUE)
        if tag:
            redis_client.hdel("unacked", tag)
            redis_client.zrem("unacked_index", tag)


def test_a_worker_on_a_unix_socket_gets_this_transport_too(tmp_path: Path) -> None:
    """`visionq serve`'s embedded Redis is a Unix socket (`redis+socket://` to kombu, which then takes kombu's own
    transport from the URL, whatever `broker_transport` says): the worker's connections, and their clones (Celery's
    pools), still get this one, and a message goes through it on the socket."""
    with EmbeddedRedis(tmp_path / "redis", persistent=False, unix_socket=True) as server:
        url = server.url.replace("db=0", "db=3")
        app = create_celery_app(Settings(redis_url=url, queue=QUEUE))
        with app.connection_for_read() as connection, connection.clone() as clone:
            for each in (connection, clone):
                assert isinstance(each.default_channel, Channel), each.as_uri()
            queue = connection.SimpleQueue(QUEUE)
            queue.put({"job": 3})
            message = queue.get(timeout=5)
            assert message.payload == {"job": 3}
            message.ack()
            queue.close()
        client = redis.Redis.from_url(url)
        assert client.hlen("unacked") == 0  # the bookkeeping went to the socket's database 3, and was cleared
        assert client.exists(f"_kombu.binding.{QUEUE}")
        client.close()
