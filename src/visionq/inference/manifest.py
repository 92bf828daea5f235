"""A user model's `manifest.toml`: its fields, how they are checked, and the `ModelSpec` they make.

The same format serves `VISIONQ_MODEL_DIR` (one folder per model) and the model repository (one folder per
`<name>/<version>/`, where `sha256` is required). Every problem is a `ManifestError` that names the file and
what is wrong with it. Like the catalog, this imports no runtime.

>>> spec = load_manifest(Path("models/flowers-v1/manifest.toml"))   # doctest: +SKIP
>>> spec.ref                                                         # doctest: +SKIP
'flowers@1'
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visionq.imaging.transforms import ChannelOrder, Interpolation, Resize
from visionq.inference.imagenet import IMAGENET_NUM_CLASSES
from visionq.inference.spec import LATEST, ModelSpec, Runtime

__all__ = [
    "DEFAULT_CROP_FRACTION",
    "IMAGENET_LABELS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestError",
    "check_manifest",
    "labels_sha256",
    "load_manifest",
    "load_user_models",
    "manifest_spec",
    "parse_manifest",
    "read_labels_file",
    "render_manifest",
]

#: The file that makes a folder a model version.
MANIFEST_NAME = "manifest.toml"
#: The `labels` value that means the 1,000 ImageNet-1k class names.
IMAGENET_LABELS = "imagenet"
#: Default normalisation of user models: the usual torchvision ImageNet statistics, on a 0..1 scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: A user model's centre crop when its manifest gives no `crop_fraction`: 224 of 256, the usual ImageNet one.
DEFAULT_CROP_FRACTION = 0.875


class ManifestError(ValueError):
    """A user model's manifest cannot be used; the message names the file (a path, or a repository URL) and the
    problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class Manifest(BaseModel):
    """The fields of a `manifest.toml`, validated strictly (no `"2"` for 2, no unknown keys)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=100)
    version: int = Field(ge=1, le=999_999_999)
    runtime: Literal["onnx", "torchscript"]
    weights: str = Field(min_length=1)
    labels: str = Field(min_length=1)
    input_size: int = Field(gt=0, le=2048)
    mean: tuple[float, float, float] = Field(default=IMAGENET_MEAN, strict=False)
    std: tuple[float, float, float] = Field(default=IMAGENET_STD, strict=False)
    resize: Literal["squash", "center_crop", "letterbox"] = "squash"
    crop_fraction: float | None = Field(default=None, gt=0, le=1, strict=False)
    interpolation: Literal["nearest", "box", "bilinear", "hamming", "bicubic", "lanczos"] = "bilinear"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    description: str = ""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """The hex SHA-256 of the weights file: required in a model repository, checked before the file is loaded."""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.name == LATEST:
            raise ValueError(f"the name {LATEST!r} is reserved")
        if any(s <= 0 for s in self.std):
            raise ValueError("every std value must be > 0")
        if self.crop_fraction is not None and self.resize != "center_crop":
            raise ValueError(f'crop_fraction applies only to resize = "center_crop", not "{self.resize}"')
        return self

    def resolved_crop_fraction(self) -> float:
        """The crop fraction the spec gets: the manifest's, 0.875 for a centre crop that gives none, else 1."""
        if self.crop_fraction is not None:
            return self.crop_fraction
        return DEFAULT_CROP_FRACTION if self.resize == "center_crop" else 1.0


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        msg = item["msg"]
        if item["loc"] and item["loc"][0] in ("mean", "std"):
            where, msg = str(item["loc"][0]), "must be a list of 3 numbers (R, G, B, on a 0..1 scale)"
        elif item["type"] == "extra_forbidden":
            msg = "unknown field (allowed: " + ", ".join(Manifest.model_fields) + ")"
        elif item["type"] == "missing":
            msg = "required field is missing"
        elif item["loc"] == ("sha256",) and item["type"] == "string_pattern_mismatch":
            msg = "must be 64 lower-case hex digits (the weights file's SHA-256)"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(dict.fromkeys(parts))  # without repeats, in order


def labels_sha256(names: Sequence[str]) -> str:
    """The digest of a model's class names (index order, joined with a newline) that a result's receipt carries."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def read_labels_file(path: Path) -> tuple[str, ...]:
    """The class names of a labels file: its non-empty lines, stripped, in order (index = class id)."""
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _existing_file(manifest: Path | str, folder: Path, field: str, value: str) -> Path:
    path = (folder / value).resolve()
    if not path.is_file():
        raise ManifestError(manifest, f"{field}: file {value!r} does not exist (looked for {path})")
    return path


def parse_manifest(text: str, where: Path | str) -> Manifest:
    """The fields of a manifest's text; `where` (its file or URL) is what a `ManifestError` names."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(where, f"invalid TOML: {exc}") from exc
    return check_manifest(data, where)


def check_manifest(data: Mapping[str, object], where: Path | str) -> Manifest:
    """The fields of a manifest's parsed TOML, checked; a `ManifestError` naming `where` otherwise."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(where, _describe(exc)) from exc


def render_manifest(fields: Manifest) -> str:
    """`fields` as the text of a `manifest.toml`, in field order, leaving out those unset (`parse_manifest` reads
    it back as `fields`)."""
    lines = []
    for name, value in fields.model_dump(exclude_none=True).items():
        if isinstance(value, tuple):
            rendered = "[" + ", ".join(_toml_value(item) for item in value) + "]"
        else:
            rendered = _toml_value(value)
        lines.append(f"{name} = {rendered}")
    return "\n".join(lines) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} has no place in a manifest")
    return repr(value)


def manifest_spec(fields: Manifest, *, where: Path | str, folder: Path, weights: Path) -> ModelSpec:
    """The `ModelSpec` of a checked manifest whose labels file lies in `folder` and weights file at `weights`
    (which need not be there yet: a repository's weights are fetched on first use)."""
    if fields.labels == IMAGENET_LABELS:
        labels, num_classes = IMAGENET_LABELS, IMAGENET_NUM_CLASSES
    else:
        labels_path = _existing_file(where, folder, "labels", fields.labels)
        try:
            num_classes = len(read_labels_file(labels_path))
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(where, f"labels: cannot read {fields.labels!r}: {exc}") from exc
        if num_classes == 0:
            raise ManifestError(where, f"labels: {fields.labels!r} has no class names")
        labels = str(labels_path)
    try:
        return ModelSpec(  # which checks the whole transform (`ModelSpec.transform`)
            name=fields.name,
            version=fields.version,
            input_size=fields.input_size,
            mean=fields.mean,
            std=fields.std,
            resize=Resize(fields.resize),
            crop_fraction=fields.resolved_crop_fraction(),
            interpolation=Interpolation(fields.interpolation),
            channel_order=ChannelOrder(fields.channel_order),
            runtime=Runtime(fields.runtime),
            weights=str(weights),
            labels=labels,
            num_classes=num_classes,
            description=fields.description,
            source=folder.resolve(),
            weights_sha256=fields.sha256,
        )
    except ValidationError as exc:
        raise ManifestError(where, _describe(exc)) from exc


def load_manifest(manifest: Path) -> ModelSpec:
    """Read one `manifest.toml` of `VISIONQ_MODEL_DIR` into a `ModelSpec`; raise `ManifestError` if anything is
    wrong with it (its weights file must exist)."""
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(manifest, f"cannot read it: {exc}") from exc
    fields = parse_manifest(text, manifest)
    weights = _existing_file(manifest, manifest.parent, "weights", fields.weights)
    return manifest_spec(fields, where=manifest, folder=manifest.parent, weights=weights)


def load_user_models(model_dir: Path) -> list[ModelSpec]:
    """Every user model in `model_dir`: one per sub-folder holding a `manifest.toml`.

    Sub-folders without a manifest, and hidden ones, are skipped. A missing `model_dir` or any
    broken manifest raises `ValueError` (`ManifestError` for a manifest).
    """
    if not model_dir.is_dir():
        raise ValueError(f"model_dir {model_dir} is not an existing folder")
    folders = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [load_manifest(folder / MANIFEST_NAME) for folder in folders if (folder / MANIFEST_NAME).is_file()]
