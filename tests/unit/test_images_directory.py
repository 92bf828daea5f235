"""DirectoryImages on a real folder: round trips, atomic writes, sweeping, failures; and which store the settings
build (`create_image_store`)."""

from __future__ import annotations

import os
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import SettingsFactory
from visionq.errors import BrokerUnavailable
from visionq.images import DirectoryImages, ImageStore, S3Images, create_image_store
from visionq.images.directory import TEMP_SUFFIX
from visionq.images.store import RETRY_AFTER

HOUR = 3600.0


def new_id() -> str:
    return str(uuid.uuid4())


def files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


def age(path: Path, seconds: float) -> None:
    """Make `path` look written `seconds` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def images(tmp_path: Path) -> DirectoryImages:
    return DirectoryImages(tmp_path / "images")


def test_an_image_put_is_got_back_whole(images: DirectoryImages) -> None:
    job_id, image = new_id(), os.urandom(300_000)
    images.put(job_id, image)
    assert images.get(job_id) == image


def test_images_are_files_fanned_out_by_the_ids_first_two_characters(images: DirectoryImages) -> None:
    job_id = new_id()
    images.put(job_id, b"image")

    assert files_under(images.root) == [images.root / job_id[:2] / job_id]
    assert stat.S_IMODE(images.root.stat().st_mode) == 0o700


def test_nothing_is_created_before_the_first_image(images: DirectoryImages) -> None:
    assert images.get(new_id()) is None
    images.delete(new_id())
    assert images.sweep(time.time()) == 0
    assert not images.root.exists()


def test_a_missing_image_is_none(images: DirectoryImages) -> None:
    images.put(new_id(), b"another image")
    assert images.get(new_id()) is None


def test_a_deleted_image_is_gone_and_deleting_a_missing_one_is_no_error(images: DirectoryImages) -> None:
    job_id = new_id()
    images.put(job_id, b"image")

    images.delete(job_id)
    images.delete(job_id)

    assert images.get(job_id) is None
    assert files_under(images.root) == []


def test_an_overwrite_replaces_the_image_and_leaves_no_temporary_file(images: DirectoryImages) -> None:
    job_id = new_id()
    images.put(job_id, b"first")
    images.put(job_id, b"second")

    assert images.get(job_id) == b"second"
    assert files_under(images.root) == [images.root / job_id[:2] / job_id]


def test_a_reader_sees_one_whole_image_or_the_other_while_it_is_rewritten(images: DirectoryImages) -> None:
    job_id, small, large = new_id(), b"s" * 100_000, b"L" * 2_000_000
    images.put(job_id, small)
    torn: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            data = images.get(job_id)
            if data not in (small, large):
                torn.append(0 if data is None else len(data))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(100):
            images.put(job_id, large if n % 2 == 0 else small)
    finally:
        done.set()
        reader.join()

    assert torn == []


def test_a_write_that_fails_leaves_neither_image_nor_temporary_file(images: DirectoryImages) -> None:
    job_id = new_id()
    with pytest.raises(TypeError):
        images.put(job_id, "not bytes")  # type: ignore[arg-type]

    assert images.get(job_id) is None
    assert files_under(images.root) == []


def test_sweep_removes_only_images_older_than_the_cutoff(images: DirectoryImages) -> None:
    old, recent = new_id(), new_id()
    images.put(old, b"old")
    images.put(recent, b"recent")
    age(images.root / old[:2] / old, 2 * HOUR)
    age(images.root / recent[:2] / recent, 10)

    assert images.sweep(time.time() - HOUR) == 1

    assert images.get(old) is None
    assert images.get(recent) == b"recent"


def test_sweep_removes_what_interrupted_writes_left_behind_but_not_a_write_in_progress(
    images: DirectoryImages,
) -> None:
    job_id = new_id()
    images.put(job_id, b"image")
    folder = images.root / job_id[:2]
    crashed, writing = folder / f".{new_id()}.abc{TEMP_SUFFIX}", folder / f".{new_id()}.def{TEMP_SUFFIX}"
    crashed.write_bytes(b"half an im")
    writing.write_bytes(b"half an im")
    age(crashed, 2 * HOUR)

    assert images.sweep(time.time() - HOUR) == 1

    assert not crashed.exists()
    assert writing.exists()
    assert images.get(job_id) == b"image"


def test_sweep_keeps_the_images_that_keep_names_and_offers_it_no_temporary_file(images: DirectoryImages) -> None:
    held, ended = new_id(), new_id()
    images.put(held, b"held")
    images.put(ended, b"ended")
    leftover = images.root / held[:2] / f".{held}.abc{TEMP_SUFFIX}"
    leftover.write_bytes(b"half")
    offered: list[str] = []

    def keep(ids: list[str]) -> set[str]:
        offered.extend(ids)
        return {held} & set(ids)

    assert images.sweep(time.time() + 60, keep=keep) == 2

    assert sorted(offered) == sorted([held, ended])
    assert images.get(held) == b"held"
    assert images.get(ended) is None
    assert not leftover.exists()


def test_an_unusable_folder_is_reported_as_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "a file, not a folder"
    blocker.write_bytes(b"")
    images = DirectoryImages(blocker / "images")

    with pytest.raises(BrokerUnavailable, match="image store is unreachable") as caught:
        images.put(new_id(), b"image")
    assert caught.value.retry_after == RETRY_AFTER

    with pytest.raises(BrokerUnavailable):
        images.get(new_id())


@pytest.mark.parametrize("job_id", ["", "../escape", "a/b", ".hidden", "x\x00y"])
def test_an_id_that_is_not_a_plain_name_is_refused(images: DirectoryImages, job_id: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        images.put(job_id, b"image")
    assert not images.root.exists()


# --- create_image_store ------------------------------------------------------------------------------------------


def test_redis_keeps_images_in_the_jobs_own_keys(make_settings: SettingsFactory) -> None:
    assert make_settings().image_store == "redis"
    assert create_image_store(make_settings()) is None


def test_directory_defaults_to_images_in_the_data_dir(make_settings: SettingsFactory, tmp_path: Path) -> None:
    store = create_image_store(make_settings(image_store="directory"))

    assert isinstance(store, DirectoryImages)
    assert store.name == "directory"
    assert store.root == tmp_path / "data" / "images"


def test_directory_uses_the_image_dir_when_set(make_settings: SettingsFactory, tmp_path: Path) -> None:
    store = create_image_store(make_settings(image_store="directory", image_dir=tmp_path / "shared"))

    assert isinstance(store, DirectoryImages)
    assert store.root == tmp_path / "shared"


def test_s3_is_built_from_its_settings_without_touching_the_network(make_settings: SettingsFactory) -> None:
    settings = make_settings(
        image_store="s3",
        s3_bucket="uploads",
        s3_prefix="visionq/",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_region="eu-west-1",
        s3_access_key_id="key",
        s3_secret_access_key="secret",
    )

    store: ImageStore | None = create_image_store(settings)

    assert isinstance(store, S3Images)
    assert (store.name, store.bucket, store.prefix) == ("s3", "uploads", "visionq/")


def test_s3_without_a_bucket_is_refused(make_settings: SettingsFactory) -> None:
    with pytest.raises(ValidationError, match="VISIONQ_S3_BUCKET"):
        make_settings(image_store="s3")


def test_s3_with_half_a_credential_is_refused(make_settings: SettingsFactory) -> None:
    with pytest.raises(ValidationError, match="VISIONQ_S3_SECRET_ACCESS_KEY"):
        make_settings(image_store="s3", s3_bucket="uploads", s3_access_key_id="key")
