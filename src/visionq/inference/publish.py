"""Publishing a model version to the model repository, as `visionq models push` does.

A release is a model file with its labels and its manifest's other fields, read from a folder (a `manifest.toml`
beside them, as in `VISIONQ_MODEL_DIR`) or given for a single ONNX file. Publishing gives it a version (the
model's highest + 1, or the one asked for, if free), writes the weights' SHA-256 into its manifest, and uploads
the files, the manifest last.

>>> release = folder_release(Path("flowers-v3"), "flowers")          # doctest: +SKIP
>>> push(repository, release, taken={1, 2})                          # doctest: +SKIP
Pushed(version=Version(name='flowers', number=3), sha256='9f2c…')
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionq.inference.manifest import (
    IMAGENET_LABELS,
    MANIFEST_NAME,
    ManifestError,
    check_manifest,
    parse_manifest,
    read_labels_file,
    render_manifest,
)
from visionq.inference.receipts import file_sha256
from visionq.inference.repository import (
    ModelRepository,
    Version,
    is_plain_file_name,
    list_versions,
    next_version,
    publish,
)

#: Fields a release's manifest may not set: publishing does.
_SET_BY_PUBLISHING = ("version", "sha256")


class PushRefused(ValueError):
    """A release that cannot be published as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Release:
    """A model version to publish: `name`, its weights and labels files (None for the ImageNet names), and its
    manifest's other fields (runtime, input size, transform, description)."""

    name: str
    weights: Path
    labels: Path | None
    fields: dict[str, Any]
    where: str
    """What messages about it name: the folder's manifest, or the model file."""


@dataclass(frozen=True)
class Pushed:
    version: Version
    sha256: str


def folder_release(folder: Path, name: str) -> Release:
    """The release in `folder`: its `manifest.toml` (which may leave out `name`, and whose `version` and
    `sha256` are ignored), the weights and the labels file it names."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        raise PushRefused(f"{folder} has no {MANIFEST_NAME}: push a folder with one, or a single .onnx file")
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(manifest, f"cannot read it: {exc}") from exc
    named = data.pop("name", name)
    if named != name:
        raise ManifestError(manifest, f"it names the model {named!r}, not {name!r}: push it as {named!r}, or fix it")
    for field in _SET_BY_PUBLISHING:
        data.pop(field, None)
    weights, labels = str(data.pop("weights", "")), str(data.pop("labels", ""))
    if not weights or not labels:
        raise ManifestError(manifest, f"{'weights' if not weights else 'labels'}: required field is missing")
    return Release(
        name=name,
        weights=folder / weights,
        labels=None if labels == IMAGENET_LABELS else folder / labels,
        fields=data,
        where=str(manifest),
    )


def file_release(weights: Path, name: str, *, labels: str | None, input_size: int | None) -> Release:
    """A release of one ONNX file, with `labels` (a file, or `imagenet`) and `input_size`; the rest of the
    manifest keeps its defaults (see docs/models.md)."""
    if weights.suffix.lower() != ".onnx":
        raise PushRefused(f"{weights} is not an .onnx file: push a folder with a {MANIFEST_NAME} for other models")
    if labels is None or input_size is None:
        raise PushRefused(f"a single model file needs --labels FILE (or --labels {IMAGENET_LABELS}) and --input-size N")
    return Release(
        name=name,
        weights=weights,
        labels=None if labels == IMAGENET_LABELS else Path(labels),
        fields={"runtime": "onnx", "input_size": input_size},
        where=str(weights),
    )


def push(
    repository: ModelRepository, release: Release, *, taken: Iterable[int] = (), version: int | None = None
) -> Pushed:
    """Publish `release` as `version`, or as the version after the highest of the repository's and of `taken`
    (the versions of the model elsewhere in the catalog: built-in, `VISIONQ_MODEL_DIR`). A version that exists
    is refused."""
    files = _files(release)
    numbers = {v.number for v in list_versions(repository) if v.name == release.name} | set(taken)
    number = next_version(numbers) if version is None else version
    if number in numbers:
        raise PushRefused(
            f"{release.name}@{number} exists already (versions: {', '.join(map(str, sorted(numbers)))}); versions are "
            f"never replaced: push without --version for {release.name}@{next_version(numbers)}"
        )
    digest = file_sha256(release.weights)
    fields = check_manifest(
        {
            **release.fields,
            "name": release.name,
            "version": number,
            "weights": release.weights.name,
            "labels": release.labels.name if release.labels is not None else IMAGENET_LABELS,
            "sha256": digest,
        },
        release.where,
    )
    text = render_manifest(fields)
    assert parse_manifest(text, release.where) == fields, "a manifest must read back as it was written"
    target = Version(release.name, number)
    publish(repository, target, files, text.encode("utf-8"))
    return Pushed(target, digest)


def _files(release: Release) -> dict[str, Path]:
    """The files to upload, by their name in the version's folder; refused if missing, empty or clashing."""
    files = {release.weights.name: release.weights}
    if release.labels is not None:
        if release.labels.name in files:
            raise PushRefused(f"{release.where}: the weights and the labels file must have different names")
        files[release.labels.name] = release.labels
    for path in files.values():
        if not path.is_file():
            raise PushRefused(f"{release.where}: file {str(path)!r} does not exist")
        if not is_plain_file_name(path.name) or path.name == MANIFEST_NAME:
            raise PushRefused(f"{release.where}: {path.name!r} cannot be a file of a version's folder; rename it")
    if release.labels is not None:
        try:
            names = read_labels_file(release.labels)
        except (OSError, UnicodeDecodeError) as exc:
            raise PushRefused(f"{release.where}: cannot read the labels file {release.labels}: {exc}") from exc
        if not names:
            raise PushRefused(f"{release.where}: the labels file {release.labels} has no class names")
    return files
