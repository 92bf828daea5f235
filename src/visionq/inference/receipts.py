"""A result's receipt (what ran, as digests), and how a re-run is checked against it (`visionq verify`).

A worker builds the receipt of every completed job from the uploaded bytes (their digest, taken once by the API
as it accepted them) and the identity of the model that served it (`ModelIdentity`: its weights file hashed once,
when the registry loads it). `visionq verify` loads the same model locally, builds its own receipt and compares
the two, then compares its re-run's ranking with the job's top-k: the same classes in the same order with
probabilities within `FP32`'s tolerance for an exact model; for an int8 build the same top-1 class, with `INT8`'s
wider tolerance.

>>> identity = identify(classifier)                        # doctest: +SKIP
>>> receipt = build_receipt(image, spec, identity, labels)  # doctest: +SKIP
>>> receipt_differences(job_receipt, receipt)             # doctest: +SKIP
[]
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from visionq.imaging.transforms import Transform
from visionq.inference.classifier import Classifier
from visionq.inference.manifest import labels_sha256
from visionq.inference.spec import ModelSpec, Precision, Runtime
from visionq.wire.jobs import Prediction, Receipt

__all__ = [
    "FP32",
    "INT8",
    "MODEL_FIELDS",
    "Difference",
    "ModelIdentity",
    "Tolerance",
    "build_receipt",
    "file_sha256",
    "identify",
    "prediction_differences",
    "receipt_differences",
    "tolerance_for",
]

#: The receipt's `runtime` values.
ONNXRUNTIME = "onnxruntime"
TORCH = "torch"
#: The receipt's fields that describe the model run, in the order their differences are reported.
MODEL_FIELDS = ("weights_sha256", "runtime", "runtime_version", "precision", "preprocessing_sha256", "labels_sha256")


@dataclass(frozen=True)
class ModelIdentity:
    """What a loaded model is, for receipts and heartbeats: its weights file, that file's digest, its runtime."""

    engine: Runtime
    """How the loaded classifier runs: `onnx` (a user's file, or a built-in's export or int8 build), `torch`
    (a built-in's state dict), `torchscript` (a user's file)."""
    runtime_version: str
    weights: Path
    weights_sha256: str

    @property
    def runtime(self) -> str:
        """The receipt's `runtime`: `onnxruntime` or `torch`."""
        return ONNXRUNTIME if self.engine is Runtime.ONNX else TORCH


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in chunks (exports run to tens of MB)."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def identify(classifier: Classifier) -> ModelIdentity:
    """The identity of a loaded classifier: the file its weights came from, hashed. It reads the whole file, so
    the registry calls it once per load and keeps the answer."""
    spec = classifier.spec
    if spec.runtime is Runtime.ONNX:
        import onnxruntime

        version = str(onnxruntime.__version__)
    else:  # read from its metadata: importing PyTorch here, beside a thread that loads a model, raced its import
        version = importlib.metadata.version("torch")
    if spec.runtime is Runtime.TORCH:
        from visionq.inference.builtin_weights import builtin_weights_path

        weights = builtin_weights_path(spec.weights)
    else:
        weights = Path(spec.weights)
    return ModelIdentity(spec.runtime, version, weights, file_sha256(weights))


def build_receipt(
    image: bytes, spec: ModelSpec, identity: ModelIdentity, labels: Sequence[str], *, image_sha256: str | None = None
) -> Receipt:
    """The receipt of `image` classified by `spec` (the model that served it) loaded as `identity`, with the
    class names `labels`. `image_sha256`: the upload's digest when already taken (the API takes it as it accepts
    the upload, and the image store hands the worker those same bytes): hashing 500 KB again costs a quarter of a
    millisecond per job."""
    preprocessing, preprocessing_sha256, labels_digest = _model_digests(spec.transform, tuple(labels))
    return Receipt(
        image_sha256=image_sha256 or hashlib.sha256(image).hexdigest(),
        weights_sha256=identity.weights_sha256,
        runtime=identity.runtime,
        runtime_version=identity.runtime_version,
        precision=spec.precision.value,
        preprocessing=preprocessing,
        preprocessing_sha256=preprocessing_sha256,
        labels_sha256=labels_digest,
    )


@functools.lru_cache(maxsize=64)
def _model_digests(transform: Transform, labels: tuple[str, ...]) -> tuple[str, str, str]:
    """The receipt's fields that a model's every job shares: its preprocessing line and digest, and its labels'
    digest (joining and hashing a thousand class names for every job cost ~30 µs)."""
    return transform.canonical(), transform.sha256(), labels_sha256(labels)


@dataclass(frozen=True)
class Difference:
    """A receipt field whose value the job and the re-run do not share."""

    field: str
    job: str
    here: str


def receipt_differences(job: Receipt, here: Receipt) -> list[Difference]:
    """The `MODEL_FIELDS` in which the re-run's receipt differs from the job's (the image is checked apart)."""
    return [
        Difference(name, getattr(job, name), getattr(here, name))
        for name in MODEL_FIELDS
        if getattr(job, name) != getattr(here, name)
    ]


@dataclass(frozen=True)
class Tolerance:
    """How close a re-run's answer must be to the job's to count as the same."""

    probability: float
    """Largest absolute difference of a class's probability."""
    whole_order: bool
    """The same classes in the same order over the whole top-k; otherwise the same top-1 class only."""

    def describe(self, k: int) -> str:
        order = f"the same top-{k} classes in the same order" if self.whole_order else "the same top-1 class"
        return f"{order}, probabilities within {self.probability:g}"


#: An exact model: runs differ only in the order of floating-point sums (thread counts, CPU kernels), ~1e-6.
FP32 = Tolerance(probability=1e-4, whole_order=True)
#: An int8 build: ONNX Runtime's int8 kernels round differently on different CPUs (VNNI, AVX-512, AVX2), which
#: moves probabilities by up to about one quantisation step and may swap classes of nearly equal probability.
INT8 = Tolerance(probability=0.02, whole_order=False)


def tolerance_for(precision: str) -> Tolerance:
    return INT8 if precision == Precision.INT8.value else FP32


def prediction_differences(job: Sequence[Prediction], here: Sequence[Prediction], tolerance: Tolerance) -> list[str]:
    """How the re-run's ranking `here` (every class, most probable first) differs from the job's top-k `job`
    beyond `tolerance`; empty when it does not."""
    expected = [prediction.class_id for prediction in job]
    ranked = [prediction.class_id for prediction in here[: len(job)]]
    problems = []
    if tolerance.whole_order and ranked != expected:
        problems.append(f"the top-{len(job)} classes differ: the job's {expected}, the re-run's {ranked}")
    elif ranked[:1] != expected[:1]:
        problems.append(f"the top-1 class differs: the job's {expected[:1]}, the re-run's {ranked[:1]}")
    probabilities = {prediction.class_id: prediction.confidence for prediction in here}
    for prediction in job:
        got = probabilities.get(prediction.class_id)
        if got is None:
            problems.append(f"class {prediction.class_id} ({prediction.class_name}) is not among the re-run's classes")
        elif abs(got - prediction.confidence) > tolerance.probability:
            problems.append(
                f"class {prediction.class_id} ({prediction.class_name}): probability {prediction.confidence:.6f} in "
                f"the job, {got:.6f} in the re-run, more than {tolerance.probability:g} apart"
            )
    return problems
