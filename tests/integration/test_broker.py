"""The broker transport against a real Redis: closing a connection that Celery has already collected, with a
message in hand, is a connection error the close ignores, not a crash (see `visionq.worker.broker`)."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection

from visionq.worker.broker import TRANSPORT

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
