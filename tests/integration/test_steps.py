"""Script steps and plain commands in one round trip (jobs/steps.py), against a real Redis."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.exceptions import ResponseError

from visionq.jobs.steps import Steps


def test_a_script_redis_does_not_know_yet_runs_once_and_plain_commands_once(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    tag = uuid.uuid4().hex
    # A script text never sent before (its comment is new): Redis answers NOSCRIPT to its digest.
    script = client.register_script(f"-- {tag}\nreturn redis.call('INCR', KEYS[1])")
    counted, plain = f"visionq-test-steps:{tag}:script", f"visionq-test-steps:{tag}:plain"

    with Steps(client) as steps:
        steps.commands.incr(plain)
        steps.script(script, [counted], [])
        replies = steps.execute()
    with Steps(client) as steps:  # now Redis has it: no second try
        steps.script(script, [counted], [])
        again = steps.execute()
    values = client.get(counted), client.get(plain)
    client.delete(counted, plain)
    client.close()

    assert replies == [1, 1]
    assert again == [2]
    assert values == (b"2", b"1"), "each step ran once"


def test_an_error_of_a_step_is_raised(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    script = client.register_script("return redis.error_reply('refused by the test')")
    with Steps(client) as steps:
        steps.script(script, [], [])
        with pytest.raises(ResponseError, match="refused by the test"):
            steps.execute()
    client.close()


def test_a_wait_comes_last_and_counts_what_steps_run_again_wrote(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)  # a server without replicas: WAIT answers 0 at once
    tag = uuid.uuid4().hex
    script = client.register_script(f"-- {tag}\nreturn redis.call('INCR', KEYS[1])")
    counted = f"visionq-test-steps:{tag}:waited"
    with Steps(client) as steps:
        steps.script(script, [counted], [])
        steps.wait(0, 100)
        replies = steps.execute()
    value = client.get(counted)
    client.delete(counted)
    client.close()

    assert replies == [1, 0], "the step's reply, then how many replicas hold it"
    assert value == b"1"
