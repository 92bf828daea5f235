"""User models end to end: a tiny 3-class network saved as ONNX and as TorchScript, each with a manifest
and labels, loaded through build_catalog + ModelRegistry, giving the same probabilities on both runtimes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_factories import (
    BLUE,
    GREEN,
    RED,
    SIZE,
    DropsRows,
    TinyColourNet,
    manifest,
    model_folder,
    save_torchscript,
)
from visionq.errors import InternalError
from visionq.imaging.transforms import to_input
from visionq.inference.catalog import Catalog, build_catalog
from visionq.inference.classifier import Batch
from visionq.inference.onnx_backend import OnnxClassifier, export_module_onnx
from visionq.inference.registry import ModelRegistry
from visionq.inference.spec import ModelSpec, Runtime
from visionq.inference.torch_backend import TorchClassifier
from visionq.settings import Settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny@1: ONNX, outputs probabilities; tiny@2: TorchScript, outputs logits; tiny-fixed@1: ONNX, batch 1."""
    root = tmp_path_factory.mktemp("models")
    onnx_folder = model_folder(root, "tiny-onnx", manifest("tiny", 1, "onnx", "model.onnx"))
    export_module_onnx(TinyColourNet(probabilities=True), SIZE, onnx_folder / "model.onnx")
    ts_folder = model_folder(root, "tiny-torchscript", manifest("tiny", 2, "torchscript", "model.pt"))
    save_torchscript(TinyColourNet(probabilities=False), ts_folder / "model.pt")
    fixed_folder = model_folder(root, "tiny-fixed", manifest("tiny-fixed", 1, "onnx", "fixed.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            TinyColourNet(probabilities=False).eval(),
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(fixed_folder / "fixed.onnx"),
            input_names=["pixels"],
            dynamo=False,
        )
    return root


@pytest.fixture(scope="module")
def catalog(model_dir: Path) -> Catalog:
    return build_catalog(Settings(model_dir=model_dir, default_model="tiny"))


@pytest.fixture(scope="module")
def registry(catalog: Catalog) -> ModelRegistry:
    registry = ModelRegistry(catalog, device="cpu")
    registry.warm(["tiny@1", "tiny@2", "tiny-fixed"])
    return registry


def _image(rgb: tuple[int, int, int]) -> Image.Image:
    """A 48x40 image of one colour with a mild diagonal gradient."""
    ramp = np.add.outer(np.arange(40), np.arange(48)).astype(np.float32) / 4
    pixels = np.clip(np.asarray(rgb, dtype=np.float32) + ramp[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _batch(spec: ModelSpec, *colours: tuple[int, int, int]) -> Batch:
    return np.stack([to_input(_image(c), size=spec.input_size, mean=spec.mean, std=spec.std) for c in colours])


COLOURS = [(200, 30, 40), (20, 190, 40), (30, 40, 220), (240, 60, 60)]
EXPECTED = [RED, GREEN, BLUE, RED]


def test_catalog_lists_the_user_models(catalog: Catalog) -> None:
    assert catalog.resolve("latest").ref == "tiny@2"
    assert catalog.resolve("tiny@1").runtime is Runtime.ONNX
    assert catalog.resolve("tiny@2").runtime is Runtime.TORCHSCRIPT
    assert catalog.labels(catalog.resolve("tiny")) == ("red", "green", "blue")
    assert catalog.resolve("tiny").num_classes == 3
    assert catalog.aliases(catalog.resolve("tiny@2")) == ["latest", "tiny"]
    assert catalog.aliases(catalog.resolve("tiny@1")) == []


def test_registry_loads_the_right_backends(registry: ModelRegistry, catalog: Catalog) -> None:
    assert registry.loaded() == ["tiny-fixed@1", "tiny@1", "tiny@2"]
    assert isinstance(registry.get(catalog.resolve("tiny@1")), OnnxClassifier)
    assert isinstance(registry.get(catalog.resolve("tiny@2")), TorchClassifier)
    assert set(registry.load_seconds) == {"tiny-fixed@1", "tiny@1", "tiny@2"}


def test_onnx_and_torchscript_agree(registry: ModelRegistry, catalog: Catalog) -> None:
    onnx_spec, ts_spec = catalog.resolve("tiny@1"), catalog.resolve("tiny@2")
    onnx_probs = registry.get(onnx_spec).predict(_batch(onnx_spec, *COLOURS))
    ts_probs = registry.get(ts_spec).predict(_batch(ts_spec, *COLOURS))
    for probs in (onnx_probs, ts_probs):
        assert probs.shape == (len(COLOURS), 3)
        assert probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert probs.argmax(axis=1).tolist() == EXPECTED
        assert float(probs.max(axis=1).min()) > 0.9  # the colours are clear-cut
    # The ONNX file outputs probabilities (kept); the TorchScript file outputs logits (softmax applied).
    np.testing.assert_allclose(onnx_probs, ts_probs, atol=1e-4, rtol=0)


def test_matches_the_torch_module_itself(registry: ModelRegistry, catalog: Catalog) -> None:
    spec = catalog.resolve("tiny")
    batch = _batch(spec, *COLOURS)
    with torch.inference_mode():
        expected = TinyColourNet(probabilities=True).eval()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(registry.get(spec).predict(batch), expected, atol=1e-5, rtol=0)


def test_fixed_batch_onnx_model_runs_image_by_image(registry: ModelRegistry, catalog: Catalog) -> None:
    spec = catalog.resolve("tiny-fixed")
    probs = registry.get(spec).predict(_batch(spec, *COLOURS))
    assert probs.argmax(axis=1).tolist() == EXPECTED
    ts_spec = catalog.resolve("tiny@2")
    np.testing.assert_allclose(probs, registry.get(ts_spec).predict(_batch(ts_spec, *COLOURS)), atol=1e-4, rtol=0)


def test_model_that_drops_rows_is_an_internal_error(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "broken", manifest("broken", 1, "torchscript", "model.pt"))
    save_torchscript(DropsRows(), folder / "model.pt")
    catalog = build_catalog(Settings(model_dir=tmp_path, default_model="efficientnet-lite0"))
    spec = catalog.resolve("broken")
    model = ModelRegistry(catalog).get(spec)
    assert model.predict(_batch(spec, COLOURS[0])).shape == (1, 3)
    with pytest.raises(InternalError, match=r"returned shape \(1, 3\) for 2 image\(s\)"):
        model.predict(_batch(spec, *COLOURS[:2]))


def test_labels_that_do_not_match_the_model_are_refused(tmp_path: Path) -> None:
    ts = model_folder(tmp_path, "ts", manifest("ts", 1, "torchscript", "model.pt"), labels="a\nb\nc\nd\n")
    save_torchscript(TinyColourNet(probabilities=False), ts / "model.pt")
    onnx = model_folder(tmp_path, "onnx", manifest("onnx", 1, "onnx", "model.onnx"), labels="a\nb\n")
    export_module_onnx(TinyColourNet(probabilities=True), SIZE, onnx / "model.onnx")
    catalog = build_catalog(Settings(model_dir=tmp_path, default_model="ts"))
    registry = ModelRegistry(catalog)
    spec = catalog.resolve("ts")
    with pytest.raises(InternalError, match="returned 3 scores per image, but its labels name 4"):
        registry.get(spec).predict(_batch(spec, COLOURS[0]))
    with pytest.raises(ValueError, match="the model outputs 3 classes, but its labels name 2"):
        registry.get(catalog.resolve("onnx"))  # ONNX declares its output size: refused at load
    assert registry.loaded() == ["ts@1"]


def test_onnx_input_size_that_contradicts_the_manifest_is_refused(tmp_path: Path) -> None:
    folder = model_folder(tmp_path, "fixed", manifest("fixed", 1, "onnx", "model.onnx", input_size=64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            TinyColourNet(probabilities=True).eval(),
            (torch.zeros(1, 3, SIZE, SIZE),),
            str(folder / "model.onnx"),
            dynamo=False,
        )
    spec = build_catalog(Settings(model_dir=tmp_path, default_model="fixed")).resolve("fixed")
    model = OnnxClassifier(spec)
    with pytest.raises(ValueError, match=r"input shape is \[1, 3, 32, 32\], but the manifest says \(N, 3, 64, 64\)"):
        model.setup("cpu")


def test_cuda_request_without_cuda_falls_back_to_cpu(catalog: Catalog) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    model = OnnxClassifier(catalog.resolve("tiny@1"), threads=1)
    model.setup("cuda:0")
    assert model.providers == ["CPUExecutionProvider"]
