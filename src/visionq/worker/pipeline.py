"""The classification itself: decode → preprocess → predict → top-k, reporting each stage.

Kept apart from Celery so it can be tested with any `Classifier` and any stage reporter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from visionq.imaging.decode import decode_image
from visionq.imaging.transforms import stack
from visionq.inference.batching import Batcher, Inferred
from visionq.inference.classifier import Classifier, top_k
from visionq.wire.jobs import ImageInfo, Prediction
from visionq.wire.states import Stage

StageReporter = Callable[[Stage], object]

#: A draft JPEG decode keeps at least this many source pixels per model input pixel, across the part of the
#: image the transform resizes: the least that keeps the draft's answers those of a full decode on 99% of
#: images (measured by bench/draft_agreement.py; docs/models.md gives the figures).
DRAFT_SCALE = 3.0


@dataclass(frozen=True)
class Classification:
    predictions: list[Prediction]
    image: ImageInfo
    inference_seconds: float
    """How long the call of the model took (the whole batch's call, when batched)."""
    batch_size: int = 1
    """Images in that call."""
    batch_wait: float = 0.0
    """How long that call waited for other jobs' inputs (0 when none were on their way)."""
    led_batch: bool = True
    """Whether this job made the call, and so is the one to record it in the metrics."""


def run_classification(
    image_bytes: bytes,
    *,
    classifier: Classifier,
    labels: tuple[str, ...],
    top: int,
    max_pixels: int,
    report: StageReporter,
    draft: bool = True,
    batcher: Batcher | None = None,
) -> Classification:
    """Classify one image; `report` is told each stage as it begins (HLD §3.2.1). With `draft`, a large JPEG
    is decoded at a reduced scale that still covers the model's input (see `decode_image`). With `batcher`
    (the classifier's, shared by the process's jobs), the model call may be shared with other jobs."""
    spec = classifier.spec
    batcher = batcher or Batcher(classifier.predict, max_size=1, max_wait=0)
    with batcher.slot() as slot:  # held while decoding: a batch leader waits for this job's input
        report(Stage.PREPROCESSING)
        transform = spec.transform
        decoded = decode_image(
            image_bytes, max_pixels=max_pixels, draft=transform.draft_size(DRAFT_SCALE) if draft else None
        )
        tensor = stack([transform.apply(decoded.image)])
        report(Stage.INFERENCE)
        inferred: Inferred = slot.infer(tensor)

    report(Stage.POSTPROCESSING)
    predictions = [
        Prediction(class_id=class_id, class_name=_label(labels, class_id), confidence=confidence)
        for class_id, confidence in top_k(inferred.probabilities, top)
    ]
    image = ImageInfo(width=decoded.width, height=decoded.height, format=decoded.format)
    return Classification(
        predictions=predictions,
        image=image,
        inference_seconds=inferred.seconds,
        batch_size=inferred.batch_size,
        batch_wait=inferred.waited,
        led_batch=inferred.leader,
    )


def _label(labels: tuple[str, ...], class_id: int) -> str:
    return labels[class_id] if class_id < len(labels) else f"class {class_id}"
