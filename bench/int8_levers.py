"""Which quantisation levers make the int8 builds agree with the exact models? Agreement per lever and model.

The measurement behind `visionq.inference.quantize`'s recipe (issue 13, item 4; the figures are in
docs/models.md, "The int8 builds"). For each built-in model it quantises the verified fp32 export with one lever
at a time (calibration crops, calibration method, layers kept in float, symmetric ranges, per-tensor weights)
and measures the build's top-1 agreement with the fp32 export on images that calibration never saw:

- `held`: 512 varied crops of the check photos (`quantize.CHECK_PHOTOS`, none of which calibrates; the same
  stream of crops the check set is taken from), and `held_decisive`, those of them on which the exact model is
  decisive (top-1 probability at least twice the runner-up's: what `quantize.check_set` keeps);
- `synthetic`: the export check's 64 smooth colour fields (`export.verification_batch`);
- `same`: crops (another seed) of the calibration photos themselves, only weakly disjoint, for comparison.

The first row per model is the exact model itself on the same images with every pixel moved by one grey level:
how much an invisible change moves the answers. The lever `final` is the build `visionq prepare` makes
(`quantize.ensure_int8`, made afresh), with its build time and its own check. `int8_ms` and `fp32_ms` are one
image on one thread, the best of 40 runs.

    nice -n 5 python bench/int8_levers.py [--models 0,1,2] [--levers ref,x_stem_b0,final] [--tag v2]

Each row is printed as a JSON line and appended to --out. Calibration ranges are cached in /tmp/int8-bench by
--tag, model and calibration: change the tag when the photos or the preprocessing change. Percentile
calibration takes about 4 GB of memory for Lite2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from visionq.inference import quantize
from visionq.inference.catalog import BUILTIN_SPECS
from visionq.inference.export import Verification, ensure_onnx, verification_batch
from visionq.inference.onnx_backend import INPUT_NAME, OnnxClassifier
from visionq.inference.spec import ModelSpec, Precision, Runtime

WORK = Path("/tmp/int8-bench")
STRIDE = 16

#: lever name -> options: crops, varied, method, percentile, exclude (node groups kept in float), extra options.
#: Each lever changes one thing from `ref` (128 varied crops, MinMax, everything but the softmax quantised);
#: `base` is the previous recipe's calibration (64 square crops), on the calibration photos only.
V = {"crops": 128, "varied": True}
LEVERS: dict[str, dict[str, Any]] = {
    "base": {"crops": 64, "varied": False},
    "square256": {"crops": 256, "varied": False},
    "varied64": {"crops": 64, "varied": True},
    "ref": V,
    "varied256": {"crops": 256, "varied": True},
    "pct99.99": {**V, "method": "Percentile", "percentile": 99.99},
    "pct99.999": {**V, "method": "Percentile", "percentile": 99.999},
    "entropy": {**V, "method": "Entropy"},
    "moving_avg": {**V, "extra": {"CalibMovingAverage": True}},
    "act_sym": {**V, "extra": {"ActivationSymmetric": True}},
    "w_asym": {**V, "extra": {"WeightSymmetric": False}},
    "per_tensor": {**V, "per_channel": False},
    "x_fc": {**V, "exclude": ["fc"]},
    "x_head_fc": {**V, "exclude": ["head", "fc"]},
    "x_stem": {**V, "exclude": ["stem"]},
    "x_stem_b0": {**V, "exclude": ["stem", "block0"]},
    "x_stem_b01": {**V, "exclude": ["stem", "block0", "block1"]},
    "x_stem_b0_head_fc": {**V, "exclude": ["stem", "block0", "head", "fc"]},
    "x_stem_b0+entropy": {**V, "method": "Entropy", "exclude": ["stem", "block0"]},
    "x_stem_b0+pct99.99": {**V, "method": "Percentile", "percentile": 99.99, "exclude": ["stem", "block0"]},
    "x_stem_b0+varied256": {"crops": 256, "varied": True, "exclude": ["stem", "block0"]},
    "x_stem_b0+varied64": {"crops": 64, "varied": True, "exclude": ["stem", "block0"]},
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The quantiser logs (and prints) a line per tensor."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        root.setLevel(level)


def classifier(spec: ModelSpec, path: Path) -> OnnxClassifier:
    model = OnnxClassifier(spec.model_copy(update={"runtime": Runtime.ONNX, "weights": str(path)}), threads=1)
    model.setup("cpu")
    return model


def latency(model: OnnxClassifier, image: npt.NDArray[np.float32], repeats: int = 40) -> float:
    """Seconds for one image on one thread: the fastest of `repeats` runs (the machine is shared)."""
    model.predict(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict(image)
        times.append(time.perf_counter() - started)
    return min(times)


def predict(model: OnnxClassifier, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """64 images at a time: Lite2's activations for 512 images at once take over 10 GB."""
    return np.concatenate([model.predict(batch[i : i + 64]) for i in range(0, len(batch), 64)])


def decisive(probabilities: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Images whose top-1 probability is at least twice the runner-up's."""
    top = np.sort(probabilities, axis=1)
    return np.asarray(top[:, -1] >= 2 * top[:, -2])


def jitter(batch: npt.NDArray[np.float32], spec: ModelSpec) -> npt.NDArray[np.float32]:
    """`batch` with every pixel moved by -1, 0 or +1 grey level (seeded): an invisible change."""
    step = np.asarray(spec.std, dtype=np.float32).reshape(1, 3, 1, 1) * 255
    noise = np.random.default_rng(0).integers(-1, 2, batch.shape).astype(np.float32)
    return (batch + noise / step).astype(np.float32)


class Reader:
    def __init__(self, batch: npt.NDArray[np.float32]) -> None:
        self.batch, self.start, self.end = batch, 0, len(batch)

    def __len__(self) -> int:
        return len(self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        if self.start >= self.end:
            return None
        row = self.batch[self.start][None]
        self.start += 1
        return {INPUT_NAME: row}


def node_names(prepared: Path, parts: list[str]) -> list[str]:
    """The softmax and the nodes of `parts`, each conv with the Clip (ReLU6) that follows it."""
    import onnx

    nodes = onnx.load(str(prepared)).graph.node
    prefixes = {
        "stem": ("/_conv_stem/", "/_swish/"),
        "block0": ("/_blocks.0/",),
        "block1": ("/_blocks.1/",),
        "head": ("/_conv_head/", "/_swish_1/"),
        "fc": ("/ReduceMean", "/_fc/"),
    }
    names = [n.name for n in nodes if n.op_type == "Softmax"]
    for part in parts:
        names += [n.name for n in nodes if n.name.startswith(prefixes[part])]
    return names


def run_lever(
    spec: ModelSpec, prepared: Path, lever: str, options: dict[str, Any], tag: str
) -> tuple[Path, float, bool]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = options.get("method", "MinMax")
    crops, varied = options["crops"], options["varied"]
    extra = {"CalibStridedMinMax": STRIDE, **options.get("extra", {})}
    if "percentile" in options:
        extra["CalibPercentile"] = options["percentile"]
    calib_key = f"{method}-{options.get('percentile', '')}-{crops}-{varied}-{extra.get('CalibMovingAverage', False)}"
    calib_cache = WORK / f"calib-{tag}-{spec.weights}-{calib_key}.json"
    out = WORK / f"int8-{tag}-{spec.weights}-{lever}.onnx"
    calibrated = not calib_cache.exists()
    started = time.perf_counter()
    batch = quantize.photo_crops(spec, crops, 1, photos=quantize.CALIBRATION_PHOTOS, varied=varied)
    with quiet():
        quantize_static(
            str(prepared),
            str(out),
            Reader(batch),
            quant_format=QuantFormat.QDQ,
            per_channel=options.get("per_channel", True),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=node_names(prepared, options.get("exclude", [])),
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options=extra,
            calibration_cache_path=calib_cache,
        )
    return out, time.perf_counter() - started, calibrated


def build_final(spec: ModelSpec, source: Path) -> tuple[Path, float, Verification]:
    """The int8 build `visionq prepare` makes (`quantize.ensure_int8`), made afresh next to a copy of the export,
    the seconds it took, and its check."""
    folder = WORK / f"final-{spec.weights}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for made in (source, source.with_suffix(".json")):
        shutil.copy(made, folder / made.name)
    int8 = next(s for s in BUILTIN_SPECS if s.name == f"{spec.weights}-int8")
    started = time.perf_counter()
    with quiet():
        path, verification = quantize.ensure_int8(int8, folder)
    return path, time.perf_counter() - started, verification


Batches = dict[str, npt.NDArray[np.float32]]


def agreement_row(
    row: dict[str, Any], expected: Batches, model: OnnxClassifier, subsets: Batches, transform: Any = None
) -> dict[str, Any]:
    """`row` with `model`'s agreement with `expected` on each subset (of `transform(batch)` if given), and on
    the decisive held crops."""
    sure = decisive(expected["held"])
    together = []
    for name, batch in subsets.items():
        agree = expected[name].argmax(1) == predict(model, batch if transform is None else transform(batch)).argmax(1)
        row[name] = round(float(agree.mean()), 4)
        if name == "held":
            row["held_decisive"] = round(float(agree[sure].mean()), 4)
        if name != "same":
            together.append(agree)
    row["held+synthetic"] = round(float(np.concatenate(together).mean()), 4)
    row["decisive_n"] = int(sure.sum())
    return row


def emit(row: dict[str, Any], out: str) -> None:
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")


def measure(spec: ModelSpec, levers: list[str], args: argparse.Namespace) -> None:
    """One row for the exact model under an invisible change, then one per lever."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, _ = ensure_onnx(spec, WORK / "cache", threads=1)
    prepared = WORK / f"prepared-{spec.weights}.onnx"
    if not prepared.exists():
        with quiet():
            quant_pre_process(str(source), str(prepared))
    subsets = {
        "held": quantize.photo_crops(spec, args.held, 2, photos=quantize.CHECK_PHOTOS, varied=True),
        "synthetic": verification_batch(spec),
        "same": quantize.photo_crops(spec, args.same, 3, photos=quantize.CALIBRATION_PHOTOS, varied=True),
    }
    reference = classifier(spec, source)
    ref_file = WORK / f"ref-{args.tag}-{spec.weights}-{args.held}-{args.same}.npz"
    if ref_file.exists():
        expected = dict(np.load(ref_file))
    else:
        expected = {name: predict(reference, batch) for name, batch in subsets.items()}
        np.savez(ref_file, **expected)
    fp32_ms = round(latency(reference, subsets["held"][:1]) * 1000, 2)
    row: dict[str, Any] = {"model": spec.weights, "lever": "fp32 +-1 grey level", "fp32_ms": fp32_ms}
    emit(agreement_row(row, expected, reference, subsets, lambda batch: jitter(batch, spec)), args.out)
    for lever in levers:
        row = {"model": spec.weights, "lever": lever}
        if lever == "final":
            path, seconds, verification = build_final(spec, source)
            row |= {"build_s": round(seconds, 1), "check": verification.agreement, "check_n": verification.sample}
        else:
            path, seconds, calibrated = run_lever(spec, prepared, lever, LEVERS[lever], args.tag)
            row["quantise_s" if calibrated else "quantise_s_cached_ranges"] = round(seconds, 1)
        build = classifier(spec, path)
        agreement_row(row, expected, build, subsets)
        row |= {"int8_ms": round(latency(build, subsets["held"][:1]) * 1000, 2), "fp32_ms": fp32_ms}
        emit(row, args.out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="0,1,2")
    parser.add_argument("--levers", default=",".join([*LEVERS, "final"]))
    parser.add_argument("--held", type=int, default=512)
    parser.add_argument("--same", type=int, default=128)
    parser.add_argument("--tag", default="v1", help="names the calibration caches (change with the photo split)")
    parser.add_argument("--out", default=str(WORK / "levers.jsonl"))
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    exact_specs = [s for s in BUILTIN_SPECS if s.precision is Precision.FP32]
    for index in (int(i) for i in args.models.split(",")):
        measure(exact_specs[index], args.levers.split(","), args)


if __name__ == "__main__":
    main()
