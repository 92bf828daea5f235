"""The built-in EfficientNet-Lite models with their real weights: the cat is an Egyptian cat (285).

Also: the registry (load once, thread-safe, warm) and the ONNX export of lite0 against torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import skimage.data
from PIL import Image

from visionq.inference.catalog import BUILTIN_SPECS, Catalog
from visionq.inference.classifier import Batch, Classifier, top_k
from visionq.inference.imagenet import imagenet_labels
from visionq.inference.onnx_backend import OnnxClassifier, export_onnx
from visionq.inference.registry import ModelRegistry
from visionq.inference.spec import ModelSpec, Precision, Runtime
from visionq.inference.torch_backend import TorchClassifier

EGYPTIAN_CAT = 285
CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
REFS = ("efficientnet-lite0@1", "efficientnet-lite1@1", "efficientnet-lite2@1")


def _chelsea() -> Image.Image:
    load: Callable[[], npt.ArrayLike] = skimage.data.chelsea  # skimage carries no annotations
    return Image.fromarray(np.asarray(load(), dtype=np.uint8))


def _to_input(image: Image.Image, spec: ModelSpec) -> npt.NDArray[np.float32]:
    """The service's preprocessing of `spec`: for the built-ins, the whole image squashed, bicubic."""
    return spec.transform.apply(image.convert("RGB"))


def _batch(spec: ModelSpec, *images: Image.Image) -> Batch:
    return np.stack([_to_input(image, spec) for image in images]).astype(np.float32)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    """The exact built-ins, on PyTorch (their int8 builds, on ONNX Runtime, are tested in test_quantize.py)."""
    return Catalog([spec for spec in BUILTIN_SPECS if spec.precision is Precision.FP32], default="efficientnet-lite0")


@pytest.fixture(scope="module")
def registry(catalog: Catalog) -> ModelRegistry:
    return ModelRegistry(catalog, device="cpu")


@pytest.mark.parametrize("ref", REFS)
def test_chelsea_is_an_egyptian_cat(registry: ModelRegistry, catalog: Catalog, ref: str) -> None:
    spec = catalog.resolve(ref)
    probs = registry.get(spec).predict(_batch(spec, _chelsea()))
    assert probs.shape == (1, 1000)
    assert probs.dtype == np.float32
    assert float(probs.sum()) == pytest.approx(1.0, abs=1e-4)
    top = top_k(probs[0], 5)
    assert top[0][0] == EGYPTIAN_CAT
    assert catalog.labels(spec)[EGYPTIAN_CAT] == "Egyptian cat"
    assert top[0][1] > 0.7  # 0.77, 0.78, 0.75: decisive, not a knife edge
    assert {class_id for class_id, _ in top[:3]} <= CATS


def test_lite0_confidence(registry: ModelRegistry, catalog: Catalog) -> None:
    spec = catalog.resolve("latest")
    probs = registry.get(spec).predict(_batch(spec, _chelsea()))
    assert float(probs[0, EGYPTIAN_CAT]) == pytest.approx(0.77, abs=0.03)  # API.md's example: 0.76


def test_batch_rows_keep_their_order(registry: ModelRegistry, catalog: Catalog) -> None:
    spec = catalog.resolve("latest")
    cat = _chelsea()
    images = [cat, Image.new("RGB", (64, 64), (20, 120, 220)), cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    model = registry.get(spec)
    batched = model.predict(_batch(spec, *images))
    assert batched.shape == (3, 1000)
    for row, image in zip(batched, images, strict=True):
        np.testing.assert_allclose(row, model.predict(_batch(spec, image))[0], atol=1e-5)
    assert int(batched[0].argmax()) == EGYPTIAN_CAT
    assert int(batched[1].argmax()) not in CATS


def test_wrong_input_shape_is_refused(registry: ModelRegistry, catalog: Catalog) -> None:
    spec = catalog.resolve("latest")
    model = registry.get(spec)
    with pytest.raises(ValueError, match=r"shape \(N>=1, 3, 224, 224\)"):
        model.predict(np.zeros((1, 3, 240, 240), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        model.predict(np.zeros((1, 3, 224, 224), dtype=np.float64))


def test_labels_are_imagenet(catalog: Catalog) -> None:
    for spec in catalog.specs():
        assert catalog.labels(spec) == imagenet_labels()


# --- registry ----------------------------------------------------------------------------------------


def test_registry_loads_each_model_once_across_threads(catalog: Catalog) -> None:
    registry = ModelRegistry(catalog, device="cpu")
    spec = catalog.resolve("latest")
    results: list[Classifier] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(registry.get(spec))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert all(model is results[0] for model in results)
    assert isinstance(results[0], TorchClassifier)
    assert registry.loaded() == ["efficientnet-lite0@1"]
    assert list(registry.load_seconds) == ["efficientnet-lite0@1"]
    assert registry.load_seconds["efficientnet-lite0@1"] > 0, "its load was timed"


def test_warm(catalog: Catalog) -> None:
    import torch

    threads_before = torch.get_num_threads()
    try:
        _check_warm(catalog)
    finally:
        torch.set_num_threads(threads_before)


def _check_warm(catalog: Catalog) -> None:
    import torch

    registry = ModelRegistry(catalog, device="cpu", threads=1)
    assert registry.loaded() == []
    assert [s.ref for s in registry.warm(["latest", "efficientnet-lite0"])] == ["efficientnet-lite0@1"]
    assert registry.loaded() == ["efficientnet-lite0@1"]
    assert torch.get_num_threads() == 1  # set once, before the first torch model loaded
    assert registry.is_loaded(catalog.resolve("latest"))
    first = registry.get(catalog.resolve("latest"))
    registry.warm(["*"])
    assert registry.loaded() == ["efficientnet-lite0@1", "efficientnet-lite1@1", "efficientnet-lite2@1"]
    assert registry.get(catalog.resolve("efficientnet-lite0@1")) is first
    assert set(registry.load_seconds) == set(registry.loaded())


def test_registry_refuses_a_spec_outside_the_catalog(catalog: Catalog) -> None:
    from visionq.errors import ModelNotFound

    stranger = catalog.resolve("latest").model_copy(update={"version": 9})
    with pytest.raises(ModelNotFound):
        ModelRegistry(catalog).get(stranger)


# --- ONNX export -------------------------------------------------------------------------------------


def test_onnx_export_of_lite0_agrees_with_torch(registry: ModelRegistry, catalog: Catalog, tmp_path: Path) -> None:
    spec = catalog.resolve("efficientnet-lite0")
    torch_model = registry.get(spec)
    assert isinstance(torch_model, TorchClassifier)
    path = tmp_path / "lite0.onnx"
    export_onnx(torch_model, path)
    assert path.stat().st_size > 10_000_000

    onnx_spec = spec.model_copy(update={"runtime": Runtime.ONNX, "weights": str(path)})
    onnx_model = OnnxClassifier(onnx_spec, threads=2)
    onnx_model.setup("cpu")
    assert onnx_model.providers == ["CPUExecutionProvider"]

    cat = _chelsea()
    batch = _batch(spec, cat, cat.transpose(Image.Transpose.FLIP_LEFT_RIGHT))  # batch of 2: the axis is dynamic
    expected = torch_model.predict(batch)
    got = onnx_model.predict(batch)
    assert got.shape == expected.shape == (2, 1000)
    assert float(np.abs(got - expected).max()) < 1e-3
    for row_got, row_expected in zip(got, expected, strict=True):
        assert [i for i, _ in top_k(row_got, 5)] == [i for i, _ in top_k(row_expected, 5)]
    assert int(got[0].argmax()) in CATS


def test_export_refuses_a_torchscript_model(tmp_path: Path) -> None:
    spec = ModelSpec(name="x", version=1, input_size=8, runtime=Runtime.TORCHSCRIPT, weights="x.pt")
    with pytest.raises(ValueError, match="only built-in torch models"):
        export_onnx(TorchClassifier(spec), tmp_path / "x.onnx")
