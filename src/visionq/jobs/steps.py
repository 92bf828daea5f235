"""Several Lua steps and plain commands in one round trip, without redis-py's per-pipeline `SCRIPT EXISTS`.

A redis-py pipeline that carries `Script` objects first asks Redis whether it has them: a second round trip on
every job's completion. `Steps` sends each script by its digest (EVALSHA) instead, and when Redis answers that
it does not know one (a fresh or restarted Redis), runs that step again alone through its `Script`, which loads
it. Only the steps that failed so run twice; plain commands never do.
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
        self.commands: Pipeline = redis.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, ScriptArgs, ScriptArgs]] = {}

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.commands.reset()

    def script(self, script: Script, keys: ScriptArgs, args: ScriptArgs) -> None:
        self._scripts[len(self.commands)] = (script, keys, args)
        self.commands.evalsha(script.sha, len(keys), *keys, *args)

    def execute(self) -> list[Any]:
        replies: list[Any] = self.commands.execute(raise_on_error=False)
        for position, (script, keys, args) in self._scripts.items():
            if isinstance(replies[position], NoScriptError):
                replies[position] = script(keys=list(keys), args=list(args))
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
