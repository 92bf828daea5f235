"""Dynamic batching (`Batcher`) with threads and a recording model: who shares a call, and who never waits."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from visionq.inference.batching import Batcher, Inferred
from visionq.inference.classifier import Batch, Probabilities

#: Far longer than any test takes: a batch that waited for it would fail the test's join.
FOREVER = 3600.0
JOIN = 30.0


class Model:
    """Answers each image with a one-hot row at the image's marker (its first pixel) and records each call."""

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate
        self.error = error
        self.started = threading.Event()

    def predict(self, batch: Batch) -> Probabilities:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(JOIN)
        self.calls.append(batch.shape[0])
        if self.error is not None:
            raise self.error
        rows = np.zeros((batch.shape[0], 10), dtype=np.float32)
        rows[np.arange(batch.shape[0]), batch[:, 0, 0, 0].astype(int)] = 1.0
        return rows


def image(marker: int) -> Batch:
    return np.full((1, 3, 2, 2), marker, dtype=np.float32)


def in_thread(work: Callable[[], Inferred]) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["inferred"] = work()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def burst(batcher: Batcher, markers: list[int]) -> list[tuple[threading.Thread, dict[str, object]]]:
    """One thread per marker, each a job that infers its image once all of them hold a slot (are decoding)."""
    all_preprocessing = threading.Barrier(len(markers))

    def job(marker: int) -> Inferred:
        with batcher.slot() as slot:
            all_preprocessing.wait(JOIN)
            return slot.infer(image(marker))

    return [in_thread(lambda m=m: job(m)) for m in markers]  # type: ignore[misc]


def finished(thread: threading.Thread) -> bool:
    thread.join(JOIN)
    return not thread.is_alive()


def test_a_lone_job_is_run_at_once_however_long_the_batch_may_wait() -> None:
    model = Model()
    batcher = Batcher(model.predict, max_size=8, max_wait=FOREVER)

    def lone() -> Inferred:
        with batcher.slot() as slot:
            return slot.infer(image(3))

    thread, out = in_thread(lone)

    assert finished(thread), "a job with no other on its way waited for one"
    inferred = out["inferred"]
    assert isinstance(inferred, Inferred)
    assert (inferred.batch_size, inferred.leader, int(inferred.probabilities.argmax())) == (1, True, 3)
    assert inferred.waited == 0
    assert model.calls == [1]


def test_a_burst_that_reaches_inference_together_shares_one_call() -> None:
    model = Model()
    batcher = Batcher(model.predict, max_size=8, max_wait=FOREVER)

    runs = burst(batcher, list(range(5)))

    assert all(finished(thread) for thread, _ in runs)
    results = [out["inferred"] for _, out in runs]
    assert model.calls == [5]
    assert [int(r.probabilities.argmax()) for r in results] == [0, 1, 2, 3, 4]  # type: ignore[attr-defined]
    assert {r.batch_size for r in results} == {5}  # type: ignore[attr-defined]
    assert sum(r.leader for r in results) == 1  # type: ignore[attr-defined]


def test_no_call_takes_more_than_the_largest_batch() -> None:
    model = Model()
    batcher = Batcher(model.predict, max_size=4, max_wait=FOREVER)

    runs = burst(batcher, list(range(10)))

    assert all(finished(thread) for thread, _ in runs)
    assert sum(model.calls) == 10
    assert max(model.calls) == 4
    assert [int(out["inferred"].probabilities.argmax()) for _, out in runs] == list(range(10))  # type: ignore[attr-defined]


def test_the_first_job_waits_for_one_still_preprocessing() -> None:
    model = Model()
    batcher = Batcher(model.predict, max_size=8, max_wait=FOREVER)

    def first() -> Inferred:
        with batcher.slot() as slot:
            return slot.infer(image(1))

    with batcher.slot() as second:  # preprocessing, in this thread
        thread, out = in_thread(first)
        while not batcher._waiting:  # the first is waiting for this one
            threading.Event().wait(0.001)
        mine = second.infer(image(2))

    assert finished(thread)
    assert model.calls == [2]
    assert (mine.batch_size, out["inferred"].batch_size) == (2, 2)  # type: ignore[attr-defined]
    assert mine.waited > 0


def test_the_wait_for_others_ends_at_max_wait() -> None:
    model = Model()
    batcher = Batcher(model.predict, max_size=8, max_wait=0.01)

    def first() -> Inferred:
        with batcher.slot() as slot:
            return slot.infer(image(1))

    with batcher.slot() as slow:  # a job that stays in preprocessing until the first has its answer
        thread, out = in_thread(first)
        assert finished(thread)
        later = slow.infer(image(2))

    assert out["inferred"].batch_size == 1  # type: ignore[attr-defined]
    assert later.batch_size == 1
    assert model.calls == [1, 1]


def test_a_job_that_stops_before_inference_is_not_waited_for() -> None:
    model = Model()
    batcher = Batcher(model.predict, max_size=8, max_wait=FOREVER)

    with batcher.slot() as slot, pytest.raises(ValueError, match="bad image"):
        raise ValueError("bad image")  # decoding failed: the slot is given up
    with batcher.slot() as slot:
        inferred = slot.infer(image(4))

    assert (inferred.batch_size, model.calls) == (1, [1])


def test_jobs_that_arrive_while_a_call_runs_share_the_next_one() -> None:
    gate = threading.Event()
    model = Model(gate=gate)
    batcher = Batcher(model.predict, max_size=8, max_wait=FOREVER)

    def job(marker: int) -> Inferred:
        with batcher.slot() as slot:
            return slot.infer(image(marker))

    first = in_thread(lambda: job(0))
    assert model.started.wait(JOIN)
    behind = [in_thread(lambda m=m: job(m)) for m in (1, 2, 3)]  # type: ignore[misc]
    while len(batcher._waiting) < 3:  # all three queued behind the running call
        threading.Event().wait(0.001)
    gate.set()

    assert all(finished(thread) for thread, _ in [first, *behind])
    assert model.calls == [1, 3]
    assert [int(out["inferred"].probabilities.argmax()) for _, out in behind] == [1, 2, 3]  # type: ignore[attr-defined]


def test_a_failed_call_fails_every_job_in_it() -> None:
    model = Model(error=RuntimeError("the runtime broke"))
    batcher = Batcher(model.predict, max_size=8, max_wait=FOREVER)

    runs = burst(batcher, list(range(3)))

    assert all(finished(thread) for thread, _ in runs)
    assert model.calls == [3]
    assert all(isinstance(out.get("error"), RuntimeError) for _, out in runs)


def test_a_slot_infers_once_and_limits_are_checked() -> None:
    batcher = Batcher(Model().predict, max_size=1, max_wait=0)
    with batcher.slot() as slot:
        slot.infer(image(1))
        with pytest.raises(RuntimeError, match="once"):
            slot.infer(image(1))
    with pytest.raises(ValueError, match="max_size"):
        Batcher(Model().predict, max_size=0, max_wait=0)
    with pytest.raises(ValueError, match="max_wait"):
        Batcher(Model().predict, max_size=1, max_wait=-1)


def test_without_batching_jobs_call_the_model_side_by_side() -> None:
    # Each call waits until the other call is running too: were calls made one at a time, neither would end.
    both_calling = threading.Barrier(2)

    class SideBySide(Model):
        def predict(self, batch: Batch) -> Probabilities:
            both_calling.wait(JOIN)
            return super().predict(batch)

    model = SideBySide()
    batcher = Batcher(model.predict, max_size=1, max_wait=FOREVER)
    runs = burst(batcher, [1, 2])

    assert all(finished(thread) for thread, _ in runs)
    assert model.calls == [1, 1]
    inferred = [out["inferred"] for _, out in runs]
    assert [i.batch_size for i in inferred] == [1, 1]  # type: ignore[attr-defined]
    assert [int(i.probabilities.argmax()) for i in inferred] == [1, 2]  # type: ignore[attr-defined]
