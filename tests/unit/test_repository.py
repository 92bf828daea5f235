"""The model repository's pure parts: its layout, version numbers, the digest check, and the directory backend
(a folder under tmp_path): publishing writes the manifest last, fetching keeps only a file with the right digest."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from visionq.inference.repository import (
    DirectoryRepository,
    RepositoryError,
    Version,
    WeightsMismatch,
    check_digest,
    fetch_verified,
    list_versions,
    next_version,
    open_repository,
    parse_manifest_key,
    publish,
)
from visionq.settings import Settings

WEIGHTS = b"pretend these are weights"
DIGEST = hashlib.sha256(WEIGHTS).hexdigest()


@pytest.mark.parametrize(
    ("key", "version"),
    [
        ("flowers/1/manifest.toml", Version("flowers", 1)),
        ("flowers/10/manifest.toml", Version("flowers", 10)),
        ("efficientnet-lite0/2/manifest.toml", Version("efficientnet-lite0", 2)),
        ("flowers/01/manifest.toml", None),  # one folder per number: 01 would be a second 1
        ("flowers/0/manifest.toml", None),
        ("flowers/v2/manifest.toml", None),
        ("Flowers/1/manifest.toml", None),
        ("flowers/1/model.onnx", None),
        ("flowers/manifest.toml", None),
        ("a/flowers/1/manifest.toml", None),
        ("flowers/1/2/manifest.toml", None),
    ],
)
def test_only_name_slash_version_slash_manifest_is_a_version(key: str, version: Version | None) -> None:
    assert parse_manifest_key(key) == version


def test_the_next_version_follows_the_highest_as_an_integer() -> None:
    assert next_version([]) == 1
    assert next_version([1, 2, 9, 10]) == 11  # "9" > "10" as strings
    assert next_version({3}) == 4


def test_a_version_key_takes_only_file_names() -> None:
    assert Version("flowers", 2).key("model.onnx") == "flowers/2/model.onnx"
    assert Version("flowers", 2).ref == "flowers@2"
    for bad in ("../model.onnx", "sub/model.onnx", ".hidden", ""):
        with pytest.raises(ValueError, match="not a file name"):
            Version("flowers", 2).key(bad)


def test_a_digest_that_differs_is_refused_naming_both() -> None:
    check_digest(DIGEST, DIGEST.upper(), "here")  # hex digits in either case
    other = "0" * 64
    with pytest.raises(WeightsMismatch) as refused:
        check_digest(other, DIGEST, "s3://models/flowers/2/model.onnx")
    message = str(refused.value)
    assert message.startswith("s3://models/flowers/2/model.onnx: ")
    assert other in message
    assert DIGEST in message
    assert (refused.value.actual, refused.value.expected) == (other, DIGEST)


def test_a_published_version_is_listed_once_its_manifest_is_there(tmp_path: Path) -> None:
    repository = DirectoryRepository(tmp_path / "repo")
    source = tmp_path / "model.onnx"
    source.write_bytes(WEIGHTS)
    (tmp_path / "repo").mkdir()
    repository.upload("flowers/1/model.onnx", source)  # a push cut short before its manifest
    assert list_versions(repository) == {}

    publish(repository, Version("flowers", 2), {"model.onnx": source}, b'name = "flowers"\n')

    assert set(list_versions(repository)) == {Version("flowers", 2)}
    assert repository.read("flowers/2/manifest.toml") == b'name = "flowers"\n'
    assert (tmp_path / "repo" / "flowers" / "2" / "model.onnx").read_bytes() == WEIGHTS
    assert not list((tmp_path / "repo").rglob("*.part")), "no temporary file is left behind"


def test_a_manifest_out_of_place_is_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    repository = DirectoryRepository(tmp_path)
    repository.write("flowers/v2/manifest.toml", b"")
    repository.write("flowers/3/manifest.toml", b"")

    assert list(list_versions(repository)) == [Version("flowers", 3)]
    assert "flowers/v2/manifest.toml is not at <name>/<version>/manifest.toml" in caplog.text


def test_a_manifest_changed_in_place_changes_its_tag(tmp_path: Path) -> None:
    repository = DirectoryRepository(tmp_path)
    repository.write("flowers/1/manifest.toml", b"one")
    before = repository.list_manifests()
    repository.write("flowers/1/manifest.toml", b"longer")

    assert repository.list_manifests()["flowers/1/manifest.toml"] != before["flowers/1/manifest.toml"]


def test_a_missing_folder_or_file_is_a_repository_error(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="is not an existing folder"):
        DirectoryRepository(tmp_path / "absent").list_manifests()
    assert DirectoryRepository(tmp_path / "new", create=True).list_manifests() == {}, "a publisher makes it"
    with pytest.raises(RepositoryError, match="reading .*flowers/1/labels.txt failed"):
        DirectoryRepository(tmp_path).read("flowers/1/labels.txt")
    with pytest.raises(ValueError, match="not a key"):
        DirectoryRepository(tmp_path).read("flowers/../../etc/passwd")


def test_fetched_weights_are_kept_only_with_the_digest_of_their_manifest(tmp_path: Path) -> None:
    repository = DirectoryRepository(tmp_path / "repo")
    repository.write("flowers/1/model.onnx", WEIGHTS)
    target = tmp_path / "cache" / "flowers" / "1" / "model.onnx"

    with pytest.raises(WeightsMismatch, match=f"is {DIGEST}, but the manifest says {'a' * 64}"):
        fetch_verified(repository, "flowers/1/model.onnx", target, "a" * 64)
    assert list(target.parent.iterdir()) == [], "neither the file nor its temporary copy is kept"

    fetch_verified(repository, "flowers/1/model.onnx", target, DIGEST)
    assert target.read_bytes() == WEIGHTS


def test_a_download_goes_into_the_file_given(tmp_path: Path) -> None:
    repository = DirectoryRepository(tmp_path)
    repository.write("flowers/1/model.onnx", WEIGHTS)
    sink = io.BytesIO()

    repository.download("flowers/1/model.onnx", sink)

    assert sink.getvalue() == WEIGHTS


def test_the_setting_chooses_the_backend(tmp_path: Path) -> None:
    assert open_repository(Settings()) is None
    folder = open_repository(Settings(model_repository=str(tmp_path)))
    assert isinstance(folder, DirectoryRepository)
    assert folder.root == tmp_path
    s3 = open_repository(
        Settings(
            model_repository="s3://models-bucket/team/models/",
            s3_endpoint_url="http://127.0.0.1:9",
            s3_region="us-east-1",
            s3_access_key_id="key",
            s3_secret_access_key="secret",
        )
    )
    assert s3 is not None
    assert s3.location == "s3://models-bucket/team/models"
