"""`DirectoryImages`: uploads as files in a folder, local or a volume shared by the API and the workers."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Generator, Iterator
from pathlib import Path

from visionq.images.store import SWEEP_BATCH, KeepFilter, check_job_id, store_unreachable

#: Suffix of a write in progress; one still there after a crash is swept like an image.
TEMP_SUFFIX = ".part"


class DirectoryImages:
    """Images as files `root/<first two characters of the id>/<job_id>`, written whole or not at all.

    >>> images = DirectoryImages(Path("/var/lib/visionq/images"))
    >>> images.put("4f1c2a9e-0d7b-4c55-9a7e-5b0c1d2e3f40", b"<png bytes>")  # root/4f/4f1c2a9e-...
    >>> images.get("4f1c2a9e-0d7b-4c55-9a7e-5b0c1d2e3f40")
    b'<png bytes>'
    """

    name = "directory"

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, job_id: str, data: bytes) -> None:
        target = self._path(job_id)
        with _translated(f"writing {target}"):
            self._make_folder(target.parent)
            # A temporary file beside the target, then a rename: readers see the old file or the new one, and a
            # write cut short leaves only a temporary file for the sweeper. No fsync: an image lives minutes, and
            # a power cut that loses one fails only its job, which is cheaper than an fsync on every upload.
            # Named for the job and the writer (process, thread): no two writers ever share one.
            temp = target.parent / f".{job_id}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise

    def get(self, job_id: str) -> bytes | None:
        path = self._path(job_id)
        with _translated(f"reading {path}"):
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None

    def delete(self, job_id: str) -> None:
        path = self._path(job_id)
        with _translated(f"deleting {path}"):
            path.unlink(missing_ok=True)

    def sweep(self, older_than: float, *, keep: KeepFilter | None = None) -> int:
        removed = 0
        with contextlib.closing(self._old_files(older_than)) as old:
            while True:
                with _translated(f"sweeping {self.root}"):
                    batch = list(itertools.islice(old, SWEEP_BATCH))
                if not batch:
                    return removed
                # A temporary file is no job's image: only images are offered to `keep`.
                images = [path.name for path in batch if not path.name.startswith(".")]
                kept = set(keep(images)) if keep is not None and images else set()
                with _translated(f"sweeping {self.root}"):
                    removed += sum(_unlink(path) for path in batch if path.name not in kept)

    def _path(self, job_id: str) -> Path:
        return self.root / check_job_id(job_id)[:2] / job_id

    def _old_files(self, older_than: float) -> Generator[Path, None, None]:
        """The files last modified before `older_than`, images and temporary files alike. Empty fan-out folders
        stay: there are at most 256 or so (hex ids), and removing one could race a `put`."""
        try:
            folders = [entry.path for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False)]
        except FileNotFoundError:  # nothing was ever stored
            return
        for folder in folders:
            try:
                entries = os.scandir(folder)
            except FileNotFoundError:
                continue
            with entries:
                yield from (Path(entry.path) for entry in entries if _is_older(entry, older_than))

    def _make_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700, exist_ok=True)


def _is_older(entry: os.DirEntry[str], older_than: float) -> bool:
    try:
        return entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < older_than
    except FileNotFoundError:  # deleted since it was listed
        return False


def _unlink(path: Path) -> int:
    """Remove `path`; 1 if it was there, 0 if another process (its job's end, another sweeper) was first."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    return 1


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """OSError (a full disk, a lost network volume, permissions) → `BrokerUnavailable`."""
    try:
        yield
    except OSError as exc:
        raise store_unreachable(what, exc) from exc
