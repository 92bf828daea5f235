"""The one interface every inference backend implements, and the top-k step after it."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from visionq.inference.spec import ModelSpec

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
