"""Time limits for the pools that run jobs in the worker's own process (`threads`, the default, and `solo`).

Celery enforces `task_soft_time_limit` and `task_time_limit` in the prefork pool only, by signals from the
parent. Here one watchdog thread per process does the same for the jobs its threads run:

- past the **soft limit** it raises `SoftTimeLimitExceeded` in the job's thread (CPython's asynchronous
  exception, `PyThreadState_SetAsyncExc`). It lands when the thread next runs Python code, so it ends a job
  that is slow in Python or between native calls, and the task fails the job with `time_limit_exceeded`. It is
  raised only while the job is in its `interruptible()` part (decoding and the model): an exception landing in
  a model load, a Redis round trip or a log call could leave shared state half changed;
- past the **hard limit** the thread is stuck where nothing can interrupt it (native code, a blocking call), as
  a prefork child would be. The watchdog fails the job with `time_limit_exceeded` and ends the process with
  `EXIT_STUCK`, as prefork kills the child: its supervisor (`visionq serve`, Kubernetes, compose, systemd)
  starts a fresh one. Messages of the other jobs the process held are unacknowledged and come back after
  `visibility_timeout`; their claim makes sure none runs twice.
"""

from __future__ import annotations

import ctypes
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


@dataclass
class _Running:
    job_id: str
    started: float
    interruptible: bool = False
    interrupted: bool = False


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Have `exc` raised in the thread when it next runs Python code; None withdraws one still pending."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None)


class Watchdog:
    """Watches the jobs of one process.

    >>> watchdog = Watchdog(soft=60, hard=90, stuck=fail_job)   # doctest: +SKIP
    >>> with watchdog.watching(job_id):                        # doctest: +SKIP
    ...     run_the_job()
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

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within `watching`: the part of the job the soft limit may interrupt."""
        thread_id = threading.get_ident()
        with self._lock:
            entry = self._running[thread_id]
            entry.interruptible = True
        try:
            yield
        finally:
            with self._lock:
                entry.interruptible = False
                if entry.interrupted:
                    _raise_in(thread_id, None)  # not landed yet: that part is over, the job goes on

    def check(self) -> None:
        """One look at the running jobs: interrupt those past the soft limit; end the process for one past the
        hard limit, after failing its job."""
        now = self._clock()
        with self._lock:
            for thread_id, entry in self._running.items():
                ran = now - entry.started
                if ran >= self.soft and entry.interruptible and not entry.interrupted:
                    entry.interrupted = True
                    _raise_in(thread_id, SoftTimeLimitExceeded)
                if ran >= self.hard:
                    stuck = entry.job_id
                    break
            else:
                return
        # The process ends whatever happens next: should failing the job or logging hang (a lock that the stuck
        # thread holds), a timer ends it anyway.
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
        tick = min(TICK, self.soft / 4)
        while not self._stop.wait(tick):
            try:
                self.check()
            except BaseException:  # the watchdog must outlive whatever one look ran into
                log.exception("the time-limit watchdog failed a check")
