from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from factories import chelsea
from visionq.imaging.transforms import ChannelOrder, Interpolation, Resize, Transform, stack, to_input

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


@pytest.mark.parametrize("size", [1, 224, 260])
def test_the_array_is_channels_first_float32_of_the_requested_size(size: int) -> None:
    array = to_input(chelsea(), size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    assert array.shape == (3, size, size)
    assert array.dtype == np.float32
    assert array.flags.c_contiguous


def test_a_solid_colour_is_scaled_to_0_1_and_normalised_per_channel() -> None:
    image = Image.new("RGB", (37, 21), (255, 0, 128))

    array = to_input(image, size=8, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        np.testing.assert_allclose(array[channel], value, rtol=1e-6)


def test_without_normalisation_black_is_0_and_white_is_1() -> None:
    image = Image.new("RGB", (10, 10), (0, 0, 0))
    image.paste((255, 255, 255), (5, 0, 10, 10))

    array = to_input(image, size=10, **IDENTITY)

    np.testing.assert_array_equal(array[:, :, :5], 0.0)
    np.testing.assert_array_equal(array[:, :, 5:], 1.0)


def test_the_whole_image_is_squashed_into_the_square_nothing_is_cropped() -> None:
    # A wide strip whose outer tenths are red and blue: a centre crop would lose both ends.
    image = Image.new("RGB", (400, 100), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 40, 100))
    image.paste((0, 0, 255), (360, 0, 400, 100))

    array = to_input(image, size=20, **IDENTITY)

    def column(rgb: tuple[float, float, float]) -> npt.NDArray[np.float64]:
        return np.repeat(np.array(rgb)[:, None], 20, axis=1)

    np.testing.assert_allclose(array[:, :, 0], column((1.0, 0.0, 0.0)))
    np.testing.assert_allclose(array[:, :, -1], column((0.0, 0.0, 1.0)))
    np.testing.assert_allclose(array[:, :, 10], column((0.0, 1.0, 0.0)))


def test_a_large_image_is_resized_to_about_the_same_values_as_a_full_resample() -> None:
    large = chelsea().resize((451 * 8, 300 * 8), Image.Resampling.NEAREST)
    full = np.asarray(large.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0

    array = to_input(large, size=224, **IDENTITY)

    assert float(np.abs(array.transpose(1, 2, 0) - full).mean()) < 0.01


def test_only_rgb_images_are_taken() -> None:
    with pytest.raises(ValueError, match="needs an RGB image, got mode 'RGBA'"):
        to_input(Image.new("RGBA", (4, 4)), size=4, **IDENTITY)


def test_stack_makes_an_nchw_float32_batch_in_order() -> None:
    arrays = [to_input(Image.new("RGB", (5, 5), (shade, shade, shade)), size=4, **IDENTITY) for shade in (0, 255)]

    batch = stack(arrays)

    assert batch.shape == (2, 3, 4, 4)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], 0.0)
    np.testing.assert_array_equal(batch[1], 1.0)


def test_stack_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="at least one array"):
        stack([])


# --- Transform: the whole of a model's preprocessing ------------------------------------------------


def _strip(width: int = 400, height: int = 100) -> Image.Image:
    """Green, with red and blue outer tenths at the left and right ends."""
    image = Image.new("RGB", (width, height), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, width // 10, height))
    image.paste((0, 0, 255), (width - width // 10, 0, width, height))
    return image


@pytest.mark.parametrize(
    ("size", "fraction", "width", "height", "box"),
    [
        # side = int(fraction × shorter side); offsets = (rest + 1) // 2, as tensorflow/tpu computes them.
        (224, 224 / 256, 451, 300, (95, 19, 357, 281)),
        (224, 224 / 256, 300, 451, (19, 95, 281, 357)),
        (240, 240 / 272, 1000, 1000, (59, 59, 941, 941)),
        (260, 260 / 292, 7, 3, (3, 1, 5, 3)),
        (224, 1.0, 10, 10, (0, 0, 10, 10)),
    ],
)
def test_the_centre_crop_box_follows_the_reference_arithmetic(
    size: int, fraction: float, width: int, height: int, box: tuple[int, int, int, int]
) -> None:
    transform = Transform(input_size=size, resize=Resize.CENTER_CROP, crop_fraction=fraction)

    assert transform.crop_box(width, height) == box


def test_a_centre_crop_loses_the_ends_of_a_long_image() -> None:
    transform = Transform(input_size=20, resize=Resize.CENTER_CROP, crop_fraction=0.875, mean=(0, 0, 0), std=(1, 1, 1))

    array = transform.apply(_strip())

    np.testing.assert_allclose(array[0], 0.0)  # no red left
    np.testing.assert_allclose(array[2], 0.0)  # no blue left
    np.testing.assert_allclose(array[1], 1.0)


def test_a_letterbox_keeps_the_whole_image_undistorted_on_a_field_of_the_mean() -> None:
    mean = (0.2, 0.4, 0.6)
    transform = Transform(input_size=40, resize=Resize.LETTERBOX, mean=mean, std=(1.0, 1.0, 1.0))

    array = transform.apply(_strip(400, 100))  # 4:1 → 40×10 in the middle rows 15..24

    np.testing.assert_allclose(array[:, :15, :], 0.0, atol=0.002)  # the mean colour, normalised to ~0
    np.testing.assert_allclose(array[:, 25:, :], 0.0, atol=0.002)
    np.testing.assert_allclose(array[:, 20, 0], np.subtract((1.0, 0.0, 0.0), mean), atol=1e-6)
    np.testing.assert_allclose(array[:, 20, 20], np.subtract((0.0, 1.0, 0.0), mean), atol=1e-6)
    np.testing.assert_allclose(array[:, 20, -1], np.subtract((0.0, 0.0, 1.0), mean), atol=1e-6)


def test_bgr_reverses_the_channels_after_normalising_in_rgb() -> None:
    rgb = Transform(input_size=8, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    bgr = Transform(input_size=8, mean=IMAGENET_MEAN, std=IMAGENET_STD, channel_order=ChannelOrder.BGR)

    np.testing.assert_array_equal(bgr.apply(chelsea()), rgb.apply(chelsea())[::-1])


@pytest.mark.parametrize("interpolation", list(Interpolation))
def test_the_declared_filter_is_the_one_used(interpolation: Interpolation) -> None:
    image = chelsea()  # 451×300: to 200 px, under the reducing gap, so one plain resample
    transform = Transform(input_size=200, interpolation=interpolation, mean=(0, 0, 0), std=(1, 1, 1))

    expected = np.asarray(image.resize((200, 200), interpolation.resampling), dtype=np.float32) / 255.0

    np.testing.assert_allclose(transform.apply(image).transpose(1, 2, 0), expected, atol=1e-6)


def test_the_canonical_string_names_every_step_and_changes_with_each() -> None:
    base = Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.875)
    variants = [
        base,
        Transform(input_size=240, resize=Resize.CENTER_CROP, crop_fraction=0.875),
        Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.9),
        Transform(input_size=224),
        Transform(input_size=224, resize=Resize.LETTERBOX),
        Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.875, interpolation=Interpolation.BICUBIC),
        Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.875, mean=(0.5, 0.5, 0.5)),
        Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.875, std=(0.5, 0.5, 0.5)),
        Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.875, channel_order=ChannelOrder.BGR),
    ]

    assert len({v.canonical() for v in variants}) == len({v.sha256() for v in variants}) == len(variants)
    assert base.canonical() == Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=0.875).canonical()
    assert len(base.sha256()) == 64


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"crop_fraction": 0.5}, "crop_fraction applies to resize = 'center_crop' only"),
        ({"resize": Resize.CENTER_CROP, "crop_fraction": 0.0}, "crop_fraction must be > 0 and <= 1"),
        ({"resize": Resize.CENTER_CROP, "crop_fraction": 1.2}, "crop_fraction must be > 0 and <= 1"),
        ({"std": (0.5, 0.0, 0.5)}, "every std value > 0"),
        ({"mean": (float("nan"), 0.0, 0.0)}, "mean must be finite"),
        ({"input_size": 0}, "input_size must be 1..2048"),
    ],
)
def test_a_contradictory_transform_is_refused(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Transform(**{"input_size": 8, **fields})  # type: ignore[arg-type]


def test_a_draft_keeps_enough_pixels_for_the_part_that_is_resized() -> None:
    lite0 = Transform(input_size=224, resize=Resize.CENTER_CROP, crop_fraction=224 / 256)

    assert lite0.draft_size(1.0) == 256
    assert lite0.draft_size(2.0) == 512
    assert Transform(input_size=224).draft_size(1.5) == 336
