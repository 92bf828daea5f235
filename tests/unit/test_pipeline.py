"""run_classification with a tiny deterministic classifier: stages in order, top-k, labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from factories import bad_inputs, cat_variants, encode
from visionq.errors import ImageTooLarge, InvalidImage
from visionq.inference.classifier import Batch, Probabilities
from visionq.inference.spec import ModelSpec, Runtime
from visionq.wire.states import Stage
from visionq.worker.pipeline import run_classification

SPEC = ModelSpec(name="colours", version=1, input_size=8, runtime=Runtime.ONNX, weights="-", labels="-", num_classes=3)
LABELS = ("red", "green", "blue")


class DominantChannel:
    """Probabilities proportional to each channel's mean brightness: a real, if simple, classifier."""

    spec = SPEC

    def setup(self, device: str) -> None:
        pass

    def predict(self, batch: Batch) -> Probabilities:
        means = batch.mean(axis=(2, 3)) + 10.0
        probabilities: Probabilities = (means / means.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities


def classify(image: bytes, top: int = 3) -> tuple[list[Stage], list[tuple[str, float]]]:
    stages: list[Stage] = []
    outcome = run_classification(
        image, classifier=DominantChannel(), labels=LABELS, top=top, max_pixels=1_000_000, report=stages.append
    )
    return stages, [(p.class_name, p.confidence) for p in outcome.predictions]


def test_stages_are_reported_in_order() -> None:
    stages, _ = classify(cat_variants()["png"])
    assert stages == [Stage.PREPROCESSING, Stage.INFERENCE, Stage.POSTPROCESSING]


def test_predictions_are_the_top_k_by_confidence() -> None:
    _, predictions = classify(encode(Image.new("RGB", (64, 48), (0, 0, 255)), "PNG"), top=2)

    # Worked out by hand: the model's normalisation maps a channel value v to (v - 127) / 128, and
    # DominantChannel adds 10, so blue scores 11.0 and red and green 9.0078 each, out of 29.0156.
    # Red and green tie; the lower class id (red) goes first.
    scores = {"red": 10 - 127 / 128, "green": 10 - 127 / 128, "blue": 10 + 128 / 128}
    total = sum(scores.values())
    assert [name for name, _ in predictions] == ["blue", "red"]
    assert [confidence for _, confidence in predictions] == pytest.approx(
        [scores["blue"] / total, scores["red"] / total]
    )


def test_image_info_is_reported_after_orientation() -> None:
    outcome = run_classification(
        cat_variants()["jpeg_exif_rotated"],
        classifier=DominantChannel(),
        labels=LABELS,
        top=1,
        max_pixels=1_000_000,
        report=lambda _: None,
    )
    assert (outcome.image.width, outcome.image.height, outcome.image.format) == (451, 300, "JPEG")
    assert outcome.inference_seconds >= 0


def test_bad_images_fail_with_their_codes() -> None:
    with pytest.raises(InvalidImage):
        classify(bad_inputs()["truncated_jpeg"])
    with pytest.raises(ImageTooLarge):
        run_classification(
            cat_variants()["png"],
            classifier=DominantChannel(),
            labels=LABELS,
            top=1,
            max_pixels=1000,
            report=lambda _: None,
        )
