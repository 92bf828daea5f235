"""`ModelSources`: the catalog of one process, made from where models come from, and kept in step with the
model repository while the process runs.

The built-in models and those of `VISIONQ_MODEL_DIR` are read once, strictly. The versions of the model
repository (`inference/repository.py`) are listed at start-up, then every `model_repository_poll` seconds in a
thread, and at once when a request names a model the catalog lacks (at most once a second). Each version's
manifest and labels are copied into a local mirror, so that the API knows a model's classes without its weights;
a worker fetches the weights on first use, checked against the manifest's SHA-256 (`ensure_weights`).

A repository version that cannot be used (a broken manifest, a missing labels file) is logged with the file and
the problem, and left out; the others are served. An unreachable repository leaves the catalog as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from visionq.inference.catalog import Catalog, fixed_specs, origin, parse_ref
from visionq.inference.manifest import (
    IMAGENET_LABELS,
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    manifest_spec,
    parse_manifest,
)
from visionq.inference.receipts import file_sha256
from visionq.inference.repository import (
    DirectoryRepository,
    ModelRepository,
    RepositoryError,
    Version,
    check_digest,
    fetch_verified,
    is_plain_file_name,
    list_versions,
    open_repository,
)
from visionq.inference.spec import LATEST, ModelSpec

if TYPE_CHECKING:
    from visionq.settings import Settings

log = logging.getLogger(__name__)

#: The mirrors of model repositories, in the model cache: one folder per repository.
MIRROR_FOLDER = "repository"
#: Seconds between two listings that requests for models the catalog lacks may cause.
MIN_LISTING_INTERVAL = 1.0
#: Seconds `stop` waits for a listing in progress to end.
STOP_TIMEOUT = 2.0


class ModelSources:
    """The catalog of a process (API or worker): built-in models, `VISIONQ_MODEL_DIR`, and the model repository.

    `catalog` is one `Catalog` for the life of the process, updated in place (atomically) when the repository
    changes; hand it to whatever resolves models.

    >>> sources = ModelSources(settings)       # lists the repository once; ValueError for a broken model folder
    >>> sources.start()                          # then every model_repository_poll seconds, in a thread
    >>> sources.resolve("flowers@3")             # listed at once if the catalog lacks it
    >>> sources.ensure_weights(spec)             # a worker, before it loads a model
    """

    def __init__(self, settings: Settings) -> None:
        self.poll = settings.model_repository_poll
        self.repository: ModelRepository | None = open_repository(settings)
        self._fixed = fixed_specs(settings)
        self._fixed_refs = {spec.ref: spec for spec in self._fixed}
        self.mirror: DirectoryRepository | None = None
        if self.repository is not None:
            self.mirror = DirectoryRepository(settings.model_cache.absolute() / MIRROR_FOLDER / _mirror_name(settings))
        #: Each listed version's manifest tag, and its spec (None when it cannot be used).
        self._seen: dict[Version, tuple[str, ModelSpec | None]] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._listed_at = float("-inf")
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.catalog = Catalog([*self._fixed, *self._first_listing()], default=settings.default_model)

    # --- the catalog ---------------------------------------------------------------------------------------

    def lacks(self, ref: str, latest: str | None = None) -> bool:
        """Whether `ref` (for `latest`: the admin's choice `latest`) names a model the catalog lacks, which the
        repository may have published since it was last listed."""
        wanted = latest if ref.strip() == LATEST else ref
        if self.repository is None or wanted is None or parse_ref(wanted) is None:
            return False
        return not self.catalog.knows(wanted)

    def resolve(self, ref: str, *, latest: str | None = None) -> ModelSpec:
        """`Catalog.resolve`, listing the repository first when the catalog lacks the model (blocks for up to
        a second, plus the listing)."""
        if self.lacks(ref, latest):
            self.refresh_after(time.monotonic())
        return self.catalog.resolve(ref, latest=latest)

    async def resolve_async(self, ref: str, *, latest: str | None = None) -> ModelSpec:
        """`resolve` for an event loop: a listing runs in a thread, never in the loop."""
        if self.lacks(ref, latest):
            await asyncio.to_thread(self.refresh_after, time.monotonic())
        return self.catalog.resolve(ref, latest=latest)

    def refresh(self) -> bool:
        """List the repository now and update the catalog; False (logged) when the catalog was left as it was."""
        with self._lock:
            return self._refresh()

    def refresh_after(self, since: float) -> None:
        """List the repository, unless a listing has begun since `since` (a `time.monotonic()`), whose answer is
        as new as the caller needs: concurrent callers share one listing, and there is at most one a second."""
        if self.repository is None:
            return
        with self._lock:
            if self._listed_at >= since:
                return
            wait = self._listed_at + MIN_LISTING_INTERVAL - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._refresh()

    # --- the thread ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """List the repository every `model_repository_poll` seconds, in a thread, until `stop`."""
        if self.repository is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="visionq-model-repository", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.refresh()
            except Exception:  # the thread must outlive any one listing
                log.exception("listing the model repository failed; it is listed again in %g s", self.poll)

    # --- weights -------------------------------------------------------------------------------------------

    def ensure_weights(self, spec: ModelSpec) -> None:
        """Make sure `spec`'s weights file is there with the SHA-256 its manifest gives, before anything loads it.
        A repository version's is fetched into the mirror the first time (a copy there that differs is fetched
        again); a model folder's is checked where it is. Raises `WeightsMismatch` (a fetched file is not kept) or
        `RepositoryError`."""
        expected = spec.weights_sha256
        if expected is None:
            return
        path = Path(spec.weights)
        if self.mirror is None or self.repository is None or not path.is_relative_to(self.mirror.root):
            check_digest(file_sha256(path), expected, str(path))
            return
        if path.is_file():
            if file_sha256(path) == expected:
                return
            log.warning("the cached weights of %s (%s) differ from its manifest; fetching them again", spec.ref, path)
            path.unlink(missing_ok=True)
        fetch_verified(self.repository, Version(spec.name, spec.version).key(path.name), path, expected)
        log.info("fetched the weights of %s from %s", spec.ref, self.repository.location)

    # --- listing -------------------------------------------------------------------------------------------

    def _first_listing(self) -> list[ModelSpec]:
        if self.repository is None or self.mirror is None:
            return []
        try:
            specs = self._list(self.repository)
        except RepositoryError as exc:
            log.warning("%s; serving the versions mirrored in %s until it answers", exc, self.mirror.location)
            self._failing = True
            try:
                specs = [s for v in sorted(list_versions(self.mirror)) if (s := self._spec(v, self.mirror))]
            except RepositoryError:
                specs = []
        log.info("model repository %s: %d versions", self.repository.location, len(specs))
        for spec in specs:
            if (other := self._fixed_refs.get(spec.ref)) is not None:
                raise ValueError(
                    f"duplicate model {spec.ref}: {origin(other)} and {self.repository.location}/{spec.name}/"
                    f"{spec.version}/ in the model repository; publish it under another version"
                )
        return specs

    def _refresh(self) -> bool:
        assert self.repository is not None
        before = self.catalog.refs()
        try:
            specs = self._list(self.repository)
        except RepositoryError as exc:
            if not self._failing:
                log.warning("%s; the catalog keeps its models until it answers", exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("model repository %s answers again", self.repository.location)
        self._failing = False
        kept = [spec for spec in specs if not self._clashes(spec)]
        try:
            self.catalog.update([*self._fixed, *kept])
        except ValueError as exc:
            log.error("model repository %s: the catalog keeps its models: %s", self.repository.location, exc)
            return False
        added = sorted(self.catalog.refs() - before)
        if added:
            log.info("model repository %s: added %s", self.repository.location, ", ".join(added))
        return True

    def _list(self, repository: ModelRepository) -> list[ModelSpec]:
        """The usable versions of `repository`, each mirrored (once per change of its manifest)."""
        self._listed_at = time.monotonic()
        listed = list_versions(repository, misplaced=self._report)
        seen = {}
        for version, tag in sorted(listed.items()):
            known = self._seen.get(version)
            if known is None or known[0] != tag:
                try:
                    known = (tag, self._spec(version, repository))
                except RepositoryError as exc:  # its labels could not be read: tried again next time
                    self._report(f"{exc}; {version.ref} is left out")
                    continue
            seen[version] = known
        self._seen = seen
        return [spec for _, spec in seen.values() if spec is not None]

    def _spec(self, version: Version, source: ModelRepository) -> ModelSpec | None:
        """The spec of `version`, whose manifest and labels are copied from `source` into the mirror (unless
        `source` is the mirror); None, logged, when its manifest cannot be used."""
        assert self.mirror is not None
        manifest_key = version.key(MANIFEST_NAME)
        where = f"{source.location}/{manifest_key}"
        data = source.read(manifest_key)
        try:
            try:
                fields = parse_manifest(data.decode("utf-8"), where)
            except UnicodeDecodeError as exc:
                raise ManifestError(where, f"cannot read it: {exc}") from exc
            _check_repository_fields(fields, version, where)
            if source is not self.mirror:
                if fields.labels != IMAGENET_LABELS:
                    self.mirror.write(version.key(fields.labels), source.read(version.key(fields.labels)))
                self.mirror.write(manifest_key, data)  # last: a mirrored manifest always has its labels
            folder = self.mirror.root / version.name / str(version.number)
            return manifest_spec(fields, where=where, folder=folder, weights=folder / fields.weights)
        except ManifestError as exc:
            self._report(f"model repository: {exc}; {version.ref} is left out")
            return None

    def _clashes(self, spec: ModelSpec) -> bool:
        other = self._fixed_refs.get(spec.ref)
        if other is not None:
            self._report(f"model repository: {spec.ref} is left out: the catalog has it already ({origin(other)})")
        return other is not None

    def _report(self, problem: str) -> None:
        """Log `problem` once in this process, not at every listing."""
        if problem not in self._reported:
            self._reported.add(problem)
            log.error("%s", problem)


def _check_repository_fields(fields: Manifest, version: Version, where: str) -> None:
    """What a repository's manifest needs beyond a model folder's: its digest, and the name and version of its
    folder, with its files in that folder."""
    if fields.sha256 is None:
        raise ManifestError(
            where,
            "sha256: required in a model repository (the weights file's SHA-256; `visionq models push` writes it)",
        )
    if (fields.name, fields.version) != (version.name, version.number):
        raise ManifestError(where, f"it names {fields.name}@{fields.version}, but it is in the folder of {version.ref}")
    for field, value in (("weights", fields.weights), ("labels", fields.labels)):
        if not (field == "labels" and value == IMAGENET_LABELS) and not is_plain_file_name(value):
            raise ManifestError(where, f"{field}: {value!r} must be a file name in the version's folder, not a path")


def _mirror_name(settings: Settings) -> str:
    """A folder name for the mirror of `settings.model_repository`: two repositories never share one."""
    location = settings.model_repository or ""
    if location.startswith("s3://"):
        place = f"{settings.s3_endpoint_url or 'aws'} {location.rstrip('/')}"
    else:
        place = str(Path(location).expanduser().absolute())
    return hashlib.sha256(place.encode()).hexdigest()[:16]
