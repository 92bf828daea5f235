"""Dynamic batching: the jobs of one process that reach inference together share one call of the model.

A worker that runs several jobs at once in one process (the `threads` pool, and the `solo`/`threads`
GPU layout) decodes each job's image in its own thread, then hands the model input to the model's
`Batcher`. One call of the model runs at a time; what arrives while it runs, or while other jobs of the
process are still being decoded, goes into the next call, up to `max_size` images. The first job waiting
(the leader) makes the call and hands each job its row:

- it waits for more only while another job of this process is still preprocessing for the same model
  (`Batcher.slot` counts them), and never longer than `max_wait` after it arrived: a lone job is run at
  once, with no wait at all;
- jobs that queued up behind a running call go in the next one without waiting again.

A prefork worker runs one job per process, so its batches are of one image, run at once. With `max_size` 1 (a
CPU worker's default: single-threaded calls side by side measure faster there than batches) there is no batching:
each job calls the model itself, at once, alongside the others' calls.

>>> batcher = Batcher(classifier.predict, max_size=8, max_wait=0.005)  # doctest: +SKIP
>>> with batcher.slot() as slot:                                      # doctest: +SKIP
...     tensor = preprocess(image)            # others' slots make the leader wait for this one
...     inferred = slot.infer(tensor)         # this job's probabilities, and its batch's size
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from visionq.inference.classifier import Batch, Probabilities

__all__ = ["Batcher", "Inferred", "Slot"]


@dataclass(frozen=True)
class Inferred:
    """One job's share of a call of the model."""

    probabilities: npt.NDArray[np.float32]
    """This job's row: one probability per class."""
    batch_size: int
    """Images in the call that made it."""
    seconds: float
    """How long the call took."""
    waited: float
    """How long the call waited for inputs still being prepared: 0 when none were on their way."""
    leader: bool
    """Whether this job made the call (and so is the one to record it)."""


@dataclass(eq=False)
class _Waiting:
    tensor: Batch
    arrived: float
    done: bool = False
    result: Inferred | None = None
    error: BaseException | None = None
    leader: bool = False
    waited: float = 0.0


class Batcher:
    """Batches one model's inputs across the threads of a process (see the module docstring)."""

    def __init__(self, predict: Callable[[Batch], Probabilities], *, max_size: int, max_wait: float) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        if max_wait < 0:
            raise ValueError("max_wait must be >= 0")
        self.max_size = max_size
        self.max_wait = max_wait
        self._predict = predict
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._preparing = 0
        self._running = False

    @contextmanager
    def slot(self) -> Iterator[Slot]:
        """A place in a coming batch, held while the job prepares its input; the leader waits for it."""
        with self._cond:
            self._preparing += 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            if not slot.used:  # the job stopped before inference (cancelled, a bad image)
                with self._cond:
                    self._preparing -= 1
                    self._cond.notify_all()

    def _infer(self, tensor: Batch) -> Inferred:
        if self.max_size == 1:
            return self._alone(tensor)
        me = _Waiting(tensor=tensor, arrived=time.monotonic())
        with self._cond:
            self._preparing -= 1
            self._waiting.append(me)
            self._cond.notify_all()
            try:
                while not me.done:
                    if not self._running and self._waiting and self._waiting[0] is me:
                        batch = self._gather(me)
                        break
                    self._cond.wait()
                else:
                    return self._outcome(me)
            except BaseException:  # interrupted waiting (a time limit): leave no entry that others would wait on
                if me in self._waiting:
                    self._waiting.remove(me)
                    self._cond.notify_all()
                raise
        self._run(batch)
        return self._outcome(me)

    def _alone(self, tensor: Batch) -> Inferred:
        """No batching: this job's call, made now, whatever other calls are running."""
        with self._cond:
            self._preparing -= 1
        started = time.perf_counter()
        rows = self._predict(tensor)
        return Inferred(
            probabilities=rows[0], batch_size=1, seconds=time.perf_counter() - started, waited=0.0, leader=True
        )

    def _gather(self, leader: _Waiting) -> list[_Waiting]:
        """(Called holding the lock.) Wait while more inputs are on their way, then take the batch."""
        deadline = leader.arrived + self.max_wait
        started = time.monotonic()
        while len(self._waiting) < self.max_size and self._preparing > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
            leader.waited = time.monotonic() - started
        batch = self._waiting[: self.max_size]
        del self._waiting[: self.max_size]
        self._running = True
        leader.leader = True
        return batch

    def _run(self, batch: list[_Waiting]) -> None:
        started = time.perf_counter()
        try:
            rows = self._predict(np.concatenate([w.tensor for w in batch]))
        except BaseException as exc:  # every job of the batch fails as the call did
            for w in batch:
                w.error = exc
        else:
            seconds = time.perf_counter() - started
            for i, w in enumerate(batch):
                w.result = Inferred(
                    probabilities=rows[i],
                    batch_size=len(batch),
                    seconds=seconds,
                    waited=batch[0].waited,
                    leader=w.leader,
                )
        finally:
            with self._cond:
                self._running = False
                for w in batch:
                    w.done = True
                self._cond.notify_all()

    @staticmethod
    def _outcome(me: _Waiting) -> Inferred:
        if me.error is not None:
            raise me.error
        assert me.result is not None
        return me.result


class Slot:
    """A job's place in a coming batch (from `Batcher.slot`); `infer` once, with its input."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self.used = False

    def infer(self, tensor: Batch) -> Inferred:
        """Run `tensor` (1, 3, S, S) in the next batch; blocks until its call has run."""
        if self.used:
            raise RuntimeError("a slot infers once")
        self.used = True
        return self._batcher._infer(tensor)
