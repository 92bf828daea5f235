"""Property-based fuzzing of the upload path's image decoding with Hypothesis: real images of every accepted
format, mutated (bytes flipped, cut, inserted, headers rewritten). Whatever comes in, decoding either gives
an RGB image within the pixel cap or raises a documented problem; it never crashes, a test deadline
bounds its time, and a limit on the process's data segment bounds its memory. The examples are few here (a
bounded run in CI); `HYPOTHESIS_PROFILE=fuzz` runs many more.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import bad_inputs, cat_variants
from visionq.errors import ImageTooLarge, InvalidImage, UnsupportedMediaType
from visionq.imaging.decode import check_image, decode_image

#: The pixel cap of the test: small, so that a mutated header claiming a huge image is refused cheaply.
MAX_PIXELS = 2_000_000
DOCUMENTED = (InvalidImage, UnsupportedMediaType, ImageTooLarge)
#: Memory a decode may take beyond what the process holds: ten times what the largest image within MAX_PIXELS
#: needs (its RGBA copy and a float64 grey plane come to about 24 MiB), far below what a decoder that believed
#: a forged length or count would ask for.
HEADROOM = 256 * 2**20

#: The memory bound is set per test (it holds for all the test's examples), which Hypothesis would warn about.
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=150, deadline=2000, derandomize=True, suppress_health_check=_SUPPRESSED)
settings.register_profile("fuzz", max_examples=20_000, deadline=2000, suppress_health_check=_SUPPRESSED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SEEDS = sorted({**cat_variants(), **bad_inputs()}.items())


@pytest.fixture(autouse=True)
def bounded_memory() -> Iterator[None]:
    """Every example runs under RLIMIT_DATA (heap and private mappings): an allocation past the headroom fails
    with MemoryError, which is no documented problem, so the example fails. The limit is taken from what the
    process holds as each test starts (the suite before it may free hundreds of MB meanwhile, which would widen a
    limit set once per module), and restored after it."""
    gc.collect()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = _data_in_use() + HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_in_use() -> int:
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmData:"))
    return int(kib) * 1024


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    _, data = draw(st.sampled_from(SEEDS))
    buffer = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        if not buffer:
            break
        at = draw(st.integers(min_value=0, max_value=len(buffer) - 1))
        if action == "flip":
            buffer[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif action == "cut":
            del buffer[at : at + draw(st.integers(min_value=1, max_value=4096))]
        elif action == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:  # where formats keep their dimensions and chunk lengths
            position = draw(st.integers(min_value=0, max_value=min(64, len(buffer) - 1)))
            buffer[position] = draw(st.integers(min_value=0, max_value=255))
    return bytes(buffer)


@given(mutated())
def test_a_mutated_image_decodes_within_the_cap_or_is_a_documented_problem(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_pixels=MAX_PIXELS)
    except DOCUMENTED:
        return
    assert decoded.width * decoded.height <= MAX_PIXELS
    assert decoded.image.mode == "RGB"


@given(mutated())
def test_a_mutated_image_passes_the_apis_check_within_the_cap_or_is_a_documented_problem(data: bytes) -> None:
    try:
        checked = check_image(data, max_pixels=MAX_PIXELS)
    except DOCUMENTED:
        return
    assert checked.width * checked.height <= MAX_PIXELS


@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_a_documented_problem_or_an_image(data: bytes) -> None:
    with contextlib.suppress(*DOCUMENTED):
        decode_image(data, max_pixels=MAX_PIXELS)


@pytest.mark.parametrize(("name", "data"), SEEDS)
def test_every_seed_is_handled_without_mutation(name: str, data: bytes) -> None:
    try:
        decode_image(data, max_pixels=MAX_PIXELS)
    except DOCUMENTED:
        assert name in bad_inputs(), f"{name} is a good image and must decode"


def test_the_memory_bound_holds_during_the_fuzzing() -> None:
    """The limit is in force: asking for more than the headroom fails (else the properties proved no bound)."""
    with pytest.raises(MemoryError):
        bytearray(2 * HEADROOM)
