"""Job updates pushed over Redis pub/sub, fanned out inside one API process.

Workers publish every change of a job's status hash on `job:{id}:events` (in the same Lua
step that makes the change). Each API process holds ONE pattern subscription and hands the
updates to the WebSocket handlers watching that job, so a thousand open sockets cost one
Redis connection, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from visionq.jobs import keys
from visionq.jobs.records import JobRecord

log = logging.getLogger(__name__)

#: Seconds to wait before resubscribing after the pub/sub connection broke.
RESUBSCRIBE_DELAY = 1.0


class JobEvents:
    """Fan-out of job updates to local watchers.

    >>> async with events.watch(job_id) as updates:     # doctest: +SKIP
    ...     record = await updates.get()
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._watchers: dict[str, set[asyncio.Queue[JobRecord]]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="visionq-job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_subscribed(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._subscribed.wait()
        return self._subscribed.is_set()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Queue[JobRecord]]:
        """A queue receiving every update of `job_id` published while the context is open."""
        queue: asyncio.Queue[JobRecord] = asyncio.Queue()
        self._watchers[job_id].add(queue)
        try:
            yield queue
        finally:
            self._watchers[job_id].discard(queue)
            if not self._watchers[job_id]:
                del self._watchers[job_id]

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.psubscribe(keys.EVENTS_PATTERN)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message["type"] == "pmessage":
                            self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("job event subscription lost, retrying: %s", exc)
                await asyncio.sleep(RESUBSCRIBE_DELAY)

    def _dispatch(self, channel: str | bytes, data: str | bytes) -> None:
        job_id = keys.job_id_from_events(channel.decode() if isinstance(channel, bytes) else channel)
        watchers = self._watchers.get(job_id)
        if not watchers:
            return
        record = JobRecord.from_redis(orjson.loads(data))
        for queue in watchers:
            queue.put_nowait(record)
