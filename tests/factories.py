"""Images for the tests, made in memory from one real photo: skimage's `chelsea`, a 451×300 cat.

`cat_variants()` is the cat in every accepted format and the awkward modes uploads come in;
`bad_inputs()` is what must be refused. Both are built once per process and cost well under a second.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import skimage.data
from PIL import Image

CAT_SIZE = (451, 300)
#: In `png_rgba`, this box (left, top, right, bottom) is fully transparent over black pixels.
TRANSPARENT_BOX = (0, 0, 32, 32)
#: The EXIF Orientation tag, and the value that means "rotate 90° clockwise to display".
EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6


@cache
def _chelsea_pixels() -> npt.NDArray[np.uint8]:
    load: Callable[[], npt.ArrayLike] = skimage.data.chelsea  # skimage's functions carry no annotations
    pixels = np.asarray(load(), dtype=np.uint8)
    pixels.setflags(write=False)
    return pixels


def chelsea() -> Image.Image:
    """The cat as a fresh RGB image (451×300), safe to modify."""
    return Image.fromarray(_chelsea_pixels().copy())


def chelsea_grey() -> Image.Image:
    """The cat in 8-bit grey (mode "L"): what the grey and 16-bit variants should look like."""
    return chelsea().convert("L")


def encode(image: Image.Image, fmt: str, **params: Any) -> bytes:
    """`image` saved as `fmt` with Pillow's `params`."""
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def cat_variants() -> dict[str, bytes]:
    """The cat encoded in each accepted format and mode; each decodes to an upright 451×300 RGB cat.

    - `png_16bit` is 16-bit GREY (Pillow writes mode "I;16" as a 16-bit grey PNG; it has no 16-bit RGB
      mode to write), so it looks like `chelsea_grey()`. `png_16bit_rgb` is 16-bit RGB, written by hand.
    - `jpeg_cmyk` is CMYK with Adobe's inverted polarity, as Pillow and Photoshop write it.
    - `jpeg_exif_rotated` is stored 300×451, rotated 90° counter-clockwise, with EXIF Orientation 6.
    - `png_rgba` is opaque except `TRANSPARENT_BOX`, transparent over black.
    - `gif` is animated: the cat, then a solid blue frame. `tiff` has two pages: the cat, then blue.
    """
    return dict(_cat_variants())


@cache
def _cat_variants() -> dict[str, bytes]:
    cat = chelsea()
    grey = chelsea_grey()
    blue = Image.new("RGB", CAT_SIZE, (0, 0, 255))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATED_90_CW
    rgba = cat.convert("RGBA")
    rgba.paste((0, 0, 0, 0), TRANSPARENT_BOX)
    grey16 = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)
    return {
        "jpeg": encode(cat, "JPEG", quality=90),
        "jpeg_progressive": encode(cat, "JPEG", quality=90, progressive=True),
        "jpeg_cmyk": encode(cat.convert("CMYK"), "JPEG", quality=90),
        "jpeg_grey": encode(grey, "JPEG", quality=90),
        "jpeg_exif_rotated": encode(cat.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=exif),
        "png": encode(cat, "PNG"),
        "png_rgba": encode(rgba, "PNG"),
        "png_16bit": encode(grey16, "PNG"),
        "png_16bit_rgb": png_16bit_rgb(np.asarray(cat).astype(np.uint16) * 257),
        "webp": encode(cat, "WEBP", quality=90),
        "gif": encode(cat, "GIF", save_all=True, append_images=[blue], duration=100, loop=0),
        "tiff": encode(cat, "TIFF", compression="tiff_lzw", save_all=True, append_images=[blue]),
        "bmp": encode(cat, "BMP"),
    }


def bad_inputs() -> dict[str, bytes]:
    """Uploads that must be refused: empty, not an image, damaged, or a decompression bomb."""
    jpeg = _cat_variants()["jpeg"]
    return {
        "empty": b"",
        "text": b"This is a plain text file, not a picture of a cat.\n",
        "pdf": b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "corrupt_png": _PNG_SIGNATURE + random.Random(0).randbytes(2048),
        "bomb_png": png_header_only(20_000, 20_000),
    }


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares `width`×`height` RGB pixels but carries one row of them: a well-formed header
    for any size in a few dozen bytes. Only a check made before decoding can refuse it as too large;
    decoding it fails as truncated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # Flushed but not finished: a complete zlib stream that stops early would make Pillow fill the rest
    # with black and call the image whole.
    compressor = zlib.compressobj()
    one_row = compressor.compress(b"\x00" * (1 + 3 * width)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return _PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", one_row) + _chunk(b"IEND", b"")


def png_16bit_rgb(samples: npt.NDArray[np.uint16]) -> bytes:
    """An RGB PNG with 16 bits per sample (which Pillow cannot write) from an (H, W, 3) uint16 array."""
    height, width, _ = samples.shape
    rows = samples.astype(">u2").reshape(height, width * 3).view(np.uint8)
    # Each scanline starts with its filter type, 0 (none).
    raw = np.hstack([np.zeros((height, 1), dtype=np.uint8), rows]).tobytes()
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return _PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zip_of(members: dict[str, bytes]) -> bytes:
    """A zip archive (deflated) of `members`, name → bytes, in order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()
