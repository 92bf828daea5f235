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
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError

ScriptArgs = Sequence[Any]
#: What an item queued on a cluster's `Steps` is, for the order of the replies.
STEP, COMMAND, ELSEWHERE = "step", "command", "elsewhere"


class Steps:
    """One round trip of script steps and plain commands, replies in the order queued.

    On a Redis Cluster the steps (and the `wait`) go to the node that holds `key`'s slot, on a connection of their
    own, since a cluster pipeline sends no scripts and `WAIT` counts one connection's writes; the plain commands
    (other slots: metrics) go through the cluster beside them, and a step of another slot (a model's breaker) runs
    on its own after them.

    >>> with Steps(redis, key=keys.status(job_id)) as steps:     # doctest: +SKIP
    ...     steps.script(complete, keys, args)
    ...     steps.commands.hincrby("stats", "count", 1)
    ...     replies = steps.execute()
    """

    def __init__(self, redis: Redis, *, key: str = "") -> None:
        self.redis = redis
        self.commands: Pipeline = redis.pipeline(transaction=False)
        self._node = _node_of(redis, key)
        self._steps: Pipeline = self.commands if self._node is redis else self._node.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, ScriptArgs, ScriptArgs]] = {}
        self._elsewhere: list[tuple[Script, ScriptArgs, ScriptArgs]] = []  # steps of another slot than `key`'s
        self._order: list[str] = []  # on a cluster, what each item queued is: a step, a command, a step elsewhere
        self._slot = key_slot(key.encode()) if self._node is not redis else None
        self._wait: tuple[int, int] | None = None

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.commands.reset()
        if self._steps is not self.commands:
            self._steps.reset()

    def script(self, script: Script, keys: ScriptArgs, args: ScriptArgs) -> None:
        self._mark_commands()
        if self._slot is not None and key_slot(str(keys[0]).encode()) != self._slot:
            self._elsewhere.append((script, keys, args))
            self._order.append(ELSEWHERE)
            return
        self._scripts[len(self._steps)] = (script, keys, args)
        self._steps.evalsha(script.sha, len(keys), *keys, *args)
        self._order.append(STEP)

    def wait(self, replicas: int, timeout_ms: int) -> None:
        """Last: wait until `replicas` replicas hold everything written before (its reply: how many do)."""
        self._mark_commands()
        self._wait = (replicas, timeout_ms)
        self._steps.wait(replicas, timeout_ms)
        self._order.append(STEP)

    def execute(self) -> list[Any]:
        self._mark_commands()
        try:
            replies = self._run()
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except RedisError:
            if self._node is not self.redis:  # a failover or a resharding moved the slot (MOVED): learn where to
                self.redis.nodes_manager.initialize()  # type: ignore[attr-defined]
            raise
        return replies

    def _run(self) -> list[Any]:
        replies: list[Any] = self._steps.execute(raise_on_error=False)
        unknown = [position for position in self._scripts if isinstance(replies[position], NoScriptError)]
        if unknown:
            with self._node.pipeline(transaction=False) as again:
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
        if self._steps is self.commands:
            return replies
        commands: list[Any] = self.commands.execute(raise_on_error=False) if len(self.commands) else []
        elsewhere = [script(keys=keys, args=args, client=self.redis) for script, keys, args in self._elsewhere]
        sources = {STEP: iter(replies), COMMAND: iter(commands), ELSEWHERE: iter(elsewhere)}
        return [next(sources[kind]) for kind in self._order]

    def _mark_commands(self) -> None:
        """Note the plain commands queued since the last step, for the order of the replies."""
        if self._steps is not self.commands:
            queued = len(self.commands) - self._order.count(COMMAND)
            self._order += [COMMAND] * queued


def _node_of(redis: Redis, key: str) -> Redis:
    """The client of the node that holds `key`'s slot on a Redis Cluster; `redis` itself on one server."""
    if not isinstance(redis, RedisCluster):
        return redis
    node = redis.get_node_from_key(key)
    return node.redis_connection or redis.get_redis_connection(node)
