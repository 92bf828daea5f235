"""The queue's keeper: every `queue_pass_interval`, one API process (a turn, jobs/locks.py) expires the pending
jobs whose `deadline` has passed, promotes those that have waited `priority_aging` seconds at their priority and,
with a broker apart from job state, publishes again the messages left in the outbox (jobs/publisher.py).

It runs in the API rather than in a worker so that a deadline holds while no worker is running, and a worker
that reaches an expired job first expires it itself (`scripts.TAKE`). Promotion needs pending jobs, which need
an API to have made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.images import ImageStore
from visionq.jobs import keys
from visionq.jobs.locks import take_turn_async
from visionq.jobs.store import JobStore
from visionq.settings import Settings
from visionq.wire.states import PRIORITY_ORDER

log = logging.getLogger(__name__)


class QueueKeeper:
    """Expiry and promotion passes for one API process.

    >>> keeper = QueueKeeper(settings, store, images)   # doctest: +SKIP
    >>> task = asyncio.create_task(keeper.run())        # doctest: +SKIP
    """

    def __init__(self, settings: Settings, store: JobStore, images: ImageStore | None) -> None:
        self.settings = settings
        self.store = store
        self.images = images
        self.name = f"api-{os.getpid()}@{socket.gethostname()}"

    async def run(self) -> None:
        interval = self.settings.queue_pass_interval
        while True:
            await asyncio.sleep(interval)
            try:
                if await take_turn_async(
                    self.store.redis, keys.queue_lock(self.store.queue), self.name, interval * 0.9
                ):
                    await self.pass_once()
            except RedisError as exc:
                log.debug("queue pass skipped, Redis unreachable: %s", exc)

    async def pass_once(self, now: float | None = None) -> tuple[int, int, int]:
        """One pass: (jobs expired, jobs promoted, messages published again)."""
        now = now or time.time()
        resent = await self.store.resend(now - self.settings.outbox_republish_after)
        if resent:
            log.warning("published %d messages left in the outbox", resent)
        expired = 0
        for job_id in await self.store.overdue(now):
            if await self.store.expire(job_id):
                expired += 1
                log.info("job's deadline passed before it started; expired", extra={"job_id": job_id})
                await self._drop_image(job_id)
        promoted = 0
        if self.settings.priority_aging:
            for priority in PRIORITY_ORDER[1:]:  # every priority but the highest
                for job_id in await self.store.aged(priority, now - self.settings.priority_aging):
                    if await self.store.promote(job_id, priority):
                        promoted += 1
                        log.info("aged job promoted to %s", priority.raised.value, extra={"job_id": job_id})
        return expired, promoted, resent

    async def _drop_image(self, job_id: str) -> None:
        if self.images is not None:
            with contextlib.suppress(errors.VisionqError):  # else the image sweeper removes it
                await run_in_threadpool(self.images.delete, job_id)
