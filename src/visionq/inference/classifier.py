"""The one interface every inference backend implements, the checks on what goes in and comes out, and top-k."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from visionq.errors import InternalError
from visionq.inference.spec import ModelSpec

#: A user model's output rows count as probabilities when non-negative and summing to 1 within this.
PROBABILITY_TOLERANCE = 1e-3

Batch = npt.NDArray[np.float32]
"""Preprocessed images, shape (N, 3, H, W), float32, normalised for the model."""
Probabilities = npt.NDArray[np.float32]
"""Class probabilities, shape (N, num_classes), each row summing to 1."""


class Classifier(Protocol):
    """A loaded model. Lifecycle: `setup(device)` once per process, then `predict(batch)` many times.

    >>> clf = registry.get(catalog.resolve("latest"))   # doctest: +SKIP
    >>> probs = clf.predict(batch)                       # doctest: +SKIP
    """

    spec: ModelSpec

    def setup(self, device: str) -> None:
        """Load weights onto `device` ("cpu", "cuda", "cuda:1"); called once, before any predict."""

    def predict(self, batch: Batch) -> Probabilities:
        """Return one row of probabilities per input image, in the same order."""
        ...


def top_k(probabilities: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
    """The k most probable `(class_id, probability)` pairs of one row, most probable first."""
    k = min(k, probabilities.shape[0])
    # lexsort's last key is the primary one: confidence descending, then lower class id first on ties.
    ranked = np.lexsort((np.arange(probabilities.shape[0]), -probabilities))[:k]
    return [(int(i), float(probabilities[i])) for i in ranked]


def check_batch(spec: ModelSpec, batch: Batch) -> None:
    """Raise `ValueError` unless `batch` is float32 (N>=1, 3, input_size, input_size)."""
    size = spec.input_size
    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
        raise ValueError(f"{spec.ref}: the batch must be a float32 numpy array")
    if batch.ndim != 4 or batch.shape[0] < 1 or batch.shape[1:] != (3, size, size):
        raise ValueError(f"{spec.ref}: the batch must have shape (N>=1, 3, {size}, {size}), not {batch.shape}")


def softmax(scores: npt.NDArray[np.floating[Any]]) -> Probabilities:
    """Row-wise softmax, computed stably in float64, returned as float32."""
    shifted = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: Probabilities = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return result


def is_probabilities(scores: npt.NDArray[np.floating[Any]]) -> bool:
    """Whether every row is non-negative and sums to 1 within `PROBABILITY_TOLERANCE`."""
    sums = scores.astype(np.float64).sum(axis=1)
    return bool((scores >= 0).all() and np.all(np.abs(sums - 1.0) <= PROBABILITY_TOLERANCE))


def to_probabilities(
    spec: ModelSpec, scores: npt.NDArray[np.floating[Any]], *, rows: int, auto_softmax: bool
) -> Probabilities:
    """Check a model's raw output and turn it into probabilities.

    The output must be (rows, num_classes) and finite, or `InternalError` is raised. With
    `auto_softmax` (user models), a softmax is applied unless the whole batch already is
    probabilities (`is_probabilities`); the decision is per batch, so every row is treated alike.
    """
    expected = (rows, spec.num_classes)
    if scores.ndim != 2 or scores.shape[0] != rows:
        raise InternalError(f"Model {spec.ref} returned shape {scores.shape} for {rows} image(s); expected {expected}.")
    if scores.shape[1] != spec.num_classes:
        raise InternalError(
            f"Model {spec.ref} returned {scores.shape[1]} scores per image, but its labels name {spec.num_classes}."
        )
    if not np.isfinite(scores).all():
        raise InternalError(f"Model {spec.ref} returned non-finite scores.")
    if auto_softmax and not is_probabilities(scores):
        return softmax(scores)
    return scores.astype(np.float32, copy=False)
