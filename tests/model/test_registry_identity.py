"""What the registry says each loaded model is: the weights file that actually runs, hashed, and its runtime."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnxruntime
import torch

from environment import model_cache
from model_factories import TinyColourNet, manifest, model_folder, save_torchscript
from visionq.inference.catalog import BUILTIN_SPECS, Catalog
from visionq.inference.export import ensure_onnx
from visionq.inference.manifest import load_user_models
from visionq.inference.registry import ModelRegistry
from visionq.inference.spec import Runtime
from visionq.inference.torch_backend import builtin_weights_path

CATALOG = Catalog(BUILTIN_SPECS, default="efficientnet-lite0")
LITE0 = CATALOG.resolve("efficientnet-lite0@1")


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_built_in_on_pytorch_is_its_state_dict() -> None:
    identity = ModelRegistry(CATALOG, builtin_onnx=False).identity(LITE0)

    assert identity.engine is Runtime.TORCH
    assert identity.runtime == "torch"
    assert identity.runtime_version == str(torch.__version__)
    assert identity.weights == builtin_weights_path("efficientnet-lite0")
    assert identity.weights_sha256 == sha256_of(identity.weights)


def test_a_built_in_on_onnx_runtime_is_its_export() -> None:
    registry = ModelRegistry(CATALOG, cache=model_cache())
    identity = registry.identity(LITE0)

    assert identity.engine is Runtime.ONNX
    assert (identity.runtime, identity.runtime_version) == ("onnxruntime", onnxruntime.__version__)
    assert identity.weights == ensure_onnx(LITE0, model_cache())[0]
    assert identity.weights_sha256 == sha256_of(identity.weights)
    assert registry.is_loaded(LITE0), "identifying a model loads it"


def test_a_user_model_is_its_own_file_and_is_hashed_once_per_load(tmp_path: Path) -> None:
    save_torchscript(
        TinyColourNet(probabilities=True),
        model_folder(tmp_path, "tiny", manifest("tiny", 1, "torchscript", "model.pt")) / "model.pt",
    )
    catalog = Catalog([*BUILTIN_SPECS, *load_user_models(tmp_path)], default="efficientnet-lite0")
    spec = catalog.resolve("tiny@1")
    registry = ModelRegistry(catalog)
    weights = tmp_path / "tiny" / "model.pt"

    first = registry.identity(spec)
    digest = sha256_of(weights)
    weights.write_bytes(b"changed on disk after the load")
    again = registry.identity(spec)

    assert (first.engine, first.runtime, first.weights) == (Runtime.TORCHSCRIPT, "torch", weights.resolve())
    assert first.weights_sha256 == digest
    assert again == first, "kept from the load, not read again for each job"
