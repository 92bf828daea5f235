"""Which prepared build a worker without PyTorch serves: the newest finished one of the model's own name."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from visionq.inference.catalog import BUILTIN_SPECS
from visionq.inference.export import ExportRefused, Verification, prepared

LITE0 = BUILTIN_SPECS[0]
MISSING = ModuleNotFoundError("No module named 'torch'")


def _build(folder: Path, name: str, *, age: int, finished: bool = True) -> Path:
    path = folder / name
    path.write_bytes(b"onnx")
    if finished:
        record = path.with_suffix(".json")
        record.write_text(json.dumps(asdict(Verification("onnx", 1.0, 64, 1e-6, 0.5))))
        os.utime(record, (1_000_000 - age, 1_000_000 - age))
    return path


def test_the_newest_finished_build_of_the_model_is_served(tmp_path: Path) -> None:
    _build(tmp_path, "efficientnet-lite0-00000000000000aa.onnx", age=100)
    newest = _build(tmp_path, "efficientnet-lite0-00000000000000bb.onnx", age=10)
    _build(tmp_path, "efficientnet-lite0-00000000000000cc.onnx", age=1, finished=False)  # no check: unfinished
    _build(tmp_path, "efficientnet-lite0-int8-00000000000000dd.onnx", age=0)  # another model's

    path, verification = prepared(LITE0, tmp_path, "efficientnet-lite0-", MISSING)

    assert path == newest
    assert verification.agreement == 1.0


def test_no_prepared_build_is_refused_with_what_to_run(tmp_path: Path) -> None:
    _build(tmp_path, "efficientnet-lite0-int8-00000000000000dd.onnx", age=0)

    with pytest.raises(ExportRefused, match="visionq prepare") as refused:
        prepared(LITE0, tmp_path, "efficientnet-lite0-", MISSING)

    assert refused.value.__cause__ is MISSING
