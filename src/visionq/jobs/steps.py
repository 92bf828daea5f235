"""Several Lua steps and plain commands in one round trip, without redis-py's per-pipeline `SCRIPT EXISTS`.

A redis-py pipeline that carries `Script` objects first asks Redis whether it has them: a second round trip on
every job's completion. `Steps` sends each script by its digest (EVALSHA) instead, and when Redis answers that
it does not know one (a fresh, restarted or newly promoted Redis), loads and runs those steps again in a second
round trip. Only the steps that failed so run twice; plain commands never do. A `wait` for replicas comes last,
and again after steps run twice, so that it covers what they wrote (`WAIT` counts one connection's writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

ScriptArgs = Sequence[Any]


class Steps:
    """One round trip of script steps and plain commands, replies in the order queued.

    >>> with Steps(redis) as steps:                                 # doctest: +SKIP
    ...     steps.script(complete, keys, args)
    ...     steps.commands.hincrby("stats", "count", 1)
    ...     replies = steps.execute()
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.commands: Pipeline = redis.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, ScriptArgs, ScriptArgs]] = {}
        self._wait: tuple[int, int] | None = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.commands.reset()

    def script(self, script: Script, keys: ScriptArgs, args: ScriptArgs) -> None:
        self._scripts[len(self.commands)] = (script, keys, args)
        self.commands.evalsha(script.sha, len(keys), *keys, *args)

    def wait(self, replicas: int, timeout_ms: int) -> None:
        """Last: wait until `replicas` replicas hold everything written before (its reply: how many do)."""
        self._wait = (replicas, timeout_ms)
        self.commands.wait(replicas, timeout_ms)

    def execute(self) -> list[Any]:
        replies: list[Any] = self.commands.execute(raise_on_error=False)
        unknown = [position for position in self._scripts if isinstance(replies[position], NoScriptError)]
        if unknown:
            with self.redis.pipeline(transaction=False) as again:
                for position in unknown:
                    script, keys, args = self._scripts[position]
                    again.script_load(script.script)
                    again.evalsha(script.sha, len(keys), *keys, *args)
                if self._wait is not None:
                    again.wait(*self._wait)
                rerun: list[Any] = again.execute(raise_on_error=False)
            for index, position in enumerate(unknown):
                replies[position] = rerun[2 * index + 1]
            if self._wait is not None:
                replies[-1] = rerun[-1]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
