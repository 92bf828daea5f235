"""RGB image → the normalised float32 array a model takes (numpy and Pillow only, so no torch here).

>>> x = to_input(image, size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
>>> x.shape, x.dtype
((3, 224, 224), dtype('float32'))
>>> stack([x, x]).shape
(2, 3, 224, 224)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

# Pillow first shrinks by a whole factor with a box filter, then resamples the rest: a 40 MP photo costs a
# fraction of the time, and with a gap of 3 the result is, per Pillow's docs, hard to tell from a full resample.
_REDUCING_GAP = 3.0


def to_input(
    image: Image.Image, *, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> npt.NDArray[np.float32]:
    """Resize the whole image to `size`×`size` (squashed, nothing cropped), scale to 0..1, normalise per
    channel with `mean`/`std`, and return it channels-first: shape (3, size, size), float32."""
    if image.mode != "RGB":
        raise ValueError(f"to_input needs an RGB image, got mode {image.mode!r}; decode it with decode_image first")
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    resized = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def stack(arrays: Sequence[npt.NDArray[np.float32]]) -> npt.NDArray[np.float32]:
    """Stack CHW arrays of one shape into an NCHW float32 batch."""
    if not arrays:
        raise ValueError("stack needs at least one array to make a batch")
    return np.stack(arrays).astype(np.float32, copy=False)
