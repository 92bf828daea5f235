"""RGB image → the normalised float32 array a model takes (numpy and Pillow only, so no torch here).

A model's `Transform` is the whole of its preprocessing, declared in its spec: how the image becomes a square
(`resize`), with which filter (`interpolation`), the normalisation (`mean`/`std` on a 0..1 scale) and the
channel order. The built-in models declare their reference evaluation's transform; a user model declares its
own in its manifest (docs/models.md).

>>> lite0 = Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=224 / 256,
...                   interpolation=Interpolation.BICUBIC, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> x = lite0.apply(image)
>>> x.shape, x.dtype
((3, 224, 224), dtype('float32'))
>>> stack([x, x]).shape
(2, 3, 224, 224)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from PIL import Image

__all__ = ["ChannelOrder", "Interpolation", "Resize", "Transform", "stack", "to_input"]

# Pillow first shrinks by a whole factor with a box filter, then resamples the rest: a 40 MP photo costs a
# fraction of the time, and with a gap of 3 the result is, per Pillow's docs, hard to tell from a full resample
# (docs/models.md gives the measured agreement with a plain resample).
_REDUCING_GAP = 3.0


class Resize(StrEnum):
    """How an image of any shape becomes the model's square input."""

    CENTER_CROP = "center_crop"
    """The centred square of `crop_fraction` of the shorter side, resized to the input size (the usual
    ImageNet evaluation: nothing is distorted, the borders are lost)."""
    SQUASH = "squash"
    """The whole image resized to the square: nothing is lost, a long image is distorted."""
    LETTERBOX = "letterbox"
    """The whole image resized to fit inside the square, undistorted, centred on a field of the mean colour
    (which normalises to zero)."""


class Interpolation(StrEnum):
    """Pillow's resampling filters (antialiased when shrinking)."""

    NEAREST = "nearest"
    BOX = "box"
    BILINEAR = "bilinear"
    HAMMING = "hamming"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"

    @property
    def resampling(self) -> Image.Resampling:
        return Image.Resampling[self.name]


class ChannelOrder(StrEnum):
    RGB = "RGB"
    BGR = "BGR"


@dataclass(frozen=True)
class Transform:
    """A model's whole preprocessing. `mean` and `std` are always listed R, G, B, on a 0..1 pixel scale."""

    input_size: int
    resize: Resize = Resize.SQUASH
    crop_fraction: float = 1.0
    """`center_crop` only: the side of the centred square as a share of the image's shorter side."""
    interpolation: Interpolation = Interpolation.BILINEAR
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    channel_order: ChannelOrder = ChannelOrder.RGB

    def __post_init__(self) -> None:
        if not 1 <= self.input_size <= 2048:
            raise ValueError(f"input_size must be 1..2048 pixels, got {self.input_size}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be > 0 and <= 1, got {self.crop_fraction}")
        if self.resize is not Resize.CENTER_CROP and self.crop_fraction != 1.0:
            raise ValueError(f"crop_fraction applies to resize = 'center_crop' only, not {self.resize.value!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three numbers each (R, G, B)")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or any(s <= 0 for s in self.std):
            raise ValueError("mean must be finite and every std value > 0")

    def canonical(self) -> str:
        """One line that names every step, with numbers as Python's shortest round-trip repr: equal
        strings mean equal arrays for equal images. The upright RGB decoding before it is part of the line."""
        crop = f"center_crop({self.crop_fraction!r})" if self.resize is Resize.CENTER_CROP else self.resize.value
        return ";".join(
            (
                "decode=exif_upright,rgb,alpha_on_white",
                f"resize={crop}",
                f"size={self.input_size}x{self.input_size}",
                f"interpolation={self.interpolation.value}",
                "scale=1/255",
                "mean=" + ",".join(repr(float(v)) for v in self.mean),
                "std=" + ",".join(repr(float(v)) for v in self.std),
                f"channels={self.channel_order.value}",
                "layout=NCHW,float32",
            )
        )

    def sha256(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part of a `width`×`height` image that is resized: all of it, or for `center_crop` the centred
        square of `int(crop_fraction × shorter side)` px, offset by half the rest rounded up (the reference's
        arithmetic, tensorflow/tpu `_decode_and_center_crop`)."""
        if self.resize is not Resize.CENTER_CROP:
            return 0, 0, width, height
        side = max(1, int(self.crop_fraction * min(width, height)))
        left, top = (width - side + 1) // 2, (height - side + 1) // 2
        return left, top, left + side, top + side

    def draft_size(self, scale: float) -> int:
        """The least side, in pixels, that a draft JPEG decode must keep so that the resized part still has
        `scale` source pixels per input pixel (a centre crop keeps only part of the image)."""
        return math.ceil(self.input_size * scale / self.crop_fraction)

    def apply(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """The model's input for an upright RGB `image`: shape (3, input_size, input_size), float32."""
        if image.mode != "RGB":
            raise ValueError(f"a transform needs an RGB image, got mode {image.mode!r}; decode it with decode_image")
        size, resample = self.input_size, self.interpolation.resampling
        if self.resize is Resize.LETTERBOX:
            resized = _letterbox(image, size, resample, fill=tuple(round(v * 255) for v in self.mean))
        else:
            box = self.crop_box(image.width, image.height)
            # Cropped first, as the reference does: resize's own `box` would let the filter read past the crop.
            cropped = image if box == (0, 0, image.width, image.height) else image.crop(box)
            resized = cropped.resize((size, size), resample, reducing_gap=_REDUCING_GAP)
        pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
        normalised = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        if self.channel_order is ChannelOrder.BGR:
            normalised = normalised[:, :, ::-1]
        return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def _letterbox(image: Image.Image, size: int, resample: Image.Resampling, fill: tuple[int, ...]) -> Image.Image:
    scale = size / max(image.width, image.height)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new("RGB", (size, size), fill)
    offset = ((size - inner[0]) // 2, (size - inner[1]) // 2)
    canvas.paste(image.resize(inner, resample, reducing_gap=_REDUCING_GAP), offset)
    return canvas


def to_input(
    image: Image.Image, *, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> npt.NDArray[np.float32]:
    """Squash the whole image to `size`×`size` with bilinear resampling and normalise it: the default
    `Transform` of user models, kept as a short form."""
    return Transform(input_size=size, mean=mean, std=std).apply(image)


def stack(arrays: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """Stack CHW arrays of one shape into an NCHW float32 batch."""
    if not arrays:
        raise ValueError("stack needs at least one array to make a batch")
    return np.stack(arrays).astype(np.float32, copy=False)
