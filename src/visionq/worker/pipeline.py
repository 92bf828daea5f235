"""The classification itself: decode → preprocess → predict → top-k, reporting each stage.

Kept apart from Celery so it can be tested with any `Classifier` and any stage reporter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from visionq.imaging.decode import decode_image
from visionq.imaging.transforms import stack, to_input
from visionq.inference.classifier import Classifier, top_k
from visionq.jobs.records import ImageInfo, Prediction
from visionq.jobs.states import Stage

StageReporter = Callable[[Stage], object]


@dataclass(frozen=True)
class Classification:
    predictions: list[Prediction]
    image: ImageInfo
    inference_seconds: float


def run_classification(
    image_bytes: bytes,
    *,
    classifier: Classifier,
    labels: tuple[str, ...],
    top: int,
    max_pixels: int,
    report: StageReporter,
    draft: bool = True,
) -> Classification:
    """Classify one image; `report` is told each stage as it begins (HLD §3.2.1). With `draft`, a large JPEG
    is decoded at a reduced scale that still covers the model's input (see `decode_image`)."""
    report(Stage.PREPROCESSING)
    spec = classifier.spec
    decoded = decode_image(image_bytes, max_pixels=max_pixels, draft=spec.input_size if draft else None)
    batch = stack([to_input(decoded.image, size=spec.input_size, mean=spec.mean, std=spec.std)])

    report(Stage.INFERENCE)
    started = time.perf_counter()
    probabilities = classifier.predict(batch)
    inference_seconds = time.perf_counter() - started

    report(Stage.POSTPROCESSING)
    predictions = [
        Prediction(class_id=class_id, class_name=_label(labels, class_id), confidence=confidence)
        for class_id, confidence in top_k(probabilities[0], top)
    ]
    image = ImageInfo(width=decoded.width, height=decoded.height, format=decoded.format)
    return Classification(predictions=predictions, image=image, inference_seconds=inference_seconds)


def _label(labels: tuple[str, ...], class_id: int) -> str:
    return labels[class_id] if class_id < len(labels) else f"class {class_id}"
