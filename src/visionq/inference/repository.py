"""The model repository: published model versions in a folder or in S3-compatible storage.

Its layout is `<name>/<version>/` holding the weights file, the labels file (unless `labels = "imagenet"`) and a
`manifest.toml` in the format of `VISIONQ_MODEL_DIR`, plus the weights' `sha256`. A version exists once its
manifest does: `publish` writes the manifest last, so a version half published is never listed. Versions are
never changed once published; the service lists them (`ModelSources`) and fetches a version's weights on first
use, checking their digest before anything loads them (`fetch_verified`).

Every backend turns its own failures into `RepositoryError`, which says where and why.

>>> repository = open_repository(settings)                        # doctest: +SKIP
>>> sorted(list_versions(repository))                              # doctest: +SKIP
[Version(name='flowers', number=1), Version(name='flowers', number=2)]
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from visionq.inference.manifest import MANIFEST_NAME
from visionq.inference.receipts import file_sha256

if TYPE_CHECKING:
    from visionq.settings import Settings

log = logging.getLogger(__name__)

#: What a model name looks like (the manifest's rule), and a version folder: a positive integer, no leading 0.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
_NUMBER = re.compile(r"[1-9][0-9]{0,8}")
#: Suffix of a file being written; a reader never takes it for a version's file.
PARTIAL_SUFFIX = ".part"


class RepositoryError(OSError):
    """The model repository could not be read or written; the message says where and why."""


class WeightsMismatch(ValueError):
    """A weights file whose SHA-256 is not the one its manifest gives: refused, never loaded, never kept."""

    def __init__(self, where: str, actual: str, expected: str) -> None:
        super().__init__(
            f"{where}: the weights' SHA-256 is {actual}, but the manifest says {expected}; the file was refused "
            "(corrupt or tampered with). Publish the version again with `visionq models push`."
        )
        self.actual = actual
        self.expected = expected


@dataclass(frozen=True, order=True)
class Version:
    """One published version: its folder is `<name>/<number>/`."""

    name: str
    number: int

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}"

    def key(self, file: str) -> str:
        """The key (a relative path with `/`) of `file` in this version's folder."""
        if not is_plain_file_name(file):
            raise ValueError(f"not a file name of a version's folder: {file!r}")
        return f"{self.name}/{self.number}/{file}"


def is_plain_file_name(name: str) -> bool:
    """Whether `name` can be a file of a version's folder: no separators, not hidden, not `.`/`..`."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def parse_manifest_key(key: str) -> Version | None:
    """The version whose manifest is at `key` (`<name>/<version>/manifest.toml`); None for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[2] != MANIFEST_NAME:
        return None
    name, number = parts[0], parts[1]
    if not _NAME.fullmatch(name) or not _NUMBER.fullmatch(number):
        return None
    return Version(name, int(number))


def next_version(taken: Iterable[int]) -> int:
    """The version number after the highest of `taken` (compared as integers), or 1 for a new model."""
    return max(taken, default=0) + 1


def check_digest(actual: str, expected: str, where: str) -> None:
    """Raise `WeightsMismatch` unless `actual` is `expected` (hex SHA-256 digests)."""
    if actual.lower() != expected.lower():
        raise WeightsMismatch(where, actual, expected)


class ModelRepository(Protocol):
    """Where published model versions are kept. Keys are relative paths with `/` (`flowers/2/manifest.toml`).
    Methods are blocking and safe to call from several threads; each failure raises `RepositoryError`."""

    #: The repository's place, for messages and the local mirror's name: the folder, or `s3://bucket/prefix`.
    location: str

    def list_manifests(self) -> dict[str, str]:
        """The key of every file named `manifest.toml` two folders deep, each with a tag that changes when the
        file does (S3's ETag, a file's modification time and size)."""
        ...

    def read(self, key: str) -> bytes:
        """A small file (a manifest, a labels file), whole."""
        ...

    def download(self, key: str, target: IO[bytes]) -> None:
        """Copy a file, however large, into `target`."""
        ...

    def upload(self, key: str, source: Path) -> None:
        """Store the file `source` at `key`; readers see the old file or the whole new one."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Store `data` at `key`; readers see the old file or the whole new one."""
        ...


def list_versions(
    repository: ModelRepository, *, misplaced: Callable[[str], object] | None = None
) -> dict[Version, str]:
    """Every published version (one whose manifest exists), with its manifest's tag. A `manifest.toml` in the
    wrong place is left out, and its message handed to `misplaced` (logged as a warning without it)."""
    versions = {}
    for key, tag in repository.list_manifests().items():
        version = parse_manifest_key(key)
        if version is None:
            problem = (
                f"model repository {repository.location}: {key} is not at <name>/<version>/{MANIFEST_NAME} (a model "
                "name, then a version number such as 1, 2, 10); it is ignored"
            )
            (misplaced or log.warning)(problem)
            continue
        versions[version] = tag
    return versions


def publish(repository: ModelRepository, version: Version, files: Mapping[str, Path], manifest: bytes) -> None:
    """Publish `version`: its `files` (name in the version's folder → local file), then its manifest, last, so
    that the version is listed only once everything it names is there."""
    for name, source in files.items():
        repository.upload(version.key(name), source)
    repository.write(version.key(MANIFEST_NAME), manifest)


def fetch_verified(repository: ModelRepository, key: str, target: Path, expected: str) -> None:
    """Fetch `key` to `target` only if its SHA-256 is `expected`: it is written to a temporary file beside
    `target`, checked, then renamed, so `target` never holds anything else. Raises `WeightsMismatch` (the file is
    deleted) or `RepositoryError`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary(target) as temp:
        with temp.open("wb") as file:
            repository.download(key, file)
        check_digest(file_sha256(temp), expected, f"{repository.location}/{key}")
        os.replace(temp, target)


@contextlib.contextmanager
def _temporary(target: Path) -> Iterator[Path]:
    """A temporary file name beside `target`, for this process and thread alone; removed if still there."""
    temp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL_SUFFIX}"
    try:
        yield temp
    finally:
        temp.unlink(missing_ok=True)


class DirectoryRepository:
    """A repository in a folder (local, or a volume that every machine mounts). A missing folder is an error
    (a volume not mounted must not look like an empty repository), unless `create` makes it."""

    def __init__(self, root: Path, *, create: bool = False) -> None:
        self.root = root
        self.location = str(root)
        if create:
            with self._translated("making", root):
                root.mkdir(parents=True, exist_ok=True)

    def list_manifests(self) -> dict[str, str]:
        if not self.root.is_dir():
            raise RepositoryError(f"model repository {self.root} is not an existing folder")
        found = {}
        with self._translated("listing", self.root):
            for path in self.root.glob(f"*/*/{MANIFEST_NAME}"):
                status = path.stat()
                found[path.relative_to(self.root).as_posix()] = f"{status.st_mtime_ns}:{status.st_size}"
        return found

    def read(self, key: str) -> bytes:
        path = self._path(key)
        with self._translated("reading", path):
            return path.read_bytes()

    def download(self, key: str, target: IO[bytes]) -> None:
        path = self._path(key)
        with self._translated("reading", path), path.open("rb") as source:
            shutil.copyfileobj(source, target)

    def upload(self, key: str, source: Path) -> None:
        path = self._path(key)
        with self._translated("writing", path), _temporary(path) as temp:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, temp)
            os.replace(temp, path)

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with self._translated("writing", path), _temporary(path) as temp:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            os.replace(temp, path)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a key of the model repository: {key!r}")
        return self.root.joinpath(*parts)

    @staticmethod
    @contextlib.contextmanager
    def _translated(what: str, path: Path) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise RepositoryError(f"model repository: {what} {path} failed: {exc}") from exc


class S3Repository:
    """A repository under `prefix` in an S3-compatible bucket (the client of `images/s3.py`)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client = client

    def list_manifests(self) -> dict[str, str]:
        start = f"{self.prefix}/" if self.prefix else ""
        found = {}
        with self._translated("listing", self.location):
            for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                for item in page.get("Contents", []):
                    key = item["Key"][len(start) :]
                    if key.endswith(f"/{MANIFEST_NAME}"):
                        found[key] = str(item.get("ETag", item["LastModified"].isoformat()))
        return found

    def read(self, key: str) -> bytes:
        with self._translated("reading", self._url(key)):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with contextlib.closing(response["Body"]) as body:
                data: bytes = body.read()
        return data

    def download(self, key: str, target: IO[bytes]) -> None:
        with self._translated("reading", self._url(key)):
            self._client.download_fileobj(self.bucket, self._key(key), target)

    def upload(self, key: str, source: Path) -> None:
        with self._translated("writing", self._url(key)):
            self._client.upload_file(str(source), self.bucket, self._key(key))

    def write(self, key: str, data: bytes) -> None:
        with self._translated("writing", self._url(key)):
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _url(self, key: str) -> str:
        return f"{self.location}/{key}"

    @staticmethod
    @contextlib.contextmanager
    def _translated(what: str, where: str) -> Iterator[None]:
        """botocore's and boto3's errors (connection, time-out, credentials, an error answer, a failed transfer)
        → `RepositoryError`."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise RepositoryError(f"model repository: {what} {where} failed: {exc}") from exc


def open_repository(settings: Settings, *, publishing: bool = False) -> ModelRepository | None:
    """The repository `settings.model_repository` names (a folder, or `s3://bucket/prefix` reached with the `s3_*`
    settings), or None when it is unset. For `publishing`, a folder is made if need be (a bucket never is)."""
    location = settings.model_repository
    if location is None:
        return None
    if not location.startswith("s3://"):
        return DirectoryRepository(Path(location).expanduser(), create=publishing)
    # Imported here: boto3 costs about a third of a second, in processes that use S3 only.
    from visionq.images.s3 import create_s3_client
    from visionq.images.store import s3_connection

    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return S3Repository(bucket, prefix, create_s3_client(**s3_connection(settings)))
