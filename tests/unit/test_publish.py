"""Publishing to a model repository in a folder: the version chosen, the manifest written (with the weights'
SHA-256, readable back), and the releases refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from visionq.inference.manifest import Manifest, ManifestError, parse_manifest, render_manifest
from visionq.inference.publish import PushRefused, file_release, folder_release, push
from visionq.inference.repository import DirectoryRepository, Version, list_versions
from visionq.inference.sources import ModelSources
from visionq.settings import Settings

WEIGHTS = b"weights of a tiny model"
DIGEST = hashlib.sha256(WEIGHTS).hexdigest()


def release_folder(
    root: Path,
    manifest: str = 'runtime = "onnx"\nweights = "net/model.onnx"\nlabels = "labels.txt"\n'
    'input_size = 32\nresize = "center_crop"\n',
) -> Path:
    folder = root / "release"
    (folder / "net").mkdir(parents=True)
    (folder / "net" / "model.onnx").write_bytes(WEIGHTS)
    (folder / "labels.txt").write_text("red\ngreen\nblue\n", encoding="utf-8")
    (folder / "manifest.toml").write_text(manifest, encoding="utf-8")
    return folder


@pytest.fixture
def repository(tmp_path: Path) -> DirectoryRepository:
    return DirectoryRepository(tmp_path / "repo", create=True)


def test_a_folder_is_published_as_the_next_version_with_its_digest(
    tmp_path: Path, repository: DirectoryRepository
) -> None:
    release = folder_release(release_folder(tmp_path), "tiny")

    first = push(repository, release)
    second = push(repository, release)

    assert (first.version, first.sha256) == (Version("tiny", 1), DIGEST)
    assert second.version == Version("tiny", 2)
    assert set(list_versions(repository)) == {Version("tiny", 1), Version("tiny", 2)}
    manifest = parse_manifest(repository.read("tiny/2/manifest.toml").decode(), "pushed")
    assert (manifest.name, manifest.version, manifest.sha256) == ("tiny", 2, DIGEST)
    assert (manifest.weights, manifest.labels, manifest.resize) == ("model.onnx", "labels.txt", "center_crop")
    assert repository.read("tiny/2/model.onnx") == WEIGHTS, "the weights sit in the version's folder by name"


def test_the_next_version_is_above_the_models_versions_elsewhere(
    tmp_path: Path, repository: DirectoryRepository
) -> None:
    release = folder_release(release_folder(tmp_path), "tiny")

    assert push(repository, release, taken={1, 2}).version == Version("tiny", 3)
    assert push(repository, release, version=10).version == Version("tiny", 10)
    assert push(repository, release).version == Version("tiny", 11), "10 > 3 as integers"


def test_a_version_that_exists_is_refused(tmp_path: Path, repository: DirectoryRepository) -> None:
    release = folder_release(release_folder(tmp_path), "tiny")
    push(repository, release)

    with pytest.raises(PushRefused, match="tiny@1 exists already .* push without --version for tiny@2"):
        push(repository, release, version=1)
    with pytest.raises(PushRefused, match="tiny@4 exists already"):
        push(repository, release, version=4, taken={4})


def test_a_pushed_version_is_served_as_published(tmp_path: Path) -> None:
    push(DirectoryRepository(tmp_path / "repo", create=True), folder_release(release_folder(tmp_path), "tiny"))
    sources = ModelSources(Settings(model_repository=str(tmp_path / "repo"), model_cache_dir=tmp_path / "cache"))

    spec = sources.catalog.resolve("tiny")
    sources.ensure_weights(spec)

    assert (spec.ref, spec.num_classes, spec.weights_sha256) == ("tiny@1", 3, DIGEST)
    assert Path(spec.weights).read_bytes() == WEIGHTS


def test_a_single_onnx_file_needs_its_labels_and_input_size(tmp_path: Path, repository: DirectoryRepository) -> None:
    weights = tmp_path / "tiny.onnx"
    weights.write_bytes(WEIGHTS)

    with pytest.raises(PushRefused, match="needs --labels FILE .* and --input-size N"):
        file_release(weights, "tiny", labels=None, input_size=32)
    with pytest.raises(PushRefused, match="is not an .onnx file"):
        file_release(tmp_path / "tiny.pt", "tiny", labels="imagenet", input_size=224)

    pushed = push(repository, file_release(weights, "tiny", labels="imagenet", input_size=224))
    manifest = parse_manifest(repository.read("tiny/1/manifest.toml").decode(), "pushed")
    assert (manifest.runtime, manifest.weights, manifest.labels, manifest.input_size) == (
        "onnx",
        "tiny.onnx",
        "imagenet",
        224,
    )
    assert pushed.sha256 == manifest.sha256 == DIGEST


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (
            'name = "other"\nruntime = "onnx"\nweights = "net/model.onnx"\nlabels = "labels.txt"\ninput_size = 32\n',
            "names the model 'other', not 'tiny'",
        ),
        ('runtime = "onnx"\nlabels = "labels.txt"\ninput_size = 32\n', "weights: required field is missing"),
        (
            'runtime = "tflite"\nweights = "net/model.onnx"\nlabels = "labels.txt"\ninput_size = 32\n',
            "runtime: Input should be 'onnx' or 'torchscript'",
        ),
        (
            'runtime = "onnx"\nweights = "missing.onnx"\nlabels = "labels.txt"\ninput_size = 32\n',
            "missing.onnx' does not exist",
        ),
        (
            'runtime = "onnx"\nweights = "net/model.onnx"\nlabels = "labels.txt"\ninput_size = "32"\n',
            "input_size: Input should be a valid integer",
        ),
    ],
)
def test_a_release_that_could_not_be_served_is_refused_before_any_upload(
    tmp_path: Path, repository: DirectoryRepository, manifest: str, problem: str
) -> None:
    with pytest.raises((PushRefused, ManifestError), match=problem):
        push(repository, folder_release(release_folder(tmp_path, manifest), "tiny"))
    assert list(repository.root.iterdir()) == [], "nothing was uploaded"


def test_a_manifest_reads_back_as_it_was_written() -> None:
    fields = Manifest(
        name="tiny",
        version=3,
        runtime="onnx",
        weights="model.onnx",
        labels="labels.txt",
        input_size=32,
        mean=(0.5, 0.25, 1e-05),
        description='a "quoted", multi-line\nand\ttabbed description, \u00e9t\u00e9 \U0001f600 and DEL \x7f',
        sha256=DIGEST,
    )

    text = render_manifest(fields)

    assert parse_manifest(text, "rendered") == fields
    assert "crop_fraction" not in text, "fields left unset stay out"
