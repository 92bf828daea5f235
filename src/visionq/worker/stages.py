"""A job's stage changes, written to Redis when they are worth seeing.

A stage that lasts a few milliseconds (decoding a small photo, a fast model's inference, the top-k) is not
worth a round trip of its own: nobody can watch it. It is written with the job's next write instead (the next
stage that is written, or the completion), in one Lua step that still publishes every stage in order, so a
WebSocket watcher sees each of them, and the status never skips one. Which stages are worth it is learnt per
process, per model, from how long that stage lasted before (`StageLengths`): a stage expected to last
`window` seconds or more is written as it begins, and one never seen before too.

In a prefork worker `preprocessing`, where the worker starts reading the client's bytes, is always written as it
begins: a pool process that dies on an image must be seen to have died on it, or a poison input would not be
counted as one. Other pools count no crashes (a process that dies takes all its jobs with it), so they write it
like any other stage.

A written stage is also where a cancelled job stops (the write is refused); a job whose stages all pass in
milliseconds runs to its end, and its completion is refused instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from visionq.jobs.tracker import JobTracker
from visionq.wire.states import Stage

#: Weight of the newest length in a stage's moving average.
SMOOTHING = 0.2
#: Stages a prefork worker writes as they begin, however short (see the module's docstring).
ALWAYS_WRITTEN = frozenset({Stage.PREPROCESSING})


class JobNoLongerLive(Exception):
    """The job was cancelled or finished elsewhere while this worker was on it."""


class StageLengths:
    """How long each stage of each model lasted in this process: a moving average of seconds."""

    def __init__(self) -> None:
        self._seconds: dict[tuple[str, Stage], float] = {}
        self._guard = threading.Lock()  # a threads pool runs several jobs at once

    def expected(self, model_ref: str, stage: Stage) -> float | None:
        return self._seconds.get((model_ref, stage))

    def observe(self, model_ref: str, stage: Stage, seconds: float) -> None:
        with self._guard:
            before = self._seconds.get((model_ref, stage))
            self._seconds[(model_ref, stage)] = seconds if before is None else before + SMOOTHING * (seconds - before)


@dataclass
class StageReport:
    """The stage reporter of one job (`run_classification`'s `report`).

    >>> report = StageReport(tracker, job_id, "efficientnet-lite0@1", lengths, window=0.05)  # doctest: +SKIP
    >>> report(Stage.PREPROCESSING)                                                          # doctest: +SKIP
    >>> tracker.complete(result, stages=report.unwritten())                                  # doctest: +SKIP
    """

    tracker: JobTracker
    job_id: str
    model_ref: str
    lengths: StageLengths
    window: float
    always: frozenset[Stage] = ALWAYS_WRITTEN
    """Stages written as they begin whatever their length."""
    checkpoint: Callable[[], None] | None = None
    """Called as each stage begins: where an in-process pool's soft time limit ends the job (worker/watchdog.py)."""
    _pending: list[Stage] = field(default_factory=list)
    _current: Stage | None = None
    _began: float = 0.0

    def __call__(self, stage: Stage) -> None:
        if self.checkpoint is not None:
            self.checkpoint()
        now = time.perf_counter()
        if self._current is not None:
            self.lengths.observe(self.model_ref, self._current, now - self._began)
        self._current, self._began = stage, now
        self._pending.append(stage)
        expected = self.lengths.expected(self.model_ref, stage)
        if stage in self.always or expected is None or expected >= self.window:
            self.write()

    def write(self) -> None:
        """Write the stages not yet written; JobNoLongerLive if the job was cancelled or finished elsewhere."""
        stages, self._pending = self._pending, []
        if stages and not self.tracker.advance(self.job_id, *stages):
            raise JobNoLongerLive(self.job_id)

    def unwritten(self) -> list[Stage]:
        """The stages still to write (with the completion), the last one's length noted."""
        if self._current is not None:
            self.lengths.observe(self.model_ref, self._current, time.perf_counter() - self._began)
            self._current = None
        stages, self._pending = self._pending, []
        return stages
