"""The model catalog: resolution rules, aliases, and user-model manifests (no torch, no weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionq.errors import ModelNotFound, ValidationFailed
from visionq.imaging.transforms import ChannelOrder, Interpolation, Resize, Transform
from visionq.inference.catalog import BUILTIN_SPECS, Catalog, build_catalog, parse_ref
from visionq.inference.imagenet import imagenet_labels
from visionq.inference.manifest import (
    DEFAULT_CROP_FRACTION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ManifestError,
    load_manifest,
    load_user_models,
)
from visionq.inference.spec import LITE_MEAN, LITE_STD, ModelSpec, Precision, Runtime
from visionq.settings import Settings


def _spec(name: str, version: int, runtime: Runtime = Runtime.ONNX) -> ModelSpec:
    return ModelSpec(name=name, version=version, input_size=32, runtime=runtime, weights=f"/m/{name}-{version}.onnx")


def _catalog(default: str = "alpha") -> Catalog:
    specs = [_spec("alpha", v) for v in (1, 2, 10)] + [_spec("beta", 3), _spec("beta", 1)]
    return Catalog(specs, default=default)


# --- resolution ------------------------------------------------------------------------------------


def test_name_resolves_to_highest_integer_version() -> None:
    catalog = _catalog()
    assert catalog.resolve("alpha").version == 10  # "2" > "10" as strings; 10 > 2 as integers
    assert catalog.resolve("beta").version == 3


def test_latest_is_the_default_models_highest_version() -> None:
    assert _catalog().resolve("latest").ref == "alpha@10"
    assert _catalog(default="beta").resolve("latest").ref == "beta@3"


def test_default_may_pin_a_version() -> None:
    catalog = _catalog(default="alpha@2")
    assert catalog.resolve("latest").ref == "alpha@2"
    assert catalog.resolve("alpha").ref == "alpha@10"
    assert catalog.default.ref == "alpha@2"


@pytest.mark.parametrize(("ref", "expected"), [("alpha@1", "alpha@1"), ("alpha@2", "alpha@2"), ("beta@1", "beta@1")])
def test_name_at_version_resolves_exactly(ref: str, expected: str) -> None:
    assert _catalog().resolve(ref).ref == expected


def test_surrounding_whitespace_is_ignored() -> None:
    assert _catalog().resolve(" alpha@2 ").ref == "alpha@2"
    assert _catalog().resolve(" latest ").ref == "alpha@10"


@pytest.mark.parametrize("ref", ["gamma", "gamma@1", "gamma@0", "latest@1"])
def test_unknown_ref_is_model_not_found(ref: str) -> None:
    with pytest.raises(ModelNotFound) as info:
        _catalog().resolve(ref)
    assert "Available: latest, alpha, beta" in info.value.detail
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    "ref", ["", "alpha@", "alpha@x", "alpha@-1", "Alpha", "@1", "alpha@1@2", "a@b@c", "bad name!", "*"]
)
def test_malformed_ref_is_a_validation_error_naming_the_forms(ref: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        _catalog().resolve(ref)
    assert info.value.code == "validation_error"
    assert "`latest`, a model name" in info.value.detail
    assert "`name@version`" in info.value.detail
    assert "Available: latest, alpha, beta" in info.value.detail


def test_unknown_version_lists_the_versions() -> None:
    with pytest.raises(ModelNotFound, match="has no version 3; its versions are 1, 2, 10"):
        _catalog().resolve("alpha@3")


def test_long_unknown_ref_is_truncated_in_the_detail() -> None:
    with pytest.raises(ModelNotFound) as info:
        _catalog().resolve("x" * 5000)
    assert len(info.value.detail) < 400


# --- listing and aliases ---------------------------------------------------------------------------


def test_specs_are_sorted_by_name_then_integer_version() -> None:
    assert [s.ref for s in _catalog().specs()] == ["alpha@1", "alpha@2", "alpha@10", "beta@1", "beta@3"]
    assert _catalog().names() == ["alpha", "beta"]
    assert len(_catalog()) == 5


def test_aliases() -> None:
    catalog = _catalog()
    aliases = {spec.ref: catalog.aliases(spec) for spec in catalog.specs()}
    assert aliases == {
        "alpha@1": [],
        "alpha@2": [],
        "alpha@10": ["latest", "alpha"],
        "beta@1": [],
        "beta@3": ["beta"],
    }


def test_aliases_with_a_pinned_default() -> None:
    catalog = _catalog(default="alpha@2")
    assert catalog.aliases(catalog.resolve("alpha@2")) == ["latest"]
    assert catalog.aliases(catalog.resolve("alpha@10")) == ["alpha"]


def test_builtin_catalog() -> None:
    catalog = Catalog(BUILTIN_SPECS, default="efficientnet-lite0")
    assert [(s.ref, s.input_size) for s in catalog.specs()] == [
        ("efficientnet-lite0@1", 224),
        ("efficientnet-lite0-int8@1", 224),
        ("efficientnet-lite1@1", 240),
        ("efficientnet-lite1-int8@1", 240),
        ("efficientnet-lite2@1", 260),
        ("efficientnet-lite2-int8@1", 260),
    ]
    lite0 = catalog.resolve("latest")
    int8 = catalog.resolve("efficientnet-lite0-int8")
    assert (lite0.precision, int8.precision) == (Precision.FP32, Precision.INT8)
    assert int8.weights == lite0.weights, "the int8 build is made from the same weights"
    assert lite0.runtime is Runtime.TORCH
    assert lite0.weights == "efficientnet-lite0"
    assert (lite0.mean, lite0.std, lite0.num_classes) == (LITE_MEAN, LITE_STD, 1000)
    assert catalog.aliases(lite0) == ["latest", "efficientnet-lite0"]
    assert catalog.aliases(catalog.resolve("efficientnet-lite2")) == ["efficientnet-lite2"]
    assert catalog.labels(lite0) is imagenet_labels()


@pytest.mark.parametrize(
    ("arch", "size"), [("efficientnet-lite0", 224), ("efficientnet-lite1", 240), ("efficientnet-lite2", 260)]
)
@pytest.mark.parametrize("suffix", ["", "-int8"])
def test_each_builtin_squashes_the_whole_image_with_its_training_normalisation(
    arch: str, size: int, suffix: str
) -> None:
    # The whole image, bicubic (docs/models.md says why not the reference evaluation's centre crop); MEAN_RGB and
    # STDDEV_RGB of the Lite models (tensorflow/tpu models/official/efficientnet): [127.0] and [128.0] on 0..255.
    spec = Catalog(BUILTIN_SPECS, default="efficientnet-lite0").resolve(f"{arch}{suffix}@1")

    assert spec.transform == Transform(
        input_size=size,
        resize=Resize.SQUASH,
        interpolation=Interpolation.BICUBIC,
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
        channel_order=ChannelOrder.RGB,
    )


def test_the_canonical_preprocessing_of_lite0_is_pinned() -> None:
    # A receipt's `preprocessing` string: a change here changes every receipt, so it must be on purpose.
    spec = Catalog(BUILTIN_SPECS, default="efficientnet-lite0").resolve("efficientnet-lite0@1")

    assert spec.transform.canonical() == (
        "decode=exif_upright,rgb,alpha_on_white;resize=squash;size=224x224;interpolation=bicubic;"
        "scale=1/255;mean=0.4980392156862745,0.4980392156862745,0.4980392156862745;"
        "std=0.5019607843137255,0.5019607843137255,0.5019607843137255;channels=RGB;layout=NCHW,float32"
    )


def test_imagenet_labels() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert (labels[0], labels[281], labels[282], labels[285], labels[999]) == (
        "tench",
        "tabby",
        "tiger cat",
        "Egyptian cat",
        "toilet tissue",
    )
    assert all(label and "_" not in label and label == label.strip() for label in labels)


# --- construction errors ---------------------------------------------------------------------------


def test_unknown_default_is_refused() -> None:
    with pytest.raises(ValueError, match="default_model 'gamma' is not in the model catalog"):
        _catalog(default="gamma")
    with pytest.raises(ValueError, match="default_model 'alpha@7'"):
        _catalog(default="alpha@7")


def test_default_latest_is_refused() -> None:
    with pytest.raises(ValueError, match="must name a model"):
        _catalog(default="latest")


def test_duplicate_ref_is_refused() -> None:
    with pytest.raises(ValueError, match="duplicate model alpha@1"):
        Catalog([_spec("alpha", 1), _spec("alpha", 1, Runtime.TORCHSCRIPT)], default="alpha")


def test_reserved_name_is_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        Catalog([_spec("latest", 1)], default="latest@1")


def test_empty_catalog_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Catalog([], default="alpha")


# --- updates ---------------------------------------------------------------------------------------


def test_an_update_replaces_the_models_and_moves_the_highest_version() -> None:
    catalog = _catalog()
    assert not catalog.knows("alpha@11")

    catalog.update([*catalog.specs(), _spec("alpha", 11), _spec("gamma", 1)])

    assert catalog.knows("alpha@11")
    assert catalog.knows("gamma")
    assert catalog.resolve("alpha").ref == "alpha@11"
    assert catalog.resolve("latest").ref == "alpha@11", "the default names a model: its highest version"
    assert catalog.resolve("alpha@1").ref == "alpha@1"


def test_an_update_that_is_refused_keeps_the_models() -> None:
    catalog = _catalog()
    before = catalog.specs()

    with pytest.raises(ValueError, match="duplicate model beta@1"):
        catalog.update([*before, _spec("beta", 1)])
    with pytest.raises(ValueError, match="default_model 'alpha' is not in the model catalog"):
        catalog.update([_spec("beta", 1)])

    assert catalog.specs() == before


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("alpha", ("alpha", None)),
        ("alpha@10", ("alpha", 10)),
        (" alpha@2 ", ("alpha", 2)),
        ("latest", None),
        ("Alpha", None),
        ("alpha@", None),
        ("alpha@x", None),
    ],
)
def test_refs_are_parsed_as_name_and_integer_version(ref: str, parsed: tuple[str, int | None] | None) -> None:
    assert parse_ref(ref) == parsed


def test_knows_only_what_resolves_to_a_name_or_version() -> None:
    catalog = _catalog()
    assert catalog.knows("alpha")
    assert catalog.knows("alpha@10")
    assert not catalog.knows("alpha@3")
    assert not catalog.knows("latest"), "an alias, not a model"
    assert not catalog.knows("delta")


# --- manifests -------------------------------------------------------------------------------------

GOOD_MANIFEST = """\
name = "tiny"
version = 2
runtime = "onnx"
weights = "model.onnx"
labels = "labels.txt"
input_size = 32
description = "three colours"
"""


def _model_folder(root: Path, folder: str, manifest: str, *, labels: str = "red\ngreen\n\nblue\n") -> Path:
    path = root / folder
    path.mkdir(parents=True)
    (path / "manifest.toml").write_text(manifest, encoding="utf-8")
    (path / "model.onnx").write_bytes(b"not really onnx; the catalog only checks that it exists")
    (path / "labels.txt").write_text(labels, encoding="utf-8")
    return path


def test_manifest_is_parsed(tmp_path: Path) -> None:
    folder = _model_folder(tmp_path, "tiny-2", GOOD_MANIFEST)
    spec = load_manifest(folder / "manifest.toml")
    assert spec.ref == "tiny@2"
    assert spec.runtime is Runtime.ONNX
    assert spec.input_size == 32
    assert spec.weights == str((folder / "model.onnx").resolve())
    assert spec.labels == str((folder / "labels.txt").resolve())
    assert spec.num_classes == 3  # the blank line does not count
    assert (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert spec.description == "three colours"
    assert spec.source == folder.resolve()


def test_manifest_mean_std_and_imagenet_labels(tmp_path: Path) -> None:
    manifest = GOOD_MANIFEST.replace('labels = "labels.txt"', 'labels = "imagenet"').replace(
        "input_size = 32", "input_size = 224\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 1]"
    )
    folder = _model_folder(tmp_path, "tiny", manifest)
    spec = load_manifest(folder / "manifest.toml")
    assert (spec.mean, spec.std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 1.0))
    assert (spec.labels, spec.num_classes) == ("imagenet", 1000)


def test_a_manifest_without_a_transform_keeps_the_default_squash(tmp_path: Path) -> None:
    spec = load_manifest(_model_folder(tmp_path, "tiny", GOOD_MANIFEST) / "manifest.toml")

    assert spec.transform == Transform(input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert (spec.resize, spec.interpolation, spec.channel_order) == (
        Resize.SQUASH,
        Interpolation.BILINEAR,
        ChannelOrder.RGB,
    )


def test_a_manifest_declares_its_whole_transform(tmp_path: Path) -> None:
    manifest = GOOD_MANIFEST.replace(
        "input_size = 32",
        'input_size = 32\nresize = "center_crop"\ncrop_fraction = 0.9\ninterpolation = "lanczos"\n'
        'channel_order = "BGR"',
    )
    spec = load_manifest(_model_folder(tmp_path, "tiny", manifest) / "manifest.toml")

    assert spec.transform == Transform(
        input_size=32,
        resize=Resize.CENTER_CROP,
        crop_fraction=0.9,
        interpolation=Interpolation.LANCZOS,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        channel_order=ChannelOrder.BGR,
    )


def test_a_centre_crop_without_a_fraction_keeps_the_usual_224_of_256(tmp_path: Path) -> None:
    manifest = GOOD_MANIFEST.replace("input_size = 32", 'input_size = 32\nresize = "center_crop"')
    spec = load_manifest(_model_folder(tmp_path, "tiny", manifest) / "manifest.toml")

    assert spec.crop_fraction == DEFAULT_CROP_FRACTION == 224 / 256


def test_a_letterbox_manifest_is_taken(tmp_path: Path) -> None:
    manifest = GOOD_MANIFEST.replace("input_size = 32", 'input_size = 32\nresize = "letterbox"')
    spec = load_manifest(_model_folder(tmp_path, "tiny", manifest) / "manifest.toml")

    assert (spec.resize, spec.crop_fraction) == (Resize.LETTERBOX, 1.0)


def test_user_models_and_labels_through_build_catalog(tmp_path: Path) -> None:
    _model_folder(tmp_path, "a", GOOD_MANIFEST)
    _model_folder(tmp_path, "b", GOOD_MANIFEST.replace("version = 2", "version = 10"))
    _model_folder(tmp_path, "c", GOOD_MANIFEST.replace('runtime = "onnx"', 'runtime = "torchscript"'), labels="x\n")
    (tmp_path / "c" / "manifest.toml").write_text(
        GOOD_MANIFEST.replace("version = 2", "version = 3").replace('runtime = "onnx"', 'runtime = "torchscript"')
    )
    (tmp_path / "not-a-model").mkdir()  # no manifest: skipped
    (tmp_path / "README.txt").write_text("files at the top level are ignored")

    assert [s.ref for s in load_user_models(tmp_path)] == ["tiny@2", "tiny@10", "tiny@3"]
    catalog = build_catalog(Settings(model_dir=tmp_path, default_model="tiny"))
    assert [s.ref for s in catalog.specs()] == [
        "efficientnet-lite0@1",
        "efficientnet-lite0-int8@1",
        "efficientnet-lite1@1",
        "efficientnet-lite1-int8@1",
        "efficientnet-lite2@1",
        "efficientnet-lite2-int8@1",
        "tiny@2",
        "tiny@3",
        "tiny@10",
    ]
    assert catalog.resolve("latest").ref == "tiny@10"
    assert catalog.resolve("tiny@3").runtime is Runtime.TORCHSCRIPT
    assert catalog.labels(catalog.resolve("tiny")) == ("red", "green", "blue")
    assert catalog.labels(catalog.resolve("tiny@3")) == ("x",)
    assert catalog.aliases(catalog.resolve("efficientnet-lite0")) == ["efficientnet-lite0"]


def test_build_catalog_without_model_dir_is_the_builtins() -> None:
    catalog = build_catalog(Settings(model_dir=None, default_model="efficientnet-lite1"))
    assert catalog.specs() == sorted(BUILTIN_SPECS, key=lambda s: s.name)
    assert catalog.resolve("latest").ref == "efficientnet-lite1@1"


def test_user_model_may_add_a_version_of_a_builtin_name(tmp_path: Path) -> None:
    _model_folder(tmp_path, "lite0-onnx", GOOD_MANIFEST.replace('"tiny"', '"efficientnet-lite0"'))
    catalog = build_catalog(Settings(model_dir=tmp_path, default_model="efficientnet-lite0"))
    assert catalog.resolve("latest").ref == "efficientnet-lite0@2"


def test_duplicate_user_model_is_refused(tmp_path: Path) -> None:
    _model_folder(tmp_path, "a", GOOD_MANIFEST)
    _model_folder(tmp_path, "b", GOOD_MANIFEST)
    with pytest.raises(ValueError, match=r"duplicate model tiny@2: .*a[/\\]manifest.toml and .*b[/\\]manifest.toml"):
        build_catalog(Settings(model_dir=tmp_path, default_model="tiny"))


def test_duplicate_of_a_builtin_is_refused(tmp_path: Path) -> None:
    manifest = GOOD_MANIFEST.replace('"tiny"', '"efficientnet-lite0"').replace("version = 2", "version = 1")
    _model_folder(tmp_path, "a", manifest)
    with pytest.raises(ValueError, match="duplicate model efficientnet-lite0@1: built-in and"):
        build_catalog(Settings(model_dir=tmp_path))


def test_missing_model_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not an existing folder"):
        load_user_models(tmp_path / "absent")


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("version = 2", 'version = "2"', "version: Input should be a valid integer"),
        ("version = 2", "version = 0", "version: Input should be greater than or equal to 1"),
        ("version = 2", "version = true", "version: Input should be a valid integer"),
        ('name = "tiny"\n', "", "name: required field is missing"),
        ('name = "tiny"', 'name = "Tiny Model"', "name: String should match pattern"),
        ('name = "tiny"', 'name = "latest"', "reserved"),
        ('runtime = "onnx"', 'runtime = "torch"', "runtime: Input should be 'onnx' or 'torchscript'"),
        ("input_size = 32", "input_size = 0", "input_size: Input should be greater than 0"),
        ("input_size = 32", "input_size = 32\nmean = [0.5, 0.5]", "mean: must be a list of 3 numbers"),
        ("input_size = 32", "input_size = 32\nstd = [0.5, 0, 0.5]", "every std value must be > 0"),
        ("input_size = 32", 'input_size = 32\nstd = ["a", 1, 1]', "std: must be a list of 3 numbers"),
        ("input_size = 32", "input_size = 32\nlabel = 'x'", "label: unknown field"),
        ('weights = "model.onnx"', 'weights = "missing.onnx"', "weights: file 'missing.onnx' does not exist"),
        ('labels = "labels.txt"', 'labels = "nope.txt"', "labels: file 'nope.txt' does not exist"),
        ("version = 2", "version = 2 =", "invalid TOML"),
        ("input_size = 32", 'input_size = 32\nresize = "crop"', "resize: Input should be 'squash', 'center_crop' or"),
        ("input_size = 32", "input_size = 32\ncrop_fraction = 0.9", 'crop_fraction applies only to resize = "center_'),
        (
            "input_size = 32",
            'input_size = 32\nresize = "center_crop"\ncrop_fraction = 0',
            "crop_fraction: Input should",
        ),
        ("input_size = 32", 'input_size = 32\nresize = "center_crop"\ncrop_fraction = 1.5', "crop_fraction: Input sho"),
        ("input_size = 32", 'input_size = 32\ninterpolation = "cubic"', "interpolation: Input should be 'nearest'"),
        ("input_size = 32", 'input_size = 32\nchannel_order = "rgb"', "channel_order: Input should be 'RGB' or 'BGR'"),
    ],
)
def test_broken_manifest_names_file_and_problem(tmp_path: Path, old: str, new: str, problem: str) -> None:
    assert old in GOOD_MANIFEST
    folder = _model_folder(tmp_path, "broken", GOOD_MANIFEST.replace(old, new))
    with pytest.raises(ManifestError) as info:
        load_user_models(tmp_path)
    message = str(info.value)
    assert message.startswith(str(folder / "manifest.toml"))
    assert problem in message
    assert isinstance(info.value, ValueError)


def test_empty_labels_file_is_refused(tmp_path: Path) -> None:
    _model_folder(tmp_path, "a", GOOD_MANIFEST, labels="\n  \n")
    with pytest.raises(ManifestError, match="labels: 'labels.txt' has no class names"):
        load_user_models(tmp_path)


def test_broken_manifest_stops_build_catalog(tmp_path: Path) -> None:
    _model_folder(tmp_path, "good", GOOD_MANIFEST)
    _model_folder(tmp_path, "bad", GOOD_MANIFEST.replace("input_size = 32", ""))
    with pytest.raises(ManifestError, match="input_size: required field is missing"):
        build_catalog(Settings(model_dir=tmp_path, default_model="tiny"))
