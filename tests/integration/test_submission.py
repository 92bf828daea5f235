"""POST /classify end to end on real stacks: several images in one request, `Prefer: wait`, and the image stores
(a directory, S3 on a real S3-protocol server) that keep uploads out of Redis."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import redis

from factories import bad_inputs, cat_variants
from integration.conftest import StackFactory
from integration.s3server import s3_server
from integration.stack import ApiServer, WorkerProcess, submit, wait_for, wait_terminal
from tests_support import CAT_CLASSES
from visionq.jobs import keys
from visionq.settings import Settings

CAT = cat_variants()["jpeg"]
KEY_ID, SECRET, REGION = "visionq-test", "visionq-test-secret", "us-east-1"


@pytest.fixture(scope="module")
def directory_stack(start_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    """One stack for the tests of the directory image store: each stops and starts its worker as it needs."""
    return start_stack("directory-images", image_store="directory", image_sweep_interval=0.5)


def _running(worker: WorkerProcess) -> None:
    if worker.process is None or worker.process.poll() is not None:
        worker.start()


def _post_many(api: httpx.Client, images: list[bytes], **headers: str) -> httpx.Response:
    files = [("file", (f"image-{i}.jpg", image)) for i, image in enumerate(images)]
    return api.post("/classify", files=files, headers=headers)


def test_several_file_parts_make_one_job_each_in_part_order(api: httpx.Client) -> None:
    answer = _post_many(api, [CAT, bad_inputs()["text"], CAT])

    assert answer.status_code == 202
    first, refused, third = answer.json()["jobs"]
    assert (refused["status"], refused["code"]) == (415, "unsupported_media_type")
    assert refused["type"] == "urn:visionq:problem:unsupported_media_type"
    assert first["job_id"] != third["job_id"]
    for accepted in (first, third):
        assert accepted["links"]["status"] == f"/status/{accepted['job_id']}"
        assert wait_terminal(api, accepted["job_id"])["status"] == "completed"
        assert api.get(f"/result/{accepted['job_id']}").json()["predictions"][0]["class_id"] in CAT_CLASSES


def test_a_request_none_of_whose_images_makes_a_job_is_accepted_with_each_part_s_problem(api: httpx.Client) -> None:
    answer = _post_many(api, [bad_inputs()["truncated_jpeg"], bad_inputs()["text"]])

    assert answer.status_code == 202, "several parts: 202 with the jobs list, whatever each part's outcome"
    assert answer.headers["content-type"] == "application/json"
    jobs = answer.json()["jobs"]
    assert [(part["status"], part["code"]) for part in jobs] == [
        (400, "invalid_image"),
        (415, "unsupported_media_type"),
    ]
    assert all(part["type"] == f"urn:visionq:problem:{part['code']}" for part in jobs)


def test_an_idempotency_key_covers_one_image_only(api: httpx.Client) -> None:
    answer = _post_many(api, [CAT, CAT], **{"Idempotency-Key": str(uuid.uuid4())})
    assert (answer.status_code, answer.json()["code"]) == (422, "validation_error")


def test_prefer_wait_on_submit_answers_with_the_result(api: httpx.Client) -> None:
    answer = api.post("/classify", files={"file": ("cat.jpg", CAT)}, headers={"Prefer": "wait=30"})

    assert answer.status_code == 200
    assert answer.headers["Preference-Applied"] == "wait=30"
    body = answer.json()
    assert body["status"] == "completed"
    assert body["predictions"][0]["class_id"] in CAT_CLASSES
    assert answer.headers["Location"] == f"/status/{body['job_id']}"


def test_prefer_wait_on_submit_answers_202_when_the_job_does_not_end_in_time(
    directory_stack: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    _, worker, server = directory_stack
    worker.stop()  # nobody runs the job: it stays queued
    with httpx.Client(base_url=server.url, timeout=30) as api:
        answer = api.post("/classify", files={"file": ("cat.jpg", CAT)}, headers={"Prefer": "wait=1"})
    assert answer.status_code == 202
    assert answer.headers["Preference-Applied"] == "wait=1"
    assert answer.json()["status"] == "pending"


def _images_in(folder: Path) -> set[str]:
    return {path.name for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")}


def test_a_directory_image_store_keeps_uploads_out_of_redis_and_removes_them_once_done(
    directory_stack: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    settings, worker, server = directory_stack
    client = redis.Redis.from_url(settings.state_url)
    worker.stop()
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, CAT, "cat.jpg").json()["job_id"]
        waiting = {job_id} & _images_in(settings.images_path)
        in_redis = client.exists(keys.image(job_id))
        store = client.hget(keys.status(job_id), "image_store")
        worker.start()
        final = wait_terminal(api, job_id)
        result = api.get(f"/result/{job_id}").json()
    client.close()

    assert (waiting, in_redis, store) == ({job_id}, 0, b"directory")
    assert final["status"] == "completed"
    assert result["predictions"][0]["class_id"] in CAT_CLASSES
    # The worker deletes the image just after the job's completion is written, so a client may see one before the other.
    wait_for(lambda: job_id not in _images_in(settings.images_path), 30, "the image to be deleted once its job is done")


def test_a_job_whose_image_is_gone_fails_with_image_missing(
    directory_stack: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    settings, worker, server = directory_stack
    worker.stop()
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, CAT, "cat.jpg").json()["job_id"]
        [path] = list(settings.images_path.rglob(job_id))
        path.unlink()
        worker.start()
        final = wait_terminal(api, job_id)

    assert (final["status"], final["error"]["code"]) == ("failed", "image_missing")


def test_the_image_sweep_removes_images_no_job_holds_and_keeps_a_dead_lettered_one(
    directory_stack: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    settings, worker, _ = directory_stack
    _running(worker)  # its housekeeping sweeps
    client = redis.Redis.from_url(settings.state_url)
    orphan, dead = str(uuid.uuid4()), str(uuid.uuid4())
    client.hset(keys.status(dead), mapping={"job_id": dead, "status": "failed"})
    client.zadd(keys.DEAD_LETTERS, {dead: time.time()})
    old = time.time() - settings.image_ttl - 60
    for job_id in (orphan, dead):
        path = settings.images_path / job_id[:2] / job_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CAT)
        os.utime(path, (old, old))

    wait_for(lambda: orphan not in _images_in(settings.images_path), 30, "the sweep to remove the orphan image")
    kept = _images_in(settings.images_path)
    client.zrem(keys.DEAD_LETTERS, dead)
    client.delete(keys.status(dead))
    client.close()

    assert dead in kept, "a dead-lettered job's image stays for an admin's retry"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as url:
        yield url


def test_an_s3_image_store_carries_the_job_s_image(start_stack: StackFactory, s3_endpoint: str) -> None:
    s3: Any = boto3.session.Session().client(
        "s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
    )
    bucket = f"visionq-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    settings, worker, server = start_stack(
        "s3-images",
        image_store="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_endpoint,
        s3_region=REGION,
        s3_access_key_id=KEY_ID,
        s3_secret_access_key=SECRET,
    )
    worker.stop()
    with httpx.Client(base_url=server.url, timeout=30) as api:
        job_id = submit(api, CAT, "cat.jpg").json()["job_id"]
        waiting = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        worker.start()
        final = wait_terminal(api, job_id)

    assert waiting == [f"{settings.s3_prefix}{job_id}"]
    assert final["status"] == "completed"
    # The worker deletes the image right after storing the result: wait for that, not for the clock.
    wait_for(
        lambda: s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0, 30, "the image deleted once its job is done"
    )
