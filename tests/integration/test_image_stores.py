"""S3Images against a real S3-protocol server (moto's, as a process on loopback): round trips, sweeping,
prefixes, and the failures callers see as `BrokerUnavailable`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest

from integration.s3server import s3_server
from ports import free_port
from visionq.errors import BrokerUnavailable
from visionq.images import S3Images, create_image_store
from visionq.images.store import RETRY_AFTER, SWEEP_BATCH
from visionq.settings import Settings

REGION = "us-east-1"
#: moto takes any credentials; giving some keeps the tests off boto3's default chain (and its network lookups).
KEY_ID, SECRET = "visionq-test", "visionq-test-secret"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as url:
        yield url


@pytest.fixture
def s3(endpoint: str) -> Any:
    """A plain boto3 client on the server, to set up and inspect buckets behind the store's back."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"visionq-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def make_store(endpoint: str, bucket: str, prefix: str = "images/") -> S3Images:
    return S3Images(
        bucket, prefix=prefix, endpoint_url=endpoint, region=REGION, access_key_id=KEY_ID, secret_access_key=SECRET
    )


def new_id() -> str:
    return str(uuid.uuid4())


def keys_in(s3: Any, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {item["Key"] for page in pages for item in page.get("Contents", [])}


def test_an_image_put_is_got_back_whole_from_its_key_under_the_prefix(endpoint: str, bucket: str, s3: Any) -> None:
    store, job_id, image = make_store(endpoint, bucket), new_id(), bytes(range(256)) * 4096

    store.put(job_id, image)

    assert store.get(job_id) == image
    assert keys_in(s3, bucket) == {f"images/{job_id}"}


def test_a_missing_image_is_none(endpoint: str, bucket: str) -> None:
    assert make_store(endpoint, bucket).get(new_id()) is None


def test_a_deleted_image_is_gone_and_deleting_a_missing_one_is_no_error(endpoint: str, bucket: str, s3: Any) -> None:
    store, job_id = make_store(endpoint, bucket), new_id()
    store.put(job_id, b"image")

    store.delete(job_id)
    store.delete(job_id)

    assert store.get(job_id) is None
    assert keys_in(s3, bucket) == set()


def test_a_second_put_replaces_the_image(endpoint: str, bucket: str) -> None:
    store, job_id = make_store(endpoint, bucket), new_id()
    store.put(job_id, b"first")
    store.put(job_id, b"second")
    assert store.get(job_id) == b"second"


def test_one_store_serves_many_threads_at_once(endpoint: str, bucket: str) -> None:
    store = make_store(endpoint, bucket)
    images = {new_id(): f"image {n}".encode() * 1000 for n in range(32)}

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(store.put, images, images.values()))
        got = dict(zip(images, pool.map(store.get, images), strict=True))

    assert got == images


def test_sweep_removes_images_stored_before_the_cutoff_and_keeps_later_ones(
    endpoint: str, bucket: str, s3: Any
) -> None:
    store, ids = make_store(endpoint, bucket), [new_id() for _ in range(3)]
    for job_id in ids:
        store.put(job_id, b"image")
    s3.put_object(Bucket=bucket, Key="elsewhere/not-an-image", Body=b"kept")

    # LastModified cannot be set: a cutoff an hour back finds none old enough, one a minute ahead finds all.
    assert store.sweep(time.time() - 3600) == 0
    assert all(store.get(job_id) == b"image" for job_id in ids)

    assert store.sweep(time.time() + 60) == len(ids)
    assert keys_in(s3, bucket) == {"elsewhere/not-an-image"}


def test_sweep_deletes_more_images_than_one_request_may_name(endpoint: str, bucket: str, s3: Any) -> None:
    store, count = make_store(endpoint, bucket), SWEEP_BATCH + 5
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda n: s3.put_object(Bucket=bucket, Key=f"images/old-{n}", Body=b"x"), range(count)))

    assert store.sweep(time.time() + 60) == count
    assert keys_in(s3, bucket) == set()


def test_sweep_keeps_the_images_that_keep_names(endpoint: str, bucket: str) -> None:
    store, held, ended = make_store(endpoint, bucket), new_id(), new_id()
    store.put(held, b"held")
    store.put(ended, b"ended")

    assert store.sweep(time.time() + 60, keep=lambda ids: {held} & set(ids)) == 1

    assert store.get(held) == b"held"
    assert store.get(ended) is None


def test_stores_with_different_prefixes_do_not_see_each_others_images(endpoint: str, bucket: str) -> None:
    ours, theirs, job_id = make_store(endpoint, bucket, "ours/"), make_store(endpoint, bucket, "theirs/"), new_id()
    ours.put(job_id, b"ours")

    assert theirs.get(job_id) is None
    theirs.delete(job_id)
    assert theirs.sweep(time.time() + 60) == 0

    assert ours.get(job_id) == b"ours"


def test_the_configured_store_reaches_the_bucket_the_settings_name(
    endpoint: str, bucket: str, s3: Any, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        image_store="s3",
        s3_bucket=bucket,
        s3_prefix="uploads/",
        s3_endpoint_url=endpoint,
        s3_region=REGION,
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SECRET,
    )
    store, job_id = create_image_store(settings), new_id()
    assert store is not None

    store.put(job_id, b"image")

    assert s3.get_object(Bucket=bucket, Key=f"uploads/{job_id}")["Body"].read() == b"image"


def test_a_missing_bucket_is_reported_as_unavailable(endpoint: str) -> None:
    store = make_store(endpoint, f"visionq-missing-{uuid.uuid4().hex[:8]}")

    with pytest.raises(BrokerUnavailable, match="image store is unreachable") as caught:
        store.put(new_id(), b"image")
    assert caught.value.retry_after == RETRY_AFTER


@pytest.mark.parametrize("operation", ["put", "get", "delete", "sweep"])
def test_an_unreachable_endpoint_is_reported_as_unavailable(operation: str) -> None:
    store = make_store(f"http://127.0.0.1:{free_port()}", "visionq-images")  # nothing listens there
    calls: dict[str, Callable[[], object]] = {
        "put": lambda: store.put(new_id(), b"image"),
        "get": lambda: store.get(new_id()),
        "delete": lambda: store.delete(new_id()),
        "sweep": lambda: store.sweep(time.time()),
    }
    with pytest.raises(BrokerUnavailable, match="image store is unreachable") as caught:
        calls[operation]()

    assert caught.value.status == 503
    assert caught.value.retry_after == RETRY_AFTER
