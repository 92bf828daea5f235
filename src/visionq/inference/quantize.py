"""Static int8 builds of the built-in models: quantised once from their verified ONNX export, checked, cached.

ONNX Runtime's static quantisation (QDQ, int8 weights per channel, uint8 activations) runs EfficientNet-Lite
about twice as fast on a CPU, but it changes some answers. The activation ranges are calibrated on seeded
crops of a few photos shipped with visionq (`calibration/`), and the build is then compared with the exact
model (the fp32 export, itself verified against PyTorch) on other crops of those photos and on the export
check's sample. The agreement is kept with the file and listed in `/models`; a build under
`MIN_INT8_AGREEMENT` is refused (`ExportRefused`), and its model fails to load rather than answer badly.

Dynamic int8 quantisation is not offered: on these models it is both slower and wronger than fp32.

On x86-64, the builds need a CPU with VNNI (AVX-512 VNNI or AVX-VNNI). Without it, ONNX Runtime multiplies
uint8 activations by int8 weights with an instruction (VPMADDUBSW) whose int16 sums saturate, and the builds
lose much of their agreement. Measured on an AVX2-only AMD EPYC, against 86%, 82% and 89% with VNNI:
Lite0 52%, Lite1 57%, Lite2 76%; with 7-bit weights (`reduce_range`, ONNX Runtime's advice) 79%, 64%, 81%;
with uint8 weights, 88% for Lite0 but seven times slower than fp32. So there the builds are refused at once,
whether made here or brought from another machine.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import re
import time
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from visionq.inference.export import (
    ExportRefused,
    Verification,
    cached,
    compare,
    ensure_onnx,
    fingerprint,
    verification_batch,
)
from visionq.inference.spec import ModelSpec, Precision, Runtime

__all__ = ["CALIBRATION_CROPS", "MIN_INT8_AGREEMENT", "ensure_int8", "int8_unsupported", "judge_cpu", "photo_crops"]

log = logging.getLogger(__name__)

#: Top-1 agreement with the exact model below which an int8 build is refused.
MIN_INT8_AGREEMENT = 0.8
#: Crops that calibrate the activation ranges, and crops (of another seed) that measure the agreement.
CALIBRATION_CROPS = 64
CHECK_CROPS = 128
_CALIBRATION_SEED, _CHECK_SEED = 1, 2


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
    if machine.lower() not in ("x86_64", "amd64") or cpuinfo is None:
        return None
    if re.search(r"\b(avx512_vnni|avx_vnni)\b", cpuinfo):
        return None
    return (
        "this CPU has no VNNI instructions (AVX-512 VNNI or AVX-VNNI), without which ONNX Runtime's int8 "
        "kernels overflow and the int8 builds answer badly"
    )


def photo_crops(spec: ModelSpec, count: int, seed: int) -> npt.NDArray[np.float32]:
    """`count` seeded square crops (30–100% of the short side) of the calibration photos, some mirrored,
    preprocessed for `spec` as a job's image would be."""
    folder = resources.files("visionq.inference") / "calibration"
    photos = [
        Image.open(folder / name).convert("RGB")  # type: ignore[arg-type]
        for name in sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".jpg"))
    ]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.3, 1.0))
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(spec.transform.apply(crop))
    return np.stack(crops).astype(np.float32)


def ensure_int8(
    spec: ModelSpec, cache_dir: Path, *, threads: int = 0, minimum: float = MIN_INT8_AGREEMENT
) -> tuple[Path, Verification]:
    """The checked static int8 build of the built-in model `spec` (precision int8) in `cache_dir`, made first
    (with the exact model's export) if need be; refused under `minimum` agreement."""
    import onnxruntime

    if spec.precision is not Precision.INT8 or spec.runtime is not Runtime.TORCH:
        raise ValueError(f"{spec.ref}: only the int8 builds of built-in models are quantised")
    exact = spec.model_copy(update={"name": spec.weights, "precision": Precision.FP32})
    why = int8_unsupported()
    if why is not None:
        raise ExportRefused(f"{spec.ref} is not served on this machine: {why}; {exact.name} is the exact model")
    source, _ = ensure_onnx(exact, cache_dir, threads=threads)
    made_by = f"int8 onnxruntime {onnxruntime.__version__}|crops {CALIBRATION_CROPS} {CHECK_CROPS}"
    path = cache_dir / f"{spec.weights}-int8-{fingerprint(exact, made_by)}.onnx"
    return cached(path, lambda: _quantize(exact, source, path, threads=threads, minimum=minimum))


def _softmax_nodes(model: Path) -> list[str]:
    import onnx

    return [node.name for node in onnx.load(str(model)).graph.node if node.op_type == "Softmax"]


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
            Crops(photo_crops(exact, CALIBRATION_CROPS, _CALIBRATION_SEED)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # Probabilities stay float: a uint8 softmax output has ties and no longer sums to 1.
            nodes_to_exclude=_softmax_nodes(prepared),
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
            np.concatenate([photo_crops(exact, CHECK_CROPS, _CHECK_SEED), verification_batch(exact)]),
            started=started,
            minimum=minimum,
            what=f"{exact.name}-int8: the int8 build",
            against="the exact model",
        )
        partial.replace(path)
    finally:
        logging.getLogger().removeFilter(quiet)
        prepared.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    log.info("made the int8 build of %s: %s", exact.ref, verification)
    return verification
