"""The static int8 builds of the built-in models: calibrated on shipped photos, checked against the exact
model, cached, refused under the bar, and served by the registry as their own model; refused at once on a CPU
without VNNI. The builds are made and served only where this machine's CPU has VNNI; the machinery that
refuses a build is tested everywhere."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from factories import chelsea
from visionq.imaging.transforms import to_input
from visionq.inference import quantize
from visionq.inference.catalog import BUILTIN_SPECS, Catalog
from visionq.inference.export import ExportRefused, ensure_onnx
from visionq.inference.onnx_backend import OnnxClassifier
from visionq.inference.quantize import MIN_INT8_AGREEMENT, ensure_int8, int8_unsupported, photo_crops
from visionq.inference.registry import ModelRegistry
from visionq.inference.spec import Precision, Runtime

LITE0 = BUILTIN_SPECS[0]
LITE0_INT8 = next(spec for spec in BUILTIN_SPECS if spec.name == "efficientnet-lite0-int8")
EGYPTIAN_CAT = 285
#: Builds that agree are made only on a CPU that runs them well; elsewhere the refusal's tests run.
needs_vnni = pytest.mark.skipif(int8_unsupported() is not None, reason=f"int8 not served here: {int8_unsupported()}")


def _chelsea_batch() -> np.ndarray:
    return to_input(chelsea(), size=LITE0.input_size, mean=LITE0.mean, std=LITE0.std)[None]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("int8-cache")


def test_every_built_in_has_an_int8_build_of_its_own_name() -> None:
    exact = {spec.name for spec in BUILTIN_SPECS if spec.precision is Precision.FP32}
    int8 = {spec.name for spec in BUILTIN_SPECS if spec.precision is Precision.INT8}

    assert int8 == {f"{name}-int8" for name in exact}
    assert Catalog(BUILTIN_SPECS, default="efficientnet-lite0").resolve("latest") == LITE0, "latest stays exact"


def test_the_photo_crops_are_fixed_by_their_seed() -> None:
    first, again, other = photo_crops(LITE0, 8, 1), photo_crops(LITE0, 8, 1), photo_crops(LITE0, 8, 2)

    assert first.shape == (8, 3, 224, 224)
    assert first.dtype == np.float32
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@needs_vnni
def test_an_int8_build_that_agrees_is_kept_reused_and_served(cache: Path) -> None:
    path, verification = ensure_int8(LITE0_INT8, cache, threads=1)
    made = path.stat().st_mtime_ns
    again, remembered = ensure_int8(LITE0_INT8, cache, threads=1)
    exact = next(p for p in cache.glob("efficientnet-lite0-*.onnx") if "int8" not in p.name)
    served = OnnxClassifier(LITE0.model_copy(update={"runtime": Runtime.ONNX, "weights": str(path)}), threads=1)
    served.setup("cpu")
    probabilities = served.predict(_chelsea_batch())

    assert MIN_INT8_AGREEMENT <= verification.agreement < 1.0, "int8 changes some answers, and says how many"
    assert verification.sample == 128 + 64
    assert (again, remembered) == (path, verification)
    assert path.stat().st_mtime_ns == made, "the cached build is used, not made again"
    assert path.stat().st_size < exact.stat().st_size / 2, "the weights are stored as int8"
    assert int(probabilities.argmax()) == EGYPTIAN_CAT
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4), "the probabilities stay float and sum to 1"
    assert probabilities.max() > 0.5
    assert not [p.name for p in cache.iterdir() if p.suffix in {".partial", ".prepared"}]


def test_an_int8_build_under_the_agreement_required_is_refused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize, "int8_unsupported", lambda: None)  # build it whatever this CPU
    exported, _ = ensure_onnx(LITE0, cache, threads=1)
    for made in (exported, exported.with_suffix(".json")):  # the exact export is reused, not made again
        shutil.copy(made, tmp_path / made.name)

    # No build agrees on more than all of the sample: the bar cannot be met, as with a broken quantiser.
    with pytest.raises(ExportRefused, match="int8 build agrees with the exact model"):
        ensure_int8(LITE0_INT8, tmp_path, threads=1, minimum=1.01)

    assert not list(tmp_path.glob("*int8*.onnx")), "nothing refused is kept"


@needs_vnni
def test_the_registry_serves_the_int8_build_as_its_own_model(cache: Path) -> None:
    registry = ModelRegistry(Catalog(BUILTIN_SPECS, default="efficientnet-lite0"), threads=1, cache=cache)
    model = registry.get(LITE0_INT8)

    assert isinstance(model, OnnxClassifier)
    assert "int8" in Path(model.spec.weights).name
    assert registry.exports[LITE0_INT8.ref].agreement >= MIN_INT8_AGREEMENT
    assert int(model.predict(_chelsea_batch()).argmax()) == EGYPTIAN_CAT


def test_an_int8_build_cannot_load_without_a_cache() -> None:
    registry = ModelRegistry(Catalog(BUILTIN_SPECS, default="efficientnet-lite0"), threads=1, builtin_onnx=False)

    with pytest.raises(ValueError, match="needs a model cache"):
        registry.get(LITE0_INT8)


def test_on_a_cpu_without_vnni_an_int8_build_is_refused_at_once_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize, "int8_unsupported", lambda: "this CPU has no VNNI instructions")
    registry = ModelRegistry(Catalog(BUILTIN_SPECS, default="efficientnet-lite0"), threads=1, cache=tmp_path)

    with pytest.raises(ExportRefused) as refused:
        registry.get(LITE0_INT8)

    assert str(refused.value) == (
        "efficientnet-lite0-int8@1 is not served on this machine: this CPU has no VNNI instructions; "
        "efficientnet-lite0 is the exact model"
    )
    assert list(tmp_path.iterdir()) == [], "refused before anything is made"
    assert not registry.is_loaded(LITE0_INT8)
