"""Turns (jobs/locks.py) against a real Redis: one worker's pass per interval, lapsing rather than released."""

from __future__ import annotations

import time
import uuid

import redis

from visionq.jobs import keys
from visionq.jobs.locks import take_turn


def test_a_turn_is_held_by_its_taker_until_it_lapses(redis_client: redis.Redis) -> None:
    name = keys.requeue_lock(f"visionq-test-turns-{uuid.uuid4().hex[:8]}")

    first = take_turn(redis_client, name, "host-a:1", 0.3)
    other = take_turn(redis_client, name, "host-b:2", 0.3)
    again = take_turn(redis_client, name, "host-a:1", 0.3)
    held_by = redis_client.get(name)
    time.sleep(0.4)
    after = take_turn(redis_client, name, "host-b:2", 0.3)

    assert (first, other, again) == (True, False, False), "the taker too waits for the next interval"
    assert held_by == "host-a:1"
    assert after is True
    assert redis_client.get(name) == "host-b:2"
    assert 0 < redis_client.pttl(name) <= 300
