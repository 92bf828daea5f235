from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from factories import (
    CAT_SIZE,
    TRANSPARENT_BOX,
    bad_inputs,
    cat_variants,
    chelsea,
    chelsea_grey,
    encode,
    png_header_only,
)
from visionq.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType, VisionqError
from visionq.imaging.decode import SUPPORTED_FORMATS, check_image, decode_image, read_header, sniff_format

MAX_PIXELS = 40_000_000
GREY_VARIANTS = {"jpeg_grey", "png_16bit"}
FORMAT_OF_VARIANT = {
    "jpeg": "JPEG",
    "jpeg_progressive": "JPEG",
    "jpeg_cmyk": "JPEG",
    "jpeg_grey": "JPEG",
    "jpeg_exif_rotated": "JPEG",
    "png": "PNG",
    "png_rgba": "PNG",
    "png_16bit": "PNG",
    "png_16bit_rgb": "PNG",
    "webp": "WEBP",
    "gif": "GIF",
    "tiff": "TIFF",
    "bmp": "BMP",
}
# Mean absolute difference per sample (0..255) from the original; lossy encodings measure about 2.
LOOKS_THE_SAME = 4.0


def as_ints(image: Image.Image) -> npt.NDArray[np.int32]:
    return np.asarray(image, dtype=np.int32)


def difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(as_ints(a) - as_ints(b)).mean())


def decode(data: bytes) -> Image.Image:
    return decode_image(data, max_pixels=MAX_PIXELS).image


def test_factories_cover_every_supported_format() -> None:
    assert set(FORMAT_OF_VARIANT) == set(cat_variants())
    assert set(FORMAT_OF_VARIANT.values()) == set(SUPPORTED_FORMATS)


@pytest.mark.parametrize("name", sorted(FORMAT_OF_VARIANT))
def test_every_variant_decodes_to_the_upright_rgb_cat(name: str) -> None:
    decoded = decode_image(cat_variants()[name], max_pixels=MAX_PIXELS)

    assert decoded.format == FORMAT_OF_VARIANT[name]
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == CAT_SIZE
    assert (decoded.width, decoded.height) == CAT_SIZE
    expected = chelsea_grey().convert("RGB") if name in GREY_VARIANTS else chelsea()
    assert difference(decoded.image, expected) < LOOKS_THE_SAME


@pytest.mark.parametrize("name", sorted(FORMAT_OF_VARIANT))
def test_the_format_is_sniffed_from_the_bytes(name: str) -> None:
    assert sniff_format(cat_variants()[name]) == FORMAT_OF_VARIANT[name]


def test_exif_orientation_turns_a_sideways_photo_upright() -> None:
    data = cat_variants()["jpeg_exif_rotated"]

    assert read_header(data, max_pixels=MAX_PIXELS) == ("JPEG", 300, 451)
    upright = decode(data)
    assert upright.size == CAT_SIZE
    assert difference(upright, chelsea()) < LOOKS_THE_SAME


def test_transparent_pixels_become_white_and_opaque_ones_stay() -> None:
    image = decode(cat_variants()["png_rgba"])

    left, top, right, bottom = TRANSPARENT_BOX
    assert image.getpixel((left, top)) == (255, 255, 255)
    assert image.getpixel((right - 1, bottom - 1)) == (255, 255, 255)
    assert image.getpixel((right + 10, bottom + 10)) == chelsea().getpixel((right + 10, bottom + 10))


def test_half_transparent_pixels_are_blended_over_white() -> None:
    red_half_seen = Image.new("RGBA", (4, 4), (255, 0, 0, 128))

    r, g, b = as_ints(decode(encode(red_half_seen, "PNG")))[0, 0]

    assert r == 255
    assert 125 <= g <= 129
    assert g == b


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt: str) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 200, 30, 30])
    image.putpixel((0, 0), 1)

    rgb = decode(encode(image, fmt, transparency=0))

    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (200, 30, 30)


def test_grey_with_alpha_is_composited_over_white() -> None:
    image = Image.new("LA", (4, 4), (0, 0))
    image.putpixel((0, 0), (100, 255))

    rgb = decode(encode(image, "PNG"))

    assert rgb.getpixel((1, 1)) == (255, 255, 255)
    assert rgb.getpixel((0, 0)) == (100, 100, 100)


def test_16bit_grey_png_looks_like_its_8bit_version() -> None:
    image = decode(cat_variants()["png_16bit"])
    grey = chelsea_grey().convert("RGB")

    # Clipping 16-bit samples at 255, as a plain convert does, would make it nearly all white.
    assert abs(as_ints(image).mean() - as_ints(grey).mean()) < 1.0
    assert difference(image, grey) < 1.0


def test_16bit_rgb_png_keeps_its_colours() -> None:
    assert difference(decode(cat_variants()["png_16bit_rgb"]), chelsea()) < 1.0


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_grey_tiff_in_either_byte_order_looks_like_its_8bit_version(mode: str) -> None:
    samples = np.asarray(chelsea_grey()).astype(np.uint16) * 257
    byte_order = "<u2" if mode == "I;16" else ">u2"
    image = Image.frombytes(mode, CAT_SIZE, samples.astype(byte_order).tobytes())

    assert difference(decode(encode(image, "TIFF")), chelsea_grey().convert("RGB")) < 1.0


def test_float_tiff_in_0_to_1_is_scaled_to_8_bits() -> None:
    samples = np.asarray(chelsea_grey()).astype(np.float32) / 255.0

    assert difference(decode(encode(Image.fromarray(samples), "TIFF")), chelsea_grey().convert("RGB")) < 1.0


def test_32bit_integer_tiff_of_unknown_range_is_stretched_to_8_bits() -> None:
    samples = np.array([[-1_000_000, 0, 1_000_000]], dtype=np.int32)

    rgb = decode(encode(Image.fromarray(samples), "TIFF"))

    assert [rgb.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255, 255, 255)]


def test_cmyk_jpeg_comes_back_in_its_colours() -> None:
    with Image.open(io.BytesIO(cat_variants()["jpeg_cmyk"])) as stored:
        assert stored.mode == "CMYK"

    assert difference(decode(cat_variants()["jpeg_cmyk"]), chelsea()) < LOOKS_THE_SAME


@pytest.mark.parametrize("name", ["gif", "tiff"])
def test_only_the_first_frame_of_a_multi_frame_file_is_decoded(name: str) -> None:
    with Image.open(io.BytesIO(cat_variants()[name])) as stored:
        assert getattr(stored, "n_frames", 1) == 2

    # The second frame is solid blue: the difference would be about 100 if it leaked in.
    assert difference(decode(cat_variants()[name]), chelsea()) < LOOKS_THE_SAME


def test_only_the_first_frame_of_an_animated_webp_is_decoded() -> None:
    blue = Image.new("RGB", CAT_SIZE, (0, 0, 255))
    data = encode(chelsea(), "WEBP", save_all=True, append_images=[blue], duration=100, quality=90)

    assert difference(decode(data), chelsea()) < LOOKS_THE_SAME


def test_an_empty_upload_is_an_invalid_image() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode(bad_inputs()["empty"])


@pytest.mark.parametrize("name", ["text", "pdf"])
def test_content_that_is_no_accepted_image_is_an_unsupported_media_type(name: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="accepted: JPEG, PNG, WebP, GIF, BMP or TIFF"):
        decode(bad_inputs()[name])


def test_a_truncated_jpeg_is_invalid_after_its_header_reads_fine() -> None:
    data = bad_inputs()["truncated_jpeg"]

    assert read_header(data, max_pixels=MAX_PIXELS) == ("JPEG", *CAT_SIZE)
    with pytest.raises(InvalidImage, match="JPEG.*truncated") as caught:
        decode(data)
    assert isinstance(caught.value.__cause__, OSError)


def test_a_png_signature_followed_by_garbage_is_invalid() -> None:
    with pytest.raises(InvalidImage, match="starts like a PNG image but is not a readable one"):
        read_header(bad_inputs()["corrupt_png"], max_pixels=MAX_PIXELS)


@pytest.mark.parametrize("check", [read_header, decode_image])
def test_a_decompression_bomb_is_refused_before_any_pixel_is_decoded(check: Callable[..., object]) -> None:
    # The bomb carries a single row: had decoding started, it would have failed as truncated instead.
    with pytest.raises(ImageTooLarge, match=r"400,000,000 pixels, over the limit of 40,000,000 pixels"):
        check(bad_inputs()["bomb_png"], max_pixels=MAX_PIXELS)


def test_the_pixel_limit_is_checked_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match=r"8000×8000 = 64,000,000 pixels, over the limit of 40,000,000"):
        decode_image(png_header_only(8000, 8000), max_pixels=MAX_PIXELS)


def test_pillows_bomb_warning_becomes_image_too_large_even_under_a_higher_limit() -> None:
    # 100 MP is over Pillow's own warning threshold (about 89 MP) but under this limit; warnings are
    # errors in this test run, so a warning that escaped would fail the test with another exception.
    with pytest.raises(ImageTooLarge, match="100,000,000 pixels"):
        read_header(png_header_only(10_000, 10_000), max_pixels=150_000_000)


def test_an_image_exactly_at_the_limit_is_accepted_and_one_pixel_less_is_not() -> None:
    data = cat_variants()["png"]
    width, height = CAT_SIZE

    assert decode_image(data, max_pixels=width * height).image.size == CAT_SIZE
    with pytest.raises(ImageTooLarge, match=r"451×300 = 135,300 pixels, over the limit of 135,299"):
        decode_image(data, max_pixels=width * height - 1)


def test_sniffing_reads_the_leading_bytes_and_nothing_else() -> None:
    png = cat_variants()["png"]

    assert sniff_format(png + b"%PDF-1.7 GIF89a") == "PNG"
    with pytest.raises(UnsupportedMediaType):
        sniff_format(b"see attached: " + png)


@pytest.mark.parametrize(("data", "fmt"), [(b"GIF89a" + b"\x00" * 64, "GIF"), (b"BMW is a car brand", "BMP")])
def test_bytes_that_only_begin_like_an_image_are_invalid(data: bytes, fmt: str) -> None:
    assert sniff_format(data) == fmt
    with pytest.raises(InvalidImage, match=fmt):
        decode(data)


@pytest.mark.parametrize("name", sorted(FORMAT_OF_VARIANT))
def test_damaged_files_raise_only_visionq_errors(name: str) -> None:
    data = cat_variants()[name]
    damaged = [data[:cut] for cut in (8, 16, 40, 100, 300, len(data) // 3)]
    damaged += [data[:at] + b"\xff\x00\x13\x37" * 8 + data[at + 32 :] for at in (12, 60, 200, len(data) // 2)]

    for sample in damaged:
        with contextlib.suppress(VisionqError):
            decode(sample)


# --- the API's check, and draft decoding -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMAT_OF_VARIANT))
def test_every_variant_passes_the_check_with_its_upright_size(name: str) -> None:
    checked = check_image(cat_variants()[name], max_pixels=MAX_PIXELS)

    assert (checked.format, checked.width, checked.height) == (FORMAT_OF_VARIANT[name], *CAT_SIZE)


def test_the_check_gives_the_upright_size_of_a_sideways_photo() -> None:
    checked = check_image(cat_variants()["jpeg_exif_rotated"], max_pixels=MAX_PIXELS)

    assert (checked.width, checked.height) == CAT_SIZE


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("truncated_jpeg", InvalidImage, "ends before its image data"),
        ("corrupt_png", InvalidImage, "not a readable one"),
        ("bomb_png", ImageTooLarge, "400,000,000 pixels"),
        ("text", UnsupportedMediaType, "accepted: JPEG"),
        ("empty", InvalidImage, "empty"),
    ],
)
def test_the_check_refuses_what_decoding_refuses(name: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_image(bad_inputs()[name], max_pixels=MAX_PIXELS)


def test_a_png_cut_inside_its_data_fails_the_check() -> None:
    data = cat_variants()["png"]

    with pytest.raises(InvalidImage):
        check_image(data[: len(data) * 2 // 3], max_pixels=MAX_PIXELS)


def test_a_large_jpeg_is_drafted_just_above_the_models_input_and_keeps_its_full_size() -> None:
    big = encode(chelsea().resize((1600, 1200)), "JPEG", quality=90)

    drafted = decode_image(big, max_pixels=MAX_PIXELS, draft=224)
    full = decode_image(big, max_pixels=MAX_PIXELS)

    assert (drafted.width, drafted.height) == (full.width, full.height) == (1600, 1200)
    assert drafted.image.size == (400, 300), "the 1/4 scale: the smallest still at least 224 a side"
    assert difference(drafted.image, full.image.resize((400, 300), Image.Resampling.BOX)) < LOOKS_THE_SAME


def test_draft_leaves_other_formats_whole() -> None:
    assert decode_image(cat_variants()["png"], max_pixels=MAX_PIXELS, draft=32).image.size == CAT_SIZE
