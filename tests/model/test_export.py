"""Built-in models on ONNX Runtime: the export is verified against PyTorch, cached, and refused when it
does not agree; the registry then serves the model from the export, or from PyTorch when refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import skimage.data
from PIL import Image

from visionq.inference.catalog import BUILTIN_SPECS, Catalog
from visionq.inference.export import MIN_AGREEMENT, ExportRefused, ensure_onnx, verification_batch
from visionq.inference.onnx_backend import OnnxClassifier
from visionq.inference.registry import ModelRegistry
from visionq.inference.torch_backend import TorchClassifier

LITE0 = BUILTIN_SPECS[0]
#: Exports, quantisations and their checks run PyTorch and ONNX Runtime over whole samples: 20–60 s each alone, up to
#: twice or thrice that in CI's niced lane beside the integration tests (scripts/test). A guard, not a timing goal.
pytestmark = pytest.mark.timeout(360)
#: What the built-in models call the cat photo.
EGYPTIAN_CAT = 285


def _chelsea_batch() -> npt.NDArray[np.float32]:
    load: Callable[[], npt.ArrayLike] = skimage.data.chelsea
    image = Image.fromarray(np.asarray(load(), dtype=np.uint8))
    return LITE0.transform.apply(image)[None]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


def test_the_sample_is_fixed_and_spreads_the_model_over_many_classes() -> None:
    first, again = verification_batch(LITE0), verification_batch(LITE0)
    reference = TorchClassifier(LITE0)
    reference.setup("cpu")

    assert first.shape == (64, 3, 224, 224)
    assert np.array_equal(first, again)
    assert len(set(reference.predict(first).argmax(axis=1).tolist())) >= 8, "a sample of one class checks little"


def test_an_export_that_agrees_is_kept_and_then_reused(cache: Path) -> None:
    path, verification = ensure_onnx(LITE0, cache, threads=1)
    made = path.stat().st_mtime_ns
    again, remembered = ensure_onnx(LITE0, cache, threads=1)
    served = OnnxClassifier(LITE0.model_copy(update={"runtime": "onnx", "weights": str(path)}), threads=1)
    served.setup("cpu")

    assert verification.agreement >= MIN_AGREEMENT
    assert verification.sample == 64
    assert verification.max_abs_diff < 1e-3
    assert (again, remembered) == (path, verification)
    assert path.stat().st_mtime_ns == made, "the cached file is used, not made again"
    assert int(served.predict(_chelsea_batch()).argmax()) == EGYPTIAN_CAT
    assert [p.name for p in cache.iterdir() if p.suffix == ".partial"] == []


def test_a_prepared_cache_is_read_without_taking_the_lock(cache: Path, tmp_path: Path) -> None:
    # As an image built with `visionq prepare` runs it: the finished files are there, perhaps read-only.
    made, verification = ensure_onnx(LITE0, cache, threads=1)
    for part in (made, made.with_suffix(".json")):
        shutil.copy(part, tmp_path / part.name)

    path, read = ensure_onnx(LITE0, tmp_path, threads=1)

    assert (path, read) == (tmp_path / made.name, verification)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".onnx"], "no lock file was made"


def test_an_export_under_the_agreement_required_is_refused(tmp_path: Path) -> None:
    # No export agrees on more than all of the sample: the bar cannot be met, as with a broken exporter.
    with pytest.raises(ExportRefused, match="not used"):
        ensure_onnx(LITE0, tmp_path, threads=1, minimum=1.01)

    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".lock"], "nothing refused is kept"


def test_the_registry_serves_built_ins_from_the_export(cache: Path) -> None:
    registry = ModelRegistry(Catalog(BUILTIN_SPECS, default="efficientnet-lite0"), threads=1, cache=cache)
    model = registry.get(LITE0)

    assert isinstance(model, OnnxClassifier)
    assert registry.exports[LITE0.ref].agreement >= MIN_AGREEMENT
    assert int(model.predict(_chelsea_batch()).argmax()) == EGYPTIAN_CAT
