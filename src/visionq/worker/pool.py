"""What a prefork worker's main process does about its pool processes: the crashes and hangs that the
process running a job cannot report itself.

Celery hands both to the task's `Request` in the main process: `on_failure` with `WorkerLostError` when a
pool process died (killed, out of memory, crashed in native code), `on_timeout` when it ran past a time
limit. `ClassifyRequest` records them in the job's state before Celery requeues or acknowledges the
message, so the next delivery knows (poison inputs), or the job is finished (hard time limit).
"""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Task
from celery.worker.request import Request
from redis import RedisError

from visionq.connections import sync_redis
from visionq.jobs.tracker import JobTracker
from visionq.settings import Settings
from visionq.worker.context import job_tracker
from visionq.worker.watchdog import TIME_LIMIT_EXCEEDED, over_time

log = logging.getLogger(__name__)

_tracker: JobTracker | None = None


def _main_tracker(settings: Settings) -> JobTracker:
    """The main process's own tracker (pool processes have theirs in their worker context)."""
    global _tracker
    if _tracker is None:
        _tracker = job_tracker(settings, sync_redis(settings), "pool")
    return _tracker


class ClassifyRequest(Request):
    @property
    def _job(self) -> tuple[JobTracker, str] | None:
        settings = getattr(self.task.app, "settings", None)
        if not isinstance(settings, Settings) or not self.args:
            return None
        return _main_tracker(settings), str(self.args[0])

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        job = self._job
        if isinstance(exc, WorkerLostError) and job is not None:
            tracker, job_id = job
            try:
                crashes = tracker.crashed(job_id, str(exc))
                log.error("pool process died on a job", extra={"job_id": job_id, "crashes": crashes})
            except RedisError:
                log.exception("could not record that the process running job %s died", job_id)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        job = self._job
        if soft or job is None:
            return  # the soft limit is an exception in the task, which fails the job itself
        # The process was killed and the message is acknowledged: finish the job here, or only the sweeper would.
        tracker, job_id = job
        try:
            if tracker.dead_letter(job_id, TIME_LIMIT_EXCEEDED, over_time(timeout)):
                log.error("job ran past its hard time limit; its process was replaced", extra={"job_id": job_id})
        except RedisError:
            log.exception("could not fail job %s after its hard time limit; the sweeper will", job_id)


class ClassifyTask(Task):  # type: ignore[type-arg]
    Request = "visionq.worker.pool:ClassifyRequest"
