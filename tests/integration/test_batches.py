"""Batches on a real stack: an archive of 200 images with a bad member completes, every item's result streamed as
JSON Lines and CSV, a page at a time; archives that would hurt the service are refused whole; a cancelled batch
leaves no job running."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from factories import chelsea, encode, zip_of
from integration.conftest import StackFactory
from integration.stack import ApiServer, WorkerProcess, wait_for
from visionq.archive.repository import Archive
from visionq.jobs import keys
from visionq.settings import Settings

SMALL_CAT = encode(chelsea().resize((96, 96)), "JPEG")
ITEMS = 200


@pytest.fixture(scope="module")
def batch_stack(start_stack: StackFactory) -> tuple[Settings, WorkerProcess, ApiServer]:
    return start_stack("batches", max_batch_items=250, max_batch_bytes=4 * 1024 * 1024, max_upload_bytes=1024 * 1024)


@pytest.fixture
def api(batch_stack: tuple[Settings, WorkerProcess, ApiServer]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=batch_stack[2].url, timeout=60) as client:
        yield client


def _follow(server: ApiServer, batch_id: str) -> tuple[list[dict[str, Any]], int | None]:
    """The batch's WebSocket messages until it closes, and its close code."""
    messages = []
    with connect(f"ws://127.0.0.1:{server.port}/ws/batches/{batch_id}", open_timeout=10) as socket:
        while True:
            try:
                messages.append(json.loads(socket.recv(timeout=120)))
            except ConnectionClosed:
                return messages, socket.close_code


def test_an_archive_batch_completes_and_streams_every_items_result(
    batch_stack: tuple[Settings, WorkerProcess, ApiServer], api: httpx.Client
) -> None:
    members = {f"photos/{n:03}.jpg": SMALL_CAT for n in range(ITEMS)}
    members["photos/notes.txt"] = b"not an image"
    answer = api.post("/batches", files={"file": ("photos.zip", zip_of(members), "application/zip")})
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    messages, closed_with = _follow(batch_stack[2], batch["batch_id"])
    final = api.get(f"/batches/{batch['batch_id']}").json()
    lines = [json.loads(line) for line in api.get(batch["links"]["results"]).text.splitlines()]
    rows = list(csv.DictReader(io.StringIO(api.get(batch["links"]["results"], headers={"Accept": "text/csv"}).text)))
    page = api.get(batch["links"]["results"], params={"limit": 50})
    next_page = api.get(page.links["next"]["url"])

    assert (batch["status"], batch["total"]) == ("pending", ITEMS + 1)
    assert batch["links"]["websocket"] == f"/ws/batches/{batch['batch_id']}"
    assert (messages[-1]["status"], closed_with) == ("completed", 1000)
    progress = [message["progress"] for message in messages]
    assert progress == sorted(progress), "progress never goes down"
    assert final["counts"] == {"pending": 0, "processing": 0, "completed": ITEMS, "failed": 1, "cancelled": 0,
                               "expired": 0}  # fmt: skip
    assert final["progress"] == 100
    assert [line["index"] for line in lines] == list(range(ITEMS + 1))
    assert lines[0]["name"] == "photos/000.jpg"
    assert {line["predictions"][0]["class_id"] for line in lines[:ITEMS]} == {285}, "every cat is a cat"
    bad = lines[ITEMS]
    assert (bad["name"], bad["status"], bad["error"]["code"]) == (
        "photos/notes.txt",
        "failed",
        "unsupported_media_type",
    )
    assert len(rows) == ITEMS + 1
    assert rows[0]["class_id"] == "285"
    assert rows[ITEMS]["error_code"] == "unsupported_media_type"
    assert len(page.text.splitlines()) == 50
    assert json.loads(next_page.text.splitlines()[0])["index"] == 50
    job = api.get(f"/status/{lines[0]['job_id']}").json()
    assert job["priority"] == "low", "a batch's default priority"


@pytest.mark.parametrize(
    ("archive", "status"),
    [
        (zip_of({"fine.jpg": SMALL_CAT, "../escape.jpg": SMALL_CAT}), 422),  # path traversal
        (zip_of({"bomb.jpg": b"\0" * (16 * 1024 * 1024)}), 413),  # 16 MiB of zeros in a few KiB
        (zip_of({f"{n}.jpg": SMALL_CAT for n in range(251)}), 413),  # more members than a batch takes
    ],
    ids=["traversal", "bomb", "too-many"],
)
def test_an_archive_that_would_hurt_the_service_is_refused_whole(
    batch_stack: tuple[Settings, WorkerProcess, ApiServer], api: httpx.Client, archive: bytes, status: int
) -> None:
    client = redis.Redis.from_url(batch_stack[0].state_url)
    jobs_before = len(list(client.scan_iter(keys.status("*"))))
    answer = api.post("/batches", files={"file": ("a.zip", archive, "application/zip")})
    jobs_after = len(list(client.scan_iter(keys.status("*"))))
    client.close()

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert jobs_after == jobs_before, "nothing of it was submitted"
    assert api.get("/health").status_code == 200


def test_a_cancelled_batch_leaves_no_job_running(
    batch_stack: tuple[Settings, WorkerProcess, ApiServer], api: httpx.Client
) -> None:
    files = [("file", (f"{n}.jpg", SMALL_CAT, "image/jpeg")) for n in range(60)]
    batch = api.post("/batches", files=files, data={"priority": "high"}).json()
    cancelled = api.delete(f"/batches/{batch['batch_id']}")  # while the worker is on its first items
    messages, closed_with = _follow(batch_stack[2], batch["batch_id"])
    lines = [json.loads(line) for line in api.get(batch["links"]["results"]).text.splitlines()]
    client = redis.Redis.from_url(batch_stack[0].state_url)
    running = client.scard(keys.PROCESSING_JOBS)
    client.close()
    final = messages[-1]

    assert cancelled.status_code == 200
    assert (final["status"], closed_with) == ("cancelled", 1000)
    assert final["counts"]["cancelled"] > 0
    assert final["counts"]["completed"] + final["counts"]["cancelled"] == 60
    assert final["counts"]["processing"] == final["counts"]["pending"] == 0
    assert {line["status"] for line in lines} <= {"completed", "cancelled"}
    assert sum(line["status"] == "cancelled" for line in lines) == final["counts"]["cancelled"]
    assert running == 0, "no job of it is running"


def test_an_ended_batch_is_archived_and_answered_from_the_archive_once_redis_lets_it_go(
    batch_stack: tuple[Settings, WorkerProcess, ApiServer], api: httpx.Client
) -> None:
    files = [("file", (f"{n}.jpg", SMALL_CAT, "image/jpeg")) for n in range(3)] + [("file", ("x.txt", b"text"))]
    batch = api.post("/batches", files=files).json()
    batch_id = batch["batch_id"]
    _follow(batch_stack[2], batch_id)
    live_body = api.get(f"/batches/{batch_id}").json()
    live_lines = [json.loads(line) for line in api.get(batch["links"]["results"]).text.splitlines()]
    archive = Archive(batch_stack[0].archive_url)
    try:
        wait_for(lambda: archive.find_batch(batch_id), 30, "the batch's archive row")
        job_ids = [line["job_id"] for line in live_lines if line["job_id"]]

        def items_archived() -> bool:
            rows = archive.find_many(job_ids).values()
            return len(rows) == 3 and all(row.status == "completed" for row in rows)

        wait_for(items_archived, 30, "the items' rows")
    finally:
        archive.close()
    client = redis.Redis.from_url(batch_stack[0].state_url)
    client.delete(f"batch:{{{batch_id}}}", f"batch:{{{batch_id}}}:items", *(keys.status(j) for j in job_ids),
                  *(keys.result(j) for j in job_ids))  # fmt: skip
    client.close()
    archived_body = api.get(f"/batches/{batch_id}").json()
    archived_lines = [json.loads(line) for line in api.get(batch["links"]["results"]).text.splitlines()]

    assert live_body["status"] == "completed"
    assert archived_body == live_body
    assert archived_lines == live_lines, "the same lines, from the archive"
