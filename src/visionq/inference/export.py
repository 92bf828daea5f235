"""Built-in models on ONNX Runtime: exported once from their PyTorch weights, verified, cached on disk.

ONNX Runtime runs EfficientNet-Lite about four times faster than PyTorch eager on a CPU, with the same
answers, but only an export that is checked says so. `ensure_onnx` exports a built-in model, runs the
export and the PyTorch reference on a fixed sample (`verification_batch`), and keeps the file only when
their top-1 classes agree on at least `MIN_AGREEMENT` of it; otherwise it raises `ExportRefused` and the
caller serves the model with PyTorch instead. The file's name carries a digest of the weights, the torch
version and the opset, so new weights or a new exporter make a new file; a lock keeps concurrent worker
processes from exporting the same model twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from visionq.inference.classifier import Classifier
from visionq.inference.spec import ModelSpec, Runtime

__all__ = [
    "MIN_AGREEMENT",
    "ExportRefused",
    "Verification",
    "cached",
    "compare",
    "ensure_onnx",
    "fingerprint",
    "locked",
    "prepared",
    "verification_batch",
]

log = logging.getLogger(__name__)

#: Top-1 agreement with PyTorch below which an export is refused.
MIN_AGREEMENT = 0.99
#: Images in the verification sample.
SAMPLE_SIZE = 64
_SEED = 20261127
#: Images a comparison runs at once. A few: a layer's activations for 64 images are over 100 MB, which glibc maps
#: afresh for each layer and the kernel zeroes page by page (Lite2's export on 2 cores: 12.6 s, 9.8 of them in the
#: kernel, at 64; 7.1 s, 1.1, at 4; 6.5 s, 0.6, at 1).
_COMPARE_CHUNK = 4


class ExportRefused(RuntimeError):
    """The export's answers differ from PyTorch's on more of the sample than `MIN_AGREEMENT` allows."""


@dataclass(frozen=True)
class Verification:
    runtime: str
    agreement: float
    """Share of the sample on which the export's top-1 class is PyTorch's."""
    sample: int
    max_abs_diff: float
    """Largest difference of any class probability on the sample."""
    seconds: float
    """What the export and its check took."""
    cpu_feature: str | None = None
    """The CPU feature the file needs to run well, if any (the int8 builds on x86-64: VNNI)."""


def verification_batch(spec: ModelSpec, count: int = SAMPLE_SIZE) -> npt.NDArray[np.float32]:
    """A fixed, seeded sample of `count` images, normalised for `spec`: smooth colour fields with texture,
    which spread the model's answers over many classes (unlike flat noise)."""
    rng = np.random.default_rng(_SEED)
    size = spec.input_size
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(int(rng.integers(2, 9)),) * 2 + (3,), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
        texture = rng.normal(0.0, float(rng.uniform(0, 40)), size=smooth.shape)
        images.append(np.clip(smooth + texture, 0, 255) / 255.0)
    batch = np.stack(images).astype(np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32).reshape(1, 1, 1, 3)
    std = np.asarray(spec.std, dtype=np.float32).reshape(1, 1, 1, 3)
    return np.ascontiguousarray(((batch - mean) / std).transpose(0, 3, 1, 2))


def ensure_onnx(
    spec: ModelSpec, cache_dir: Path, *, threads: int = 0, minimum: float = MIN_AGREEMENT
) -> tuple[Path, Verification]:
    """The verified ONNX file of the built-in model `spec` in `cache_dir`, exported first if need be."""
    if spec.runtime != Runtime.TORCH:
        raise ValueError(f"{spec.ref}: only built-in models are exported, not runtime {spec.runtime.value!r}")
    try:
        path = cache_dir / f"{spec.weights}-{fingerprint(spec)}.onnx"
    except ModuleNotFoundError as exc:  # no visionq[export] here: serve what `visionq prepare` made elsewhere
        return prepared(spec, cache_dir, f"{spec.weights}-", exc)
    return cached(path, lambda: _export(spec, path, threads=threads, minimum=minimum))


def prepared(spec: ModelSpec, cache_dir: Path, prefix: str, missing: ModuleNotFoundError) -> tuple[Path, Verification]:
    """The newest finished file `<prefix><fingerprint>.onnx` (with its check) in `cache_dir`, for an install that
    cannot compute the fingerprint (no PyTorch): a worker image whose cache `visionq prepare` filled at build time.
    `ExportRefused` when there is none."""
    name = re.compile(rf"{re.escape(prefix)}[0-9a-f]{{16}}\.onnx")
    found = [
        path
        for path in cache_dir.glob(f"{prefix}*.onnx")
        if name.fullmatch(path.name) and path.with_suffix(".json").is_file()
    ]
    if not found:
        raise ExportRefused(
            f"{spec.ref}: no prepared build in {cache_dir}, and this install cannot make one ({missing}): run "
            "`visionq prepare` where visionq[export] is installed (e.g. in the worker image's build), or install it "
            "here"
        ) from missing
    path = max(found, key=lambda candidate: candidate.with_suffix(".json").stat().st_mtime)
    return path, Verification(**json.loads(path.with_suffix(".json").read_text(encoding="utf-8")))


def cached(path: Path, make: Callable[[], Verification]) -> tuple[Path, Verification]:
    """`path` and its check, made by `make` (which writes `path`) unless a finished one is there: its record
    (`.json`) is written last. Only the making takes the lock, so a cache prepared at set-up may be read-only."""
    record = path.with_suffix(".json")
    if not (path.exists() and record.exists()):
        path.parent.mkdir(parents=True, exist_ok=True)
        with locked(path.with_suffix(".lock")):
            if not (path.exists() and record.exists()):  # another process may have made it meanwhile
                verification = make()
                record.write_text(json.dumps(asdict(verification), indent=2) + "\n", encoding="utf-8")
                return path, verification
    return path, Verification(**json.loads(record.read_text(encoding="utf-8")))


def fingerprint(spec: ModelSpec, extra: str = "") -> str:
    """A digest of what an export of `spec` depends on: its weights, the exporter, the check (and `extra`).
    ModuleNotFoundError without PyTorch (an install that serves prepared exports only). PyTorch's version is read
    from its installed metadata, not by importing it: a worker that serves a prepared export never needs it."""
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError("No module named 'torch'", name="torch") from None

    from visionq.inference.builtin_weights import builtin_weights_path
    from visionq.inference.onnx_backend import DEFAULT_OPSET

    digest = hashlib.sha256(builtin_weights_path(spec.weights).read_bytes())
    digest.update(f"|torch {torch_version}|opset {DEFAULT_OPSET}|sample {SAMPLE_SIZE}".encode())
    if extra:
        digest.update(f"|{extra}".encode())
    return digest.hexdigest()[:16]


def _export(spec: ModelSpec, path: Path, *, threads: int, minimum: float) -> Verification:
    from visionq.inference.onnx_backend import OnnxClassifier, export_onnx
    from visionq.inference.torch_backend import TorchClassifier

    started = time.perf_counter()
    reference = TorchClassifier(spec)
    reference.setup("cpu")
    partial = path.with_suffix(f".{os.getpid()}.partial")
    try:
        export_onnx(reference, partial)
        exported = OnnxClassifier(
            spec.model_copy(update={"runtime": Runtime.ONNX, "weights": str(partial)}), threads=threads
        )
        exported.setup("cpu")
        verification = compare(
            reference,
            exported,
            verification_batch(spec),
            started=started,
            minimum=minimum,
            what=f"{spec.ref}: the ONNX export",
            against="PyTorch",
        )
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("exported %s to ONNX: %s", spec.ref, verification)
    return verification


def compare(
    reference: Classifier,
    candidate: Classifier,
    sample: npt.NDArray[np.float32],
    *,
    started: float,
    minimum: float,
    what: str,
    against: str,
) -> Verification:
    """How often `candidate` gives `reference`'s top-1 class on `sample`; `ExportRefused` (naming `what` and
    `against`) under `minimum`. `started` is when the making of the candidate began."""
    expected, got = (
        np.concatenate([model.predict(sample[i : i + _COMPARE_CHUNK]) for i in range(0, len(sample), _COMPARE_CHUNK)])
        for model in (reference, candidate)
    )
    agreement = float(np.mean(expected.argmax(axis=1) == got.argmax(axis=1)))
    if agreement < minimum:
        raise ExportRefused(
            f"{what} agrees with {against} on {agreement:.1%} of {len(sample)} images, "
            f"under the {minimum:.0%} required; it is not used"
        )
    return Verification(
        runtime=Runtime.ONNX.value,
        agreement=agreement,
        sample=len(sample),
        max_abs_diff=float(np.max(np.abs(expected - got))),
        seconds=round(time.perf_counter() - started, 3),
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
