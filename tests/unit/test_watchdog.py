"""The time-limit watchdog of in-process pools: a job in Python code is interrupted past the soft limit, in its
interruptible part only; one past the hard limit is failed and its process ended, even if failing it hangs; a
job that ends in time is left alone."""

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


def test_a_job_busy_in_python_past_the_soft_limit_is_interrupted() -> None:
    watched = Watched()
    clock, stuck, ended, watchdog = watched.clock, watched.stuck, watched.ended, watched.watchdog
    inside, outcome = threading.Event(), []

    def job() -> None:
        try:
            with watchdog.watching("job-1"), watchdog.interruptible():
                inside.set()
                while True:  # Python code: the interruption lands here
                    pass
        except SoftTimeLimitExceeded:
            outcome.append("interrupted")

    thread = threading.Thread(target=job)
    thread.start()
    assert inside.wait(JOIN_TIMEOUT)
    watchdog.check()  # within the limit: nothing
    clock.now = 10.0
    watchdog.check()
    thread.join(JOIN_TIMEOUT)

    assert outcome == ["interrupted"]
    assert (stuck, ended) == ([], [])


def test_a_job_past_the_hard_limit_is_failed_and_its_process_ended() -> None:
    watched = Watched()
    clock, stuck, ended, watchdog = watched.clock, watched.stuck, watched.ended, watched.watchdog
    inside, release, outcome = threading.Event(), threading.Event(), []

    def job() -> None:
        try:
            with watchdog.watching("job-2"), watchdog.interruptible():
                inside.set()
                release.wait()  # a blocking call: the soft limit cannot land until it returns
        except SoftTimeLimitExceeded:
            outcome.append("interrupted once it returned")

    thread = threading.Thread(target=job)
    thread.start()
    assert inside.wait(JOIN_TIMEOUT)
    clock.now = 10.0
    watchdog.check()
    assert ended == []
    clock.now = 20.0
    watchdog.check()
    release.set()
    thread.join(JOIN_TIMEOUT)

    assert stuck == [("job-2", 20.0)]
    assert ended == [EXIT_STUCK]
    assert outcome == ["interrupted once it returned"]


def test_a_job_that_ends_in_time_is_left_alone_and_its_thread_goes_on() -> None:
    watched = Watched()
    clock, stuck, ended, watchdog = watched.clock, watched.stuck, watched.ended, watched.watchdog
    with watchdog.watching("job-3"):
        pass
    clock.now = 100.0
    watchdog.check()
    assert (stuck, ended) == ([], [])


def test_the_soft_limit_waits_for_the_interruptible_part_and_a_late_one_is_withdrawn() -> None:
    watched = Watched()
    clock, watchdog = watched.clock, watched.watchdog
    with watchdog.watching("job-4"):
        clock.now = 15.0
        watchdog.check()  # past the soft limit, but loading a model, say: not interrupted
        survived = sum(range(1000))
        with pytest.raises(SoftTimeLimitExceeded), watchdog.interruptible():
            watchdog.check()  # on this very thread: lands at once
    assert survived == 499500
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
