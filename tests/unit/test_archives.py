"""Unpacking a batch's archive: what is kept, in what order, and what refuses the whole archive."""

from __future__ import annotations

import io
import tarfile

import pytest

from factories import zip_of
from visionq import errors
from visionq.api.archives import Limits, is_archive, unpack

LIMITS = Limits(members=10, member_bytes=1000, total_bytes=3000)


def _tar(members: dict[str, bytes], *, mode: str = "w", link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("pack", [zip_of, _tar, lambda m: _tar(m, mode="w:gz")])
def test_members_keep_their_paths_and_order_and_clutter_is_passed_over(pack: object) -> None:
    data = pack({"b/two.jpg": b"2", "a/one.jpg": b"1", "__MACOSX/a/._one.jpg": b"x", ".DS_Store": b"x"})  # type: ignore[operator]
    assert is_archive(data)
    assert [(m.name, m.data) for m in unpack(data, LIMITS)] == [("b/two.jpg", b"2"), ("a/one.jpg", b"1")]


def test_an_image_is_not_an_archive() -> None:
    assert not is_archive(b"\xff\xd8\xff\xe0" + b"\0" * 600)


@pytest.mark.parametrize("name", ["../evil.jpg", "/etc/evil.jpg", "a/../../evil.jpg", "C:/evil.jpg"])
def test_a_member_outside_the_archive_refuses_it(name: str) -> None:
    with pytest.raises(errors.ValidationFailed, match="outside the archive"):
        unpack(zip_of({"fine.jpg": b"1", name: b"2"}), LIMITS)


def test_a_link_member_refuses_the_archive() -> None:
    with pytest.raises(errors.ValidationFailed, match="link"):
        unpack(_tar({"fine.jpg": b"1"}, link="passwd.jpg"), LIMITS)


def test_a_bomb_is_stopped_at_the_bound_whatever_the_archive_declares() -> None:
    with pytest.raises(errors.PayloadTooLarge, match="unpacks to more than 1000 bytes"):
        unpack(zip_of({"bomb.jpg": b"\0" * 10_000_000}), LIMITS)
    with pytest.raises(errors.PayloadTooLarge, match="unpacks to more than 3000 bytes"):
        unpack(zip_of({f"{n}.jpg": b"\0" * 900 for n in range(5)}), LIMITS)


def test_too_many_members_refuse_the_archive() -> None:
    with pytest.raises(errors.PayloadTooLarge, match="more than 10 files"):
        unpack(zip_of({f"{n}.jpg": b"1" for n in range(11)}), LIMITS)


def test_an_unreadable_or_empty_archive_is_a_clear_problem() -> None:
    with pytest.raises(errors.ValidationFailed, match="could not be read"):
        unpack(b"PK\x03\x04 truncated", LIMITS)
    with pytest.raises(errors.ValidationFailed, match="no files"):
        unpack(zip_of({"__MACOSX/x": b"1"}), LIMITS)
