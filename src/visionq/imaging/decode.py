"""Bytes → upright RGB image: the only place where uploaded bytes meet Pillow.

The type is decided from the magic bytes (never the file name or the declared content type), the pixel
count is checked against the limit from the header before any pixel is decoded, and every Pillow failure
is translated into a `VisionqError` here, so nothing from Pillow leaks to the API or the worker.

    >>> decoded = decode_image(data, max_pixels=40_000_000)
    >>> decoded.image.mode, decoded.format
    ('RGB', 'JPEG')
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from visionq.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType

SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

_ACCEPTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"

# Malformed files make Pillow raise far more than UnidentifiedImageError (an OSError): its own fuzzing
# turns up these, from the plugins' header parsers and the C decoders alike.
_PILLOW_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    struct.error,
)

_SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """A fully decoded first frame, EXIF orientation applied, in mode RGB; `width`/`height` are upright."""

    image: Image.Image
    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str:
    """Return the Pillow format name that the magic bytes of `data` announce, one of `SUPPORTED_FORMATS`."""
    if not data:
        raise InvalidImage("the uploaded file is empty (0 bytes); send the image's bytes in the `file` field")
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    # Classic TIFF (42) and BigTIFF (43), in either byte order.
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    raise UnsupportedMediaType(
        f"the file's content is not a supported image type; accepted: {_ACCEPTED} "
        "(the type is read from the bytes themselves, not from the file name or the declared content type)"
    )


def read_header(data: bytes, *, max_pixels: int) -> tuple[str, int, int]:
    """Return `(format, width, height)` from the header alone (before EXIF orientation), refusing images
    over `max_pixels` without decoding a single pixel."""
    fmt = sniff_format(data)
    with _translate_pillow_errors(fmt, max_pixels), _open(data, fmt) as im:
        _check_pixels(im.size, max_pixels)
        return fmt, im.width, im.height


@dataclass(frozen=True)
class CheckedImage:
    """What the API learns of an upload without decoding its pixels: format and upright size."""

    format: str
    width: int
    height: int


#: EXIF orientations that turn the image a quarter (width and height swap).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
_JPEG_START_OF_SCAN = b"\xff\xda"
_JPEG_END = b"\xff\xd9"


def check_image(data: bytes, *, max_pixels: int) -> CheckedImage:
    """Refuse what cannot be an image the worker will decode, at a fraction of a decode's cost.

    The format comes from the magic bytes and the size from the header (checked against `max_pixels`).
    A JPEG must then have its scan and its end marker (a truncated upload has none), a PNG its chunks whole
    with their checksums (Pillow's `verify`, which inflates nothing); other formats are decoded at the
    smallest size. The worker decodes the image once, for the model; damage inside a complete file that
    only decoding finds fails the job there with `invalid_image`.
    """
    fmt = sniff_format(data)
    with _translate_pillow_errors(fmt, max_pixels), _open(data, fmt) as im:
        _check_pixels(im.size, max_pixels)
        width, height = im.size
        if im.getexif().get(0x0112) in _QUARTER_TURNS:
            width, height = height, width
        if fmt == "JPEG":
            scan = data.find(_JPEG_START_OF_SCAN)
            if scan < 0 or data.rfind(_JPEG_END) < scan:
                raise InvalidImage("the JPEG file ends before its image data does; it may be truncated")
        elif fmt == "PNG":
            with _open(data, fmt) as fresh:
                fresh.verify()  # which must come straight after opening
        else:
            im.draft("RGB", (1, 1))
            im.load()
    return CheckedImage(format=fmt, width=width, height=height)


def decode_image(data: bytes, *, max_pixels: int, draft: int | None = None) -> DecodedImage:
    """Fully decode the first frame of `data` into an upright RGB image.

    With `draft`, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8) that still gives at
    least `draft` pixels a side: all of the file is read and checked, but a 1600 px photo costs a third as
    much to decode for a 224 px model. `width` and `height` stay those of the full image.

    Raises `UnsupportedMediaType`, `ImageTooLarge` (checked before decoding) or `InvalidImage` (empty,
    truncated, corrupt).
    """
    fmt = sniff_format(data)
    with _translate_pillow_errors(fmt, max_pixels), _open(data, fmt) as im:
        _check_pixels(im.size, max_pixels)
        width, height = im.size
        if draft is not None and fmt == "JPEG":
            im.draft("RGB", (draft, draft))
        # A full decode now, so that a truncated or corrupt file fails here and not later in a transform.
        im.load()
        upright = ImageOps.exif_transpose(im)
        rgb = _to_rgb(upright)
    if (rgb.width > rgb.height) != (width > height) and width != height:
        width, height = height, width  # EXIF turned it a quarter
    return DecodedImage(image=rgb, format=fmt, width=width, height=height)


@contextmanager
def _translate_pillow_errors(fmt: str, max_pixels: int) -> Iterator[None]:
    with warnings.catch_warnings():
        # Pillow warns about corrupt EXIF, palette transparency and the like: noise for a service, and an
        # error wherever warnings are errors. Its bomb warning, though, must refuse the image.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_large(exc, max_pixels) from exc
        except UnidentifiedImageError as exc:
            raise InvalidImage(
                f"the file starts like a {fmt} image but is not a readable one; it may be corrupt or truncated"
            ) from exc
        except _PILLOW_ERRORS as exc:
            raise InvalidImage(
                f"the file looks like {fmt} but could not be decoded ({exc}); it may be truncated or corrupt"
            ) from exc


def _too_large(exc: Exception, max_pixels: int) -> ImageTooLarge:
    # Pillow refuses in Image.open, before the size is ours to read; its message carries the pixel count.
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f"{int(found[1]):,} pixels" if found else "too many pixels to decode safely"
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    return ImageTooLarge(f"the image has {pixels}, over the limit of {limit:,} pixels; scale it down and send it again")


def _open(data: bytes, fmt: str) -> Image.Image:
    # Restricted to the sniffed format, so a file cannot reach a plugin it did not announce itself for.
    return Image.open(io.BytesIO(data), formats=[fmt])


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"the image is {width}×{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "pixels; scale it down and send it again"
        )


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in _SIXTEEN_BIT_GREY or im.mode in ("I", "F"):
        return _grey_to_8bit(im).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or im.has_transparency_data:
        rgba = im.convert("RGBA")
        # Composited, not dropped: a transparent pixel's colour is arbitrary (often black) and means nothing.
        background = Image.new("RGB", im.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    # CMYK (Pillow reads JPEG CMYK with Adobe's inverted polarity), P, 1, L, YCbCr...
    return im.convert("RGB")


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    # Pillow's own convert clips these modes at 255 instead of scaling, which turns most pixels white.
    values = np.asarray(im).astype(np.float64)
    values[~np.isfinite(values)] = 0.0
    if im.mode in _SIXTEEN_BIT_GREY or (im.mode == "I" and _within(values, 0, 65535)):
        scaled = values / 257.0
    elif im.mode == "F" and _within(values, 0.0, 1.0):
        scaled = values * 255.0
    else:
        # Samples of unknown range (32-bit integers, arbitrary floats): stretch what is there.
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _within(values: npt.NDArray[np.float64], low: float, high: float) -> bool:
    return bool(values.size == 0 or (values.min() >= low and values.max() <= high))
