"""The time-limit watchdog of in-process pools: a job past the soft limit stops at its next checkpoint; one past the
hard limit is failed and its process ended, even if failing it hangs; a job that ends in time is left alone."""

from __future__ import annotations

import threading

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from visionq.worker.watchdog import EXIT_STUCK, Watchdog

#: Seconds a test waits for a thread it started (never reached when the watchdog works).
JOIN_TIMEOUT = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Watched:
    """A watchdog with limits of 10 and 20 s on a clock the test moves, and what it did."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.stuck: list[tuple[str, float]] = []
        self.ended: list[int] = []
        self.watchdog = Watchdog(
            soft=10.0,
            hard=20.0,
            stuck=lambda job, limit: self.stuck.append((job, limit)),
            clock=self.clock,
            end_process=self.ended.append,
        )


def test_a_job_past_the_soft_limit_stops_at_its_next_checkpoint() -> None:
    watched = Watched()
    with watched.watchdog.watching("job-1"):
        watched.watchdog.checkpoint()  # within the limit: goes on
        watched.clock.now = 10.0
        with pytest.raises(SoftTimeLimitExceeded, match="job-1"):
            watched.watchdog.checkpoint()
    watched.watchdog.checkpoint()  # no job on this thread any more: nothing to stop
    watched.watchdog.check()
    assert (watched.stuck, watched.ended) == ([], [])


def test_only_the_late_job_s_own_thread_is_stopped() -> None:
    watched = Watched()
    outcome: list[str] = []

    def on_time() -> None:
        with watched.watchdog.watching("job-2"):
            watched.watchdog.checkpoint()
            outcome.append("went on")

    with watched.watchdog.watching("job-1"):
        watched.clock.now = 10.0  # job-1 began at 0; job-2 begins now
        other = threading.Thread(target=on_time)
        other.start()
        other.join(JOIN_TIMEOUT)
    assert outcome == ["went on"]


def test_a_job_past_the_hard_limit_is_failed_and_its_process_ended() -> None:
    watched = Watched()
    inside, release = threading.Event(), threading.Event()

    def job() -> None:
        with watched.watchdog.watching("job-3"):
            inside.set()
            release.wait(JOIN_TIMEOUT)  # stuck where no checkpoint is reached

    thread = threading.Thread(target=job)
    thread.start()
    assert inside.wait(JOIN_TIMEOUT)
    watched.clock.now = 19.9
    watched.watchdog.check()
    assert watched.ended == []
    watched.clock.now = 20.0
    watched.watchdog.check()
    release.set()
    thread.join(JOIN_TIMEOUT)

    assert watched.stuck == [("job-3", 20.0)]
    assert watched.ended == [EXIT_STUCK]


def test_a_job_that_ends_in_time_is_left_alone() -> None:
    watched = Watched()
    with watched.watchdog.watching("job-4"):
        pass
    watched.clock.now = 100.0
    watched.watchdog.check()
    assert (watched.stuck, watched.ended) == ([], [])


def test_a_process_whose_stuck_job_cannot_be_failed_ends_all_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("visionq.worker.watchdog.LAST_RESORT", 0.05)
    hung, ended, clock = threading.Event(), threading.Event(), Clock()
    watchdog = Watchdog(
        soft=10.0,
        hard=20.0,
        stuck=lambda job, limit: None if hung.wait(JOIN_TIMEOUT) else None,  # as a Redis call that never answers
        clock=clock,
        end_process=lambda status: ended.set(),
    )
    checking = threading.Thread(target=watchdog.check)
    with watchdog.watching("job-5"):
        clock.now = 20.0
        checking.start()
        assert ended.wait(JOIN_TIMEOUT), "the last resort ended the process while failing the job hung"
    hung.set()
    checking.join(JOIN_TIMEOUT)
