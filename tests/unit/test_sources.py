"""ModelSources with a model repository in a folder (tmp_path only): what the catalog lists at start-up and after,
how a request for a model it lacks lists the repository at once, what a broken version does to the rest, and
how weights are fetched and checked."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path

import pytest

from visionq.errors import ModelNotFound
from visionq.inference.catalog import Catalog
from visionq.inference.registry import ModelRegistry
from visionq.inference.repository import WeightsMismatch
from visionq.inference.sources import ModelSources
from visionq.inference.spec import ModelSpec, Runtime
from visionq.settings import Settings

WEIGHTS = b"weights of version one"
LABELS = "red\ngreen\nblue\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_version(repo: Path, name: str, version: int, *, weights: bytes = WEIGHTS, manifest: str | None = None) -> Path:
    """A version folder written straight into the repository, as `visionq models push` would leave it."""
    folder = repo / name / str(version)
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(weights)
    (folder / "labels.txt").write_text(LABELS, encoding="utf-8")
    text = manifest or (
        f'name = "{name}"\nversion = {version}\nruntime = "onnx"\nweights = "model.onnx"\nlabels = "labels.txt"\n'
        f'input_size = 32\nsha256 = "{sha256(weights)}"\n'
    )
    (folder / "manifest.toml").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def sources_for(repo: Path, **overrides: object) -> ModelSources:
    values: dict[str, object] = {"model_repository": str(repo), "model_cache_dir": repo.parent / "cache"}
    return ModelSources(Settings(**(values | overrides)))  # type: ignore[arg-type]


def test_start_up_lists_every_version_with_its_labels_but_not_its_weights(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    put_version(repo, "tiny", 2, weights=b"weights of version two")

    sources = sources_for(repo)
    catalog = sources.catalog

    assert {"tiny@1", "tiny@2"} <= catalog.refs()
    two = catalog.resolve("tiny")
    assert (two.ref, two.num_classes, two.runtime) == ("tiny@2", 3, Runtime.ONNX)
    assert two.weights_sha256 == sha256(b"weights of version two")
    assert catalog.labels(two) == ("red", "green", "blue")
    assert catalog.resolve("tiny@1").ref == "tiny@1"
    assert sources.mirror is not None
    mirrored = Path(two.weights).parent
    assert mirrored.is_relative_to(sources.mirror.root)
    assert sorted(p.name for p in mirrored.iterdir()) == ["labels.txt", "manifest.toml"], "weights on first use"


def test_a_version_published_later_is_listed_and_the_old_ones_stay(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo)
    put_version(repo, "tiny", 2)

    assert sources.refresh()

    assert sources.catalog.resolve("tiny").ref == "tiny@2"
    assert sources.catalog.resolve("tiny@1").ref == "tiny@1"


def test_a_model_the_catalog_lacks_is_listed_at_once(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo)
    put_version(repo, "tiny", 2)
    put_version(repo, "other", 1)

    assert sources.lacks("tiny@2")
    assert sources.lacks("other")
    assert not sources.lacks("tiny@1")
    assert not sources.lacks("not a ref")
    assert sources.resolve("tiny@2").ref == "tiny@2"
    assert sources.resolve("other").ref == "other@1"
    with pytest.raises(ModelNotFound, match="has no version 9"):
        sources.resolve("tiny@9")


def test_latest_chosen_by_an_admin_is_listed_when_the_catalog_lacks_it(repo: Path) -> None:
    sources = sources_for(repo)
    put_version(repo, "tiny", 1)

    assert sources.lacks("latest", latest="tiny@1")
    assert sources.resolve("latest", latest="tiny@1").ref == "tiny@1"


def test_the_event_loop_resolves_a_new_version_too(repo: Path) -> None:
    sources = sources_for(repo)
    put_version(repo, "tiny", 1)

    assert asyncio.run(sources.resolve_async("tiny@1")).ref == "tiny@1"


def test_a_listing_that_began_after_a_miss_answers_it(repo: Path) -> None:
    before = time.monotonic()
    sources = sources_for(repo)  # lists the repository: after `before`
    put_version(repo, "tiny", 1)

    sources.refresh_after(before)  # the start-up listing is new enough for a miss seen before it
    assert not sources.catalog.knows("tiny@1")

    sources.refresh_after(time.monotonic())  # a miss seen now needs a listing of its own
    assert sources.catalog.knows("tiny@1")


@pytest.mark.parametrize(
    ("manifest", "problem"),
    [
        (
            'name = "bad"\nversion = 1\nruntime = "onnx"\nweights = "model.onnx"\nlabels = "labels.txt"\n'
            "input_size = 8\n",
            "sha256: required in a model repository",
        ),
        (
            f'name = "bad"\nversion = 2\nruntime = "onnx"\nweights = "model.onnx"\nlabels = "labels.txt"\n'
            f'input_size = 8\nsha256 = "{"0" * 64}"\n',
            "it names bad@2, but it is in the folder of bad@1",
        ),
        (
            f'name = "bad"\nversion = 1\nruntime = "onnx"\nweights = "../model.onnx"\nlabels = "labels.txt"\n'
            f'input_size = 8\nsha256 = "{"0" * 64}"\n',
            "weights: '../model.onnx' must be a file name in the version's folder",
        ),
        (
            f'name = "bad"\nversion = 1\nruntime = "onnx"\nweights = "model.onnx"\nlabels = "labels.txt"\n'
            f'input_size = 8\nsha256 = "{"0" * 63}"\n',
            "sha256: must be 64 lower-case hex digits",
        ),
        ("name = ", "invalid TOML"),
        (
            f'name = "bad"\nversion = 1\nruntime = "onnx"\nweights = "model.onnx"\nlabels = "nope.txt"\n'
            f'input_size = 8\nsha256 = "{"0" * 64}"\n',
            "reading",  # its labels file is not in the repository
        ),
    ],
)
def test_a_broken_version_is_logged_and_left_out_at_start_up(
    repo: Path, caplog: pytest.LogCaptureFixture, manifest: str, problem: str
) -> None:
    put_version(repo, "tiny", 1)
    put_version(repo, "bad", 1, manifest=manifest)

    sources = sources_for(repo)

    assert "tiny@1" in sources.catalog.refs()
    assert not sources.catalog.knows("bad")
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "bad/1/" in record.getMessage()
    assert problem in record.getMessage()
    assert "bad@1 is left out" in record.getMessage()


def test_a_broken_version_published_while_running_is_left_out_and_logged_once(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo)
    put_version(repo, "tiny", 2, manifest='name = "tiny"\nversion = 2\n')
    put_version(repo, "tiny", 3)

    assert sources.refresh()
    assert sources.refresh()

    assert sources.catalog.resolve("tiny").ref == "tiny@3"
    assert not sources.catalog.knows("tiny@2")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "tiny/2/manifest.toml: runtime: required field is missing" in errors[0]


def test_an_unreachable_repository_leaves_the_catalog_as_it_was(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo)
    repo.rename(repo.with_name("moved"))

    assert not sources.refresh()
    assert sources.catalog.resolve("tiny").ref == "tiny@1"


def test_start_up_without_the_repository_serves_the_versions_mirrored_before(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    put_version(repo, "tiny", 1)
    sources_for(repo)
    (repo / "tiny" / "1" / "manifest.toml").unlink()  # unlisted now; still in the mirror
    unreachable = repo.rename(repo.with_name("moved"))

    restarted = sources_for(repo)

    assert restarted.catalog.resolve("tiny").ref == "tiny@1"
    assert "serving the versions mirrored" in caplog.text
    assert unreachable.exists()


def test_a_version_also_in_the_model_folder_stops_the_start_up(repo: Path, tmp_path: Path) -> None:
    put_version(repo, "tiny", 1)
    model_dir = tmp_path / "models"
    put_version(model_dir, "tiny", 1)  # a folder of VISIONQ_MODEL_DIR: the same files, one level up
    (model_dir / "tiny" / "1").rename(model_dir / "tiny-1")

    with pytest.raises(ValueError, match=r"duplicate model tiny@1: .*tiny-1[/\\]manifest.toml and .*tiny/1/ in the"):
        sources_for(repo, model_dir=model_dir)


def test_a_clash_published_while_running_is_left_out(repo: Path, caplog: pytest.LogCaptureFixture) -> None:
    sources = sources_for(repo)
    put_version(repo, "efficientnet-lite0", 1)
    put_version(repo, "efficientnet-lite0", 2)

    assert sources.refresh()

    assert sources.catalog.resolve("efficientnet-lite0").ref == "efficientnet-lite0@2"
    assert sources.catalog.resolve("efficientnet-lite0@1").source is None, "the built-in stays"
    assert "model repository: efficientnet-lite0@1 is left out: the catalog has it already (built-in)" in caplog.text


def test_the_default_model_may_live_in_the_repository(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo, default_model="tiny")
    put_version(repo, "tiny", 2)

    assert sources.catalog.resolve("latest").ref == "tiny@1"
    assert sources.refresh()
    assert sources.catalog.resolve("latest").ref == "tiny@2", "a name means its highest version"


def test_weights_are_fetched_into_the_mirror_on_first_use(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo)
    spec = sources.catalog.resolve("tiny@1")

    sources.ensure_weights(spec)

    assert Path(spec.weights).read_bytes() == WEIGHTS


def test_weights_that_differ_from_their_manifest_are_refused_and_not_kept(repo: Path) -> None:
    folder = put_version(repo, "tiny", 1)
    (folder / "model.onnx").write_bytes(b"tampered weights")
    sources = sources_for(repo)
    spec = sources.catalog.resolve("tiny@1")

    with pytest.raises(WeightsMismatch) as refused:
        sources.ensure_weights(spec)

    assert sha256(b"tampered weights") in str(refused.value)
    assert sha256(WEIGHTS) in str(refused.value)
    assert "tiny/1/model.onnx" in str(refused.value)
    assert sorted(p.name for p in Path(spec.weights).parent.iterdir()) == ["labels.txt", "manifest.toml"]


def test_a_cached_copy_that_was_changed_is_fetched_again(repo: Path) -> None:
    put_version(repo, "tiny", 1)
    sources = sources_for(repo)
    spec = sources.catalog.resolve("tiny@1")
    sources.ensure_weights(spec)
    Path(spec.weights).write_bytes(b"changed in the cache")

    sources.ensure_weights(spec)

    assert Path(spec.weights).read_bytes() == WEIGHTS


def test_a_registry_never_loads_a_model_folder_file_whose_digest_differs(tmp_path: Path) -> None:
    weights = tmp_path / "model.onnx"
    weights.write_bytes(b"not the weights the manifest names")
    spec = ModelSpec(
        name="tiny", version=1, input_size=8, runtime=Runtime.ONNX, weights=str(weights), weights_sha256="0" * 64
    )
    registry = ModelRegistry(Catalog([spec], default="tiny"))

    with pytest.raises(WeightsMismatch, match="the manifest says 0000"):
        registry.get(spec)
    assert registry.loaded() == []


def test_without_a_repository_nothing_is_listed(tmp_path: Path) -> None:
    sources = ModelSources(Settings(model_cache_dir=tmp_path))

    assert sources.mirror is None
    assert not sources.lacks("tiny@1")
    sources.start()  # nothing to follow: no thread
    sources.stop()
    assert sources.resolve("efficientnet-lite0").ref == "efficientnet-lite0@1"
