"""Time limits for the pools that run jobs in the worker's own process (`threads`, the default, and `solo`).

Celery enforces `task_soft_time_limit` and `task_time_limit` in the prefork pool only, by signals from the
parent. Here they are kept like this:

- the **soft limit** is checked by the job itself at each of its stages (`checkpoint`, called as decoding, the
  model and the top-k begin): a job past it raises `SoftTimeLimitExceeded` there, and the task fails the job with
  `time_limit_exceeded`. It is not raised into the thread from outside: CPython's asynchronous exceptions land
  anywhere (inside a lock's bookkeeping, a log call, a model load), and one pending for a thread busy in native
  code was seen to stall the rest of the process under a tracer (coverage in CI);
- past the **hard limit** the job is stuck where it cannot check (native code, a blocking call), as a prefork
  child would be. One watchdog thread per process fails the job with `time_limit_exceeded` and ends the process
  with `EXIT_STUCK`, as prefork kills the child: its supervisor (`visionq serve`, Kubernetes, compose, systemd)
  starts a fresh one. Messages of the other jobs the process held are unacknowledged and come back after
  `visibility_timeout`; their claim makes sure none runs twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery.exceptions import SoftTimeLimitExceeded

log = logging.getLogger(__name__)

#: The job error code of a job that ran past its soft or hard time limit.
TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
#: The exit status of a process ended because a job was stuck past its hard time limit (EX_SOFTWARE).
EXIT_STUCK = 70
#: Longest pause between two looks at the running jobs.
TICK = 0.5
#: Seconds the process is given to fail a stuck job and say so before it ends regardless.
LAST_RESORT = 10.0


def over_time(limit: float) -> str:
    return f"processing took longer than the time limit of {limit:g} s; the job was dead-lettered"


@dataclass(frozen=True)
class _Running:
    job_id: str
    started: float


class Watchdog:
    """Holds the jobs of one process to the time limits.

    >>> watchdog = Watchdog(soft=60, hard=90, stuck=fail_job)   # doctest: +SKIP
    >>> with watchdog.watching(job_id):                        # doctest: +SKIP
    ...     watchdog.checkpoint(); decode(); watchdog.checkpoint(); infer()
    """

    def __init__(
        self,
        *,
        soft: float,
        hard: float,
        stuck: Callable[[str, float], None],
        clock: Callable[[], float] = time.monotonic,
        end_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.soft, self.hard = soft, hard
        self._stuck = stuck
        self._clock = clock
        self._end_process = end_process
        self._running: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="visionq-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        """Hold the calling thread to the time limits while the block runs `job_id`."""
        thread_id = threading.get_ident()
        with self._lock:
            self._running[thread_id] = _Running(job_id, self._clock())
        try:
            yield
        finally:
            with self._lock:
                del self._running[thread_id]

    def checkpoint(self) -> None:
        """Raise `SoftTimeLimitExceeded` if the calling thread's job has run past the soft limit."""
        entry = self._running.get(threading.get_ident())
        if entry is not None and self._clock() - entry.started >= self.soft:
            raise SoftTimeLimitExceeded(f"job {entry.job_id} ran past its soft time limit of {self.soft:g} s")

    def check(self) -> None:
        """One look at the running jobs: end the process for one past the hard limit, after failing its job."""
        now = self._clock()
        with self._lock:
            stuck = next((e.job_id for e in self._running.values() if now - e.started >= self.hard), None)
        if stuck is None:
            return
        # The process ends whatever happens next: should failing the job or logging hang, a timer ends it anyway.
        last_resort = threading.Timer(LAST_RESORT, self._end_process, [EXIT_STUCK])
        last_resort.daemon = True
        last_resort.start()
        try:
            self._stuck(stuck, self.hard)
            log.critical(
                "job stuck past the hard time limit; its process exits to be replaced", extra={"job_id": stuck}
            )
        finally:
            self._end_process(EXIT_STUCK)
            last_resort.cancel()

    def _watch(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.check()
            except Exception:  # the watchdog must outlive whatever one look ran into
                log.exception("the time-limit watchdog failed a check")
