"""visionq's whole path (bytes → decode → transform → model) against a reference path written here, from the
documented definition, with Pillow and numpy only: none of visionq's imaging code runs on the reference side.

The reference is the built-ins' transform as docs/models.md defines it, on a decoded upright image:
- the whole image, resized (squashed) to `size`×`size` by a bicubic filter;
- `(x − 127) / 128` on 0..255 pixels (MEAN_RGB and STDDEV_RGB of the Lite models' training).
What comes before it is visionq's documented decoding (docs/models.md), written again here from that text:
the EXIF orientation applied, transparency composited on white, 16-bit grey scaled by 1/257.

Both sides run the same exported network (its file, through onnxruntime directly on the reference side), so
what is compared is everything before it. visionq's side also decodes large JPEGs at a reduced DCT scale and
resizes with Pillow's reducing gap: the two shortcuts whose effect on answers this test bounds.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import skimage
from PIL import Image

from environment import model_cache
from visionq.inference.catalog import BUILTIN_SPECS, Catalog
from visionq.inference.classifier import Classifier
from visionq.inference.registry import ModelRegistry
from visionq.inference.spec import ModelSpec, Precision
from visionq.worker.pipeline import run_classification

#: Top-1 must be the reference's on at least this share of the inputs.
MIN_TOP1_AGREEMENT = 0.99
#: The largest difference allowed in any class probability. Only the large JPEGs differ at all (a draft decode
#: is not the full one); measured on 263 inputs: at most 0.02 (Lite0), 0.02 (Lite1), 0.05 (Lite2).
PROBABILITY_TOLERANCE = 0.06
#: And on average over every class of every input (measured: 1.7–1.8e-6).
MEAN_PROBABILITY_TOLERANCE = 2e-5

MAX_PIXELS = 40_000_000
_SKIMAGE = Path(skimage.__file__).parent / "data"
_CALIBRATION = Path(__file__).resolve().parents[2] / "src" / "visionq" / "inference" / "calibration"
_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "rocket.jpg", "motorcycle_left.png")
#: Width:height of the crops taken of each photo.
_ASPECTS = (1 / 3, 1 / 2, 3 / 4, 1.0, 4 / 3, 2.0, 3.0)
#: The EXIF orientations and the transpose that, applied to an upright image, gives what the camera stored.
_STORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


# --- the reference path ----------------------------------------------------------------------------


def reference_decode(data: bytes) -> npt.NDArray[np.uint8]:
    """Upright RGB pixels, 0..255, by the documented rules, with Pillow and numpy directly."""
    image: Image.Image = Image.open(io.BytesIO(data))
    image.load()
    orientation = image.getexif().get(0x0112, 1)
    if orientation in _STORED:  # undo what the camera did: the inverse of each stored transpose
        inverse = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}.get(orientation, _STORED[orientation])
        image = image.transpose(inverse)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[:, :, 3:] / 255.0
        return np.rint(rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def reference_input(pixels: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.float32]:
    """The built-ins' transform: the whole image squashed to the input by a bicubic resize, (x - 127) / 128."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    resized = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return ((resized - 127.0) / 128.0).transpose(2, 0, 1)


# --- the inputs -------------------------------------------------------------------------------------


def _jpeg(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=92, **params)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _photos() -> list[Image.Image]:
    shipped = sorted(_CALIBRATION.glob("*.jpg"))
    return [Image.open(path).convert("RGB") for path in [*shipped, *(_SKIMAGE / name for name in _PHOTOS)]]


def _crop(photo: Image.Image, aspect: float) -> Image.Image:
    width, height = photo.size
    if width / height > aspect:
        width = round(height * aspect)
    else:
        height = round(width / aspect)
    left, top = (photo.width - width) // 2, (photo.height - height) // 2
    return photo.crop((left, top, left + width, top + height))


def _large(image: Image.Image, short_side: int) -> Image.Image:
    factor = short_side / min(image.size)
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)


def inputs() -> Iterator[tuple[str, bytes]]:
    """The shipped photos, crops of every aspect ratio, large camera-sized JPEGs (where visionq decodes a draft),
    every EXIF orientation, PNGs with an alpha channel and 16-bit grey PNGs (263 files with 16 calibration photos)."""
    photos = _photos()
    for i, photo in enumerate(photos):
        yield f"photo{i}.jpg", _jpeg(photo)
        for aspect in _ASPECTS:
            yield f"photo{i}-{aspect:.2f}.jpg", _jpeg(_crop(photo, aspect))
    for i, photo in enumerate(photos):
        yield f"photo{i}-large.jpg", _jpeg(_large(photo, 1200 + 150 * i))
        for orientation, stored in _STORED.items():
            if (i + orientation) % 3 == 0:
                exif = Image.Exif()
                exif[0x0112] = orientation
                yield f"photo{i}-exif{orientation}.jpg", _jpeg(photo.transpose(stored), exif=exif)
    for i, photo in enumerate(photos[:7]):
        rgba = photo.convert("RGBA")
        ramp = np.linspace(0, 255, rgba.width, dtype=np.float64)[None, :].repeat(rgba.height, axis=0)
        rgba.putalpha(Image.fromarray(ramp.astype(np.uint8)))
        yield f"photo{i}-alpha.png", _png(rgba)
        grey = np.asarray(photo.convert("L"), dtype=np.uint16) * 257 + (i * 37) % 257
        yield f"photo{i}-16bit.png", _png(Image.fromarray(grey.astype(np.uint16)))


# --- the check --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    exact = [spec for spec in BUILTIN_SPECS if spec.precision is Precision.FP32]
    return ModelRegistry(Catalog(exact, default="efficientnet-lite0"), device="cpu", threads=1, cache=model_cache())


@pytest.fixture(scope="module")
def files() -> list[tuple[str, bytes]]:
    return list(inputs())


def _reference_model(classifier: Classifier) -> object:
    import onnxruntime

    # One thread, as the worker's own session: a second one spin-waits, taking CPU from the tests beside this lane.
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        classifier.spec.weights, sess_options=options, providers=["CPUExecutionProvider"]
    )


class Recording:
    """The classifier, keeping each whole row of probabilities that the pipeline reduces to its top-k."""

    def __init__(self, classifier: Classifier) -> None:
        self.spec = classifier.spec
        self._classifier = classifier
        self.rows: list[npt.NDArray[np.float32]] = []

    def setup(self, device: str) -> None:
        self._classifier.setup(device)

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        probabilities = self._classifier.predict(batch)
        self.rows.extend(probabilities)
        return probabilities


def _ignore(stage: object) -> None:
    """Stages are not what this test is about."""


def _visionq(classifier: Classifier, files: list[tuple[str, bytes]]) -> npt.NDArray[np.float32]:
    """The worker's own pipeline on each file: decode (with its draft), transform, the model."""
    recording = Recording(classifier)
    for _, data in files:
        run_classification(data, classifier=recording, labels=(), top=1, max_pixels=MAX_PIXELS, report=_ignore)
    return np.stack(recording.rows)


# Each runs both paths over 263 files: ~15 s alone, three times that in CI's niced lane beside the integration tests.
@pytest.mark.timeout(360)
@pytest.mark.parametrize("ref", ["efficientnet-lite0@1", "efficientnet-lite1@1", "efficientnet-lite2@1"])
def test_visionq_answers_as_the_documented_preprocessing_does(
    registry: ModelRegistry, files: list[tuple[str, bytes]], ref: str
) -> None:
    spec: ModelSpec = registry.catalog.resolve(ref)
    classifier = registry.get(spec)
    assert classifier.spec.weights.endswith(".onnx"), "the exact built-ins run from their checked ONNX export"
    session = _reference_model(classifier)

    ours = _visionq(classifier, files)
    theirs = np.concatenate(
        [
            session.run(None, {"input": reference_input(reference_decode(data), spec.input_size)[None]})[0]  # type: ignore[attr-defined]
            for _, data in files
        ]
    )

    same = ours.argmax(axis=1) == theirs.argmax(axis=1)
    differing = [name for (name, _), agree in zip(files, same, strict=True) if not agree]
    assert len(files) >= 100
    assert same.mean() >= MIN_TOP1_AGREEMENT, f"{ref}: top-1 differs from the reference on {differing}"
    difference = np.abs(ours - theirs)
    assert difference.max() <= PROBABILITY_TOLERANCE, f"{ref}: largest difference {difference.max():.4f}"
    assert difference.mean() <= MEAN_PROBABILITY_TOLERANCE, f"{ref}: mean difference {difference.mean():.2e}"


def test_the_reference_path_itself_sees_the_cat(registry: ModelRegistry) -> None:
    # The reference must be a real one: on the shipped cat photo it answers Egyptian cat, as the service does.
    spec = registry.catalog.resolve("efficientnet-lite0@1")
    session = _reference_model(registry.get(spec))
    data = (_CALIBRATION / "chelsea.jpg").read_bytes()

    probabilities = session.run(None, {"input": reference_input(reference_decode(data), 224)[None]})[0]  # type: ignore[attr-defined]

    assert int(probabilities.argmax()) == 285
