from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from factories import chelsea
from visionq.imaging.transforms import stack, to_input

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
