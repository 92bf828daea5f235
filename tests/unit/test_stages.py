"""How long each stage lasts, as a worker process learns it (the moving average behind stage coalescing)."""

from __future__ import annotations

import pytest

from visionq.wire.states import Stage
from visionq.worker.stages import SMOOTHING, StageLengths


def test_a_stage_never_seen_has_no_expected_length() -> None:
    assert StageLengths().expected("m@1", Stage.INFERENCE) is None


def test_the_first_length_is_taken_as_it_is_and_later_ones_move_the_average() -> None:
    lengths = StageLengths()
    lengths.observe("m@1", Stage.INFERENCE, 0.010)
    first = lengths.expected("m@1", Stage.INFERENCE)
    lengths.observe("m@1", Stage.INFERENCE, 0.110)

    assert first == pytest.approx(0.010)
    assert lengths.expected("m@1", Stage.INFERENCE) == pytest.approx(0.010 + SMOOTHING * 0.100)


def test_lengths_are_kept_per_model_and_stage() -> None:
    lengths = StageLengths()
    lengths.observe("a@1", Stage.INFERENCE, 1.0)

    assert lengths.expected("b@1", Stage.INFERENCE) is None
    assert lengths.expected("a@1", Stage.PREPROCESSING) is None
