"""top_k: the most probable (class_id, probability) pairs of one row, most probable first."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from visionq.inference.classifier import top_k


def _row(*values: float) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def test_most_probable_first() -> None:
    probs = _row(0.1, 0.5, 0.05, 0.3, 0.05)
    assert [i for i, _ in top_k(probs, 3)] == [1, 3, 0]


def test_returns_plain_python_numbers() -> None:
    (class_id, probability), *_ = top_k(_row(0.2, 0.8), 1)
    assert type(class_id) is int
    assert type(probability) is float
    assert probability == pytest.approx(0.8)


def test_k_larger_than_the_number_of_classes_returns_all() -> None:
    result = top_k(_row(0.2, 0.7, 0.1), 10)
    assert [i for i, _ in result] == [1, 0, 2]


def test_k_equal_to_the_number_of_classes() -> None:
    assert [i for i, _ in top_k(_row(0.2, 0.7, 0.1), 3)] == [1, 0, 2]


def test_k_one_on_a_thousand_classes() -> None:
    probs = np.full(1000, 0.5 / 999, dtype=np.float32)
    probs[285] = 0.5
    [(class_id, probability)] = top_k(probs, 1)
    assert class_id == 285
    assert probability == pytest.approx(0.5)


def test_ties_keep_descending_order_and_the_right_values() -> None:
    probs = _row(0.1, 0.3, 0.3, 0.2, 0.1)
    result = top_k(probs, 4)
    values = [p for _, p in result]
    assert values == sorted(values, reverse=True)
    assert {i for i, _ in result[:2]} == {1, 2}
    assert result[2][0] == 3
    assert result[3][0] in {0, 4}
    assert len({i for i, _ in result}) == 4


def test_all_equal_returns_k_distinct_classes() -> None:
    result = top_k(np.full(10, 0.1, dtype=np.float32), 4)
    assert len({i for i, _ in result}) == 4
    assert all(p == pytest.approx(0.1) for _, p in result)


@pytest.mark.parametrize("seed", range(5))
def test_matches_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(1000)).astype(np.float32)  # distinct values, no ties
    expected = np.argsort(-probs)[:5]
    assert [i for i, _ in top_k(probs, 5)] == expected.tolist()
