"""Static int8 builds of the built-in models: quantised once from their verified ONNX export, checked, cached.

ONNX Runtime's static quantisation (QDQ, int8 weights per channel, uint8 activations) runs EfficientNet-Lite
about twice as fast on a CPU (2.1-2.3 times on one thread, measured), but it changes some answers. A build is
kept only if its top-1 class is the exact model's (the fp32 export, itself verified against PyTorch) on at
least `MIN_INT8_AGREEMENT` of a check set; otherwise it is refused (`ExportRefused`) and its model fails to
load rather than answer badly. The agreement, the check set's size and the CPU feature the build needs are
kept with the file and listed in `/models`.

**The recipe** (`RECIPE`; measured lever by lever with `bench/int8_levers.py`, see docs/models.md):

- calibration: `CALIBRATION_CROPS` varied crops (area, aspect ratio, mirror, brightness, contrast, saturation)
  of the eight `CALIBRATION_PHOTOS` in `calibration/`, MinMax ranges;
- the stem convolution and the first block (`FLOAT_NODES`) stay float, as does the softmax. They work on the
  image at half its size, where uint8 rounding costs the most: with them quantised, the builds agreed on 91-95%
  of the check crops instead of 99%. Keeping them costs no speed. More or other crops, percentile or entropy
  calibration, asymmetric weights, or a float head and classifier changed the agreement by less than the
  measurement's noise; symmetric activations, per-tensor weights or moving-average ranges made it worse.

**The check set** (`check_set`): the first `CHECK_SIZE` varied crops (another seed) of the eight
`CHECK_PHOTOS` on which the exact model is decisive, its top-1 probability at least `DECISIVE_RATIO` times
its runner-up's. It is disjoint from calibration by photo, not just by seed: no check photo is ever cropped
for calibration, and each photo is a different scene. Images on which the exact model hesitates are left
out because there top-1 agreement measures noise, not the build: on crops of these photos, moving every
pixel by one grey level (invisible) already changes the exact model's own top-1 class on about half of the
indecisive crops, and on a tenth to a sixth of the decisive ones, where the builds change it on about 1%. The
export check's synthetic images (`verification_batch`) are never decisive, so they are not part of it (the
builds agree on 86-91% of them; docs/models.md lists every figure).

The file's name carries a digest of the recipe, the photos' bytes, the model's transform and ONNX Runtime's
version, so a change of any of them makes a new build instead of reusing a stale one.

Dynamic int8 quantisation is not offered: on these models it is both slower and wronger than fp32.

On x86-64, the builds need a CPU with VNNI (`CPU_FEATURE`). Without it, ONNX Runtime multiplies uint8
activations by int8 weights with an instruction (VPMADDUBSW) whose int16 sums saturate, and the builds lose
much of their agreement. Measured with the previous recipe (all layers quantised, 64 square crops, checked on
other crops of the same photos plus the synthetic sample) on an AVX2-only AMD EPYC, against 86%, 82% and 89%
with VNNI: Lite0 52%, Lite1 57%, Lite2 76%; with 7-bit weights (`reduce_range`, ONNX Runtime's advice for
such CPUs) 79%, 64%, 81%; with uint8 weights (U8U8), 88% for Lite0 but seven times slower than fp32. None
reaches the bar, and this recipe could not be measured on such a CPU (none was available), so there the
builds are refused at once, whether made here or brought from another machine.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import logging
import os
import platform
import re
import time
from collections.abc import Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageEnhance

from visionq.inference.export import (
    ExportRefused,
    Verification,
    cached,
    compare,
    ensure_onnx,
    fingerprint,
    prepared,
)
from visionq.inference.spec import ModelSpec, Precision, Runtime

if TYPE_CHECKING:
    from visionq.inference.classifier import Classifier

__all__ = [
    "CALIBRATION_CROPS",
    "CALIBRATION_PHOTOS",
    "CALIBRATION_SEED",
    "CHECK_PHOTOS",
    "CHECK_SEED",
    "CHECK_SIZE",
    "CPU_FEATURE",
    "DECISIVE_RATIO",
    "MIN_INT8_AGREEMENT",
    "RECIPE",
    "check_set",
    "ensure_int8",
    "int8_path",
    "int8_unsupported",
    "judge_cpu",
    "photo_crops",
]

log = logging.getLogger(__name__)

#: Top-1 agreement with the exact model, on the check set, below which an int8 build is refused.
MIN_INT8_AGREEMENT = 0.95
#: Crops that calibrate the activation ranges.
CALIBRATION_CROPS = 128
#: Images in the check set, and how decisive the exact model must be on each (top-1 / runner-up probability).
CHECK_SIZE = 256
DECISIVE_RATIO = 2.0
#: Check crops looked at, at most, to find `CHECK_SIZE` decisive ones (about 45% are).
MAX_CHECK_CANDIDATES = 4096
#: Seeds of the calibration crops and of the check crops.
CALIBRATION_SEED, CHECK_SEED = 1, 2
#: Photos of `calibration/` whose crops calibrate, and photos whose crops only check: disjoint.
CALIBRATION_PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "brick", "gravel", "cell", "clock")
CHECK_PHOTOS = ("astronaut", "camera", "retina", "grass", "coins", "text", "ihc", "horse")
#: Nodes of the export kept in float (by name prefix): the stem convolution and its ReLU6, and the first block.
FLOAT_NODES = ("/_conv_stem/", "/_swish/", "/_blocks.0/")
#: What an x86-64 CPU needs to run the builds well (see the module's doc).
CPU_FEATURE = "avx512_vnni or avx_vnni"
#: Everything the build depends on besides the exact model, the photos and the transform; in the file's name.
RECIPE = (
    f"qdq u8 activations s8 per-channel weights|float {','.join(FLOAT_NODES)},Softmax"
    f"|calibration minmax {CALIBRATION_CROPS} varied crops seed {CALIBRATION_SEED} of {','.join(CALIBRATION_PHOTOS)}"
    f"|check {CHECK_SIZE} decisive x{DECISIVE_RATIO} varied crops seed {CHECK_SEED} of {','.join(CHECK_PHOTOS)}"
)
_CHUNK = 64


@functools.cache
def int8_unsupported() -> str | None:
    """Why this machine's CPU cannot run the int8 builds well (see the module's doc), or None if it can."""
    try:
        cpuinfo: str | None = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = None
    return judge_cpu(platform.machine(), cpuinfo)


def judge_cpu(machine: str, cpuinfo: str | None) -> str | None:
    """`int8_unsupported` for a CPU of architecture `machine` described by `cpuinfo` (Linux's /proc/cpuinfo).
    Only x86-64 with a known list of flags is judged; elsewhere the agreement check decides."""
    if not _is_x86(machine) or cpuinfo is None:
        return None
    if re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo):
        return None
    return (
        "this CPU has no VNNI instructions (AVX-512 VNNI or AVX-VNNI), without which ONNX Runtime's int8 "
        "kernels overflow and the int8 builds answer badly"
    )


def _is_x86(machine: str) -> bool:
    return machine.lower() in ("x86_64", "amd64")


def _photo_folder() -> Traversable:
    return resources.files("visionq.inference") / "calibration"


def _crops(spec: ModelSpec, seed: int, photos: tuple[str, ...] | None, varied: bool) -> Iterator[Image.Image]:
    folder = _photo_folder()
    names = photos or tuple(sorted(entry.name[:-4] for entry in folder.iterdir() if entry.name.endswith(".jpg")))
    images = [Image.open(folder / f"{name}.jpg").convert("RGB") for name in names]  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    for i in range(MAX_CHECK_CANDIDATES):
        photo = images[i % len(images)]
        width, height = photo.size
        if varied:
            area = width * height * rng.uniform(0.1, 1.0)
            aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
            w = min(width, max(8, round(np.sqrt(area * aspect))))
            h = min(height, max(8, round(np.sqrt(area / aspect))))
        else:
            w = h = int(min(width, height) * rng.uniform(0.3, 1.0))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        crop = photo.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if varied:
            crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.6, 1.4))
            crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.6, 1.4))
            crop = ImageEnhance.Color(crop).enhance(0.0 if rng.random() < 0.1 else rng.uniform(0.5, 1.5))
        yield crop


def photo_crops(
    spec: ModelSpec, count: int, seed: int, *, photos: tuple[str, ...] | None = None, varied: bool = False
) -> npt.NDArray[np.float32]:
    """`count` (at most `MAX_CHECK_CANDIDATES`) seeded crops of the calibration folder's `photos` (names without
    `.jpg`; all of them by default), taken in turn, preprocessed for `spec` as a job's image would be. Plain
    crops are squares of 30–100% of the short side, half of them mirrored; `varied` ones vary the area
    (10–100%) and aspect ratio (3:4 to 4:3) too, then brightness and contrast (±40%) and saturation (±50%, and
    one in ten grey)."""
    crops = itertools.islice(_crops(spec, seed, photos, varied), count)
    return np.stack([spec.transform.apply(crop) for crop in crops]).astype(np.float32)


def check_set(spec: ModelSpec, exact: Classifier, size: int = CHECK_SIZE) -> npt.NDArray[np.float32]:
    """The check set of the int8 build of `spec` (see the module's doc): the first `size` varied crops of the
    check photos on which `exact`, the exact model, is decisive. `ExportRefused` if too few are."""
    crops = _crops(spec, CHECK_SEED, CHECK_PHOTOS, varied=True)
    kept: list[npt.NDArray[np.float32]] = []
    looked = 0
    while len(kept) < size and looked < MAX_CHECK_CANDIDATES:
        chunk = np.stack([spec.transform.apply(crop) for crop in itertools.islice(crops, _CHUNK)])
        looked += len(chunk)
        top = np.sort(exact.predict(chunk), axis=1)
        kept.extend(chunk[top[:, -1] >= DECISIVE_RATIO * top[:, -2]])
    if len(kept) < size:
        raise ExportRefused(
            f"{spec.ref}: the exact model is decisive on only {len(kept)} of {looked} check crops, "
            f"under the {size} the check needs"
        )
    return np.stack(kept[:size]).astype(np.float32)


def ensure_int8(
    spec: ModelSpec, cache_dir: Path, *, threads: int = 0, minimum: float = MIN_INT8_AGREEMENT
) -> tuple[Path, Verification]:
    """The checked static int8 build of the built-in model `spec` (precision int8) in `cache_dir`, made first
    (with the exact model's export) if need be; refused under `minimum` agreement."""
    if spec.precision is not Precision.INT8 or spec.runtime is not Runtime.TORCH:
        raise ValueError(f"{spec.ref}: only the int8 builds of built-in models are quantised")
    exact = spec.model_copy(update={"name": spec.weights, "precision": Precision.FP32})
    why = int8_unsupported()
    if why is not None:
        raise ExportRefused(f"{spec.ref} is not served on this machine: {why}; {exact.name} is the exact model")
    try:
        path = int8_path(spec, cache_dir)
    except ModuleNotFoundError as exc:  # no visionq[export] here: serve what `visionq prepare` made elsewhere
        return prepared(spec, cache_dir, f"{spec.weights}-int8-", exc)
    source, _ = ensure_onnx(exact, cache_dir, threads=threads)
    return cached(path, lambda: _quantize(exact, source, path, threads=threads, minimum=minimum))


def int8_path(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the int8 build of `spec` is kept in `cache_dir`: its name changes with the exact model's weights and
    exporter, ONNX Runtime's version, `RECIPE`, the photos' bytes and the model's transform."""
    import onnxruntime

    exact = spec.model_copy(update={"name": spec.weights, "precision": Precision.FP32})
    made_by = "|".join(
        (f"int8 onnxruntime {onnxruntime.__version__}", RECIPE, _photos_digest(), spec.transform.canonical())
    )
    return cache_dir / f"{spec.weights}-int8-{fingerprint(exact, made_by)}.onnx"


@functools.cache
def _photos_digest() -> str:
    digest = hashlib.sha256()
    for name in (*CALIBRATION_PHOTOS, *CHECK_PHOTOS):
        digest.update(f"{name}:".encode() + (_photo_folder() / f"{name}.jpg").read_bytes())
    return f"photos {digest.hexdigest()[:16]}"


def _float_nodes(model: Path) -> list[str]:
    """The nodes of `model` that stay float: `FLOAT_NODES` and the softmax."""
    import onnx

    nodes = onnx.load(str(model)).graph.node
    kept = [node.name for node in nodes if node.name.startswith(FLOAT_NODES)]
    missing = [prefix for prefix in FLOAT_NODES if not any(name.startswith(prefix) for name in kept)]
    if missing:
        raise ExportRefused(f"{model.name}: the export has no nodes named {', '.join(missing)}*")
    # Probabilities stay float: a uint8 softmax output has ties and no longer sums to 1.
    return kept + [node.name for node in nodes if node.op_type == "Softmax"]


def _quantize(exact: ModelSpec, source: Path, path: Path, *, threads: int, minimum: float) -> Verification:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from visionq.inference.onnx_backend import INPUT_NAME, OnnxClassifier

    class Crops(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self, batch: npt.NDArray[np.float32]) -> None:
            self._rows = iter(batch)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            row = next(self._rows, None)
            return None if row is None else {INPUT_NAME: row[None]}

    class Quiet(logging.Filter):  # the quantiser logs a line per rescaled tensor on the root logger
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno > logging.INFO

    quiet = Quiet()
    logging.getLogger().addFilter(quiet)  # only records logged on the root logger itself pass a root filter
    started = time.perf_counter()
    prepared, partial = (path.with_suffix(f".{os.getpid()}.{part}") for part in ("prepared", "partial"))
    try:
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared),
            str(partial),
            Crops(photo_crops(exact, CALIBRATION_CROPS, CALIBRATION_SEED, photos=CALIBRATION_PHOTOS, varied=True)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_float_nodes(prepared),
        )
        reference, build = (
            OnnxClassifier(exact.model_copy(update={"runtime": Runtime.ONNX, "weights": str(p)}), threads=threads)
            for p in (source, partial)
        )
        reference.setup("cpu")
        build.setup("cpu")
        verification = compare(
            reference,
            build,
            check_set(exact, reference),
            started=started,
            minimum=minimum,
            what=f"{exact.name}-int8: the int8 build",
            against="the exact model",
        )
        verification = dataclasses.replace(
            verification, cpu_feature=CPU_FEATURE if _is_x86(platform.machine()) else None
        )
        partial.replace(path)
    finally:
        logging.getLogger().removeFilter(quiet)
        prepared.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    log.info("made the int8 build of %s: %s", exact.ref, verification)
    return verification
