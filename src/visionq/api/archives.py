"""Unpacking a batch's archive (`POST /batches` with one zip or tar `file`), refusing what could hurt the service.

Refused, the whole archive (nothing is submitted): a member whose path would leave the archive's folder (absolute,
`..`), a link or device member, more members than allowed, a member or a total larger than allowed once unpacked
(read with a cap, never trusting the sizes the archive declares: a bomb is stopped at the bound, not after it).
Folders, and the clutter archivers add (`__MACOSX/`, dot files), are passed over; members keep their path as
their item name, in archive order.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO

from visionq import errors

#: Bytes read at a time from a member.
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    members: int
    member_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes


def is_archive(data: bytes) -> bool:
    """Whether `data` is a zip or a tar (plain, gzip, bzip2 or xz) archive rather than one image."""
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return True
    if data[:2] == b"\x1f\x8b" or data[:3] == b"BZh" or data[:6] == b"\xfd7zXZ\x00":
        return True
    return len(data) > 262 and data[257:262] == b"ustar"


def unpack(data: bytes, limits: Limits) -> list[Member]:
    """The archive's images, in archive order; raises a problem (422, 413) for an archive it will not unpack."""
    try:
        members = list(_zip(data, limits) if data[:2] == b"PK" else _tar(data, limits))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise errors.ValidationFailed(f"the archive could not be read: {exc}") from exc
    if not members:
        raise errors.ValidationFailed("the archive holds no files")
    return members


def _zip(data: bytes, limits: Limits) -> Iterator[Member]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        budget = _Budget(limits)
        for info in archive.infolist():
            if info.is_dir() or _clutter(info.filename):
                continue
            name = _safe_name(info.filename)
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise errors.ValidationFailed(f"the archive member {name!r} is a link: refused")
            budget.count()
            with archive.open(info) as stream:
                yield Member(name, budget.read(name, stream))


def _tar(data: bytes, limits: Limits) -> Iterator[Member]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        budget = _Budget(limits)
        for info in archive:
            if info.isdir() or _clutter(info.name):
                continue
            name = _safe_name(info.name)
            if not info.isfile():
                raise errors.ValidationFailed(f"the archive member {name!r} is a link or a device: refused")
            budget.count()
            stream = archive.extractfile(info)
            assert stream is not None  # a regular file
            yield Member(name, budget.read(name, stream))


class _Budget:
    """Counts members and bytes against the limits as the archive is read."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.members = 0
        self.total = 0

    def count(self) -> None:
        self.members += 1
        if self.members > self.limits.members:
            raise errors.PayloadTooLarge(
                f"the archive holds more than {self.limits.members} files, the most a batch takes"
            )

    def read(self, name: str, stream: IO[bytes]) -> bytes:
        chunks, size = [], 0
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            self.total += len(chunk)
            if size > self.limits.member_bytes:
                raise errors.PayloadTooLarge(
                    f"the archive member {name!r} unpacks to more than {self.limits.member_bytes} bytes"
                )
            if self.total > self.limits.total_bytes:
                raise errors.PayloadTooLarge(f"the archive unpacks to more than {self.limits.total_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _clutter(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(part == "__MACOSX" or part.startswith(".") and part not in (".", "..") for part in parts)


def _safe_name(name: str) -> str:
    """The member's path, refused when it would leave the archive's folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise errors.ValidationFailed(f"the archive member {name!r} has a path outside the archive: refused")
    return str(path)
