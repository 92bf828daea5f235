"""GET /jobs and the archive behind the API, on the shared stack (its archive is SQLite in its data dir)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from factories import cat_variants
from integration.stack import ApiServer, WorkerProcess, submit, wait_for, wait_terminal
from tests_support import CAT_CLASSES
from visionq.jobs import keys
from visionq.settings import Settings

Stack = tuple[Settings, WorkerProcess, ApiServer]
#: Seconds an accepted or finished job may take to reach the archive on the test stack (archive_interval 0.2 s).
ARCHIVE_TIMEOUT = 15.0


def finished_job(api: httpx.Client, **fields: Any) -> str:
    accepted = submit(api, cat_variants()["jpeg"], "cat.jpg", **fields)
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    return job_id


def listed(api: httpx.Client, job_id: str, **params: Any) -> dict[str, Any] | None:
    page = api.get("/jobs", params={"limit": 100, **params})
    assert page.status_code == 200, page.text
    return next((job for job in page.json()["jobs"] if job["job_id"] == job_id), None)


def test_a_finished_job_is_listed_with_its_top_prediction(api: httpx.Client) -> None:
    job_id = finished_job(api, top_k=3)

    job = wait_for(
        lambda: (entry := listed(api, job_id, status="completed")) and entry, ARCHIVE_TIMEOUT, "the archived job"
    )

    assert job["model_version"] == "efficientnet-lite0@1"
    assert job["priority"] == "normal"
    assert job["top_prediction"]["class_id"] in CAT_CLASSES
    assert job["confidence_score"] == job["top_prediction"]["confidence"]
    assert job["image"] == {"width": 451, "height": 300, "format": "JPEG"}
    assert job["completed_at"] >= job["created_at"]
    assert job["error"] is None
    assert job["links"]["result"] == f"/result/{job_id}"


def test_the_result_outlives_redis_through_the_archive(api: httpx.Client, stack_redis: redis.Redis) -> None:
    job_id = finished_job(api)
    original = api.get(f"/result/{job_id}").json()
    wait_for(lambda: listed(api, job_id, status="completed"), ARCHIVE_TIMEOUT, "the archived job")

    stack_redis.delete(keys.status(job_id), keys.result(job_id))  # what the result TTL does

    gone = api.get(f"/status/{job_id}")
    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
    archived = api.get(f"/result/{job_id}")
    assert archived.status_code == 200
    assert archived.json() == original


def test_an_unknown_job_is_still_not_found(api: httpx.Client) -> None:
    answer = api.get("/result/00000000-0000-4000-8000-000000000000")
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


def test_filters_select_by_model_status_and_time(api: httpx.Client) -> None:
    job_id = finished_job(api)
    wait_for(lambda: listed(api, job_id, status="completed"), ARCHIVE_TIMEOUT, "the archived job")
    created = datetime.fromisoformat(api.get(f"/status/{job_id}").json()["created_at"])

    assert listed(api, job_id, model="efficientnet-lite0") is not None
    assert listed(api, job_id, model="efficientnet-lite0@1") is not None
    assert listed(api, job_id, model="efficientnet-lite2") is None
    assert listed(api, job_id, status=["failed", "cancelled"]) is None
    assert listed(api, job_id, created_after=(created - timedelta(seconds=1)).isoformat()) is not None
    assert listed(api, job_id, created_after=(created + timedelta(seconds=1)).isoformat()) is None
    assert listed(api, job_id, created_before=created.isoformat()) is None


def test_pages_follow_the_cursor(api: httpx.Client) -> None:
    jobs = [finished_job(api) for _ in range(3)]
    wait_for(lambda: all(listed(api, job_id) for job_id in jobs), ARCHIVE_TIMEOUT, "the archived jobs")

    first = api.get("/jobs", params={"limit": 2}).json()
    second = api.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()

    assert len(first["jobs"]) == 2
    assert first["next_cursor"]
    ids = [job["job_id"] for job in first["jobs"] + second["jobs"]]
    assert len(set(ids)) == len(ids) == 2 + len(second["jobs"])
    assert [job["job_id"] for job in first["jobs"]] == list(reversed(jobs))[:2], "newest first"


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": 0}, id="limit-0"),
        pytest.param({"limit": 101}, id="limit-101"),
        pytest.param({"status": "done"}, id="unknown-status"),
        pytest.param({"cursor": "not-a-cursor"}, id="bad-cursor"),
        pytest.param({"created_after": "2026-11-27T10:00:00"}, id="time-without-zone"),
        pytest.param({"created_before": "yesterday"}, id="not-a-time"),
    ],
)
def test_bad_queries_are_validation_problems(api: httpx.Client, params: dict[str, Any]) -> None:
    answer = api.get("/jobs", params=params)

    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "validation_error"


def test_readiness_checks_the_database_and_metrics_show_the_archive_backlog(api: httpx.Client) -> None:
    ready = api.get("/health/ready").json()
    assert ready["checks"]["database"] == "ok"
    assert "visionq_archive_backlog " in api.get("/metrics").text


def test_an_unreachable_database_degrades_readiness_and_jobs_still_complete(start_stack: Any) -> None:
    # A PostgreSQL URL nobody listens on; the migration at start is off, or the processes would refuse to start.
    _, _, api_server = start_stack(
        "no-database",
        database_url="postgresql+psycopg://visionq@127.0.0.1:9/none",
        database_migrate=False,
        worker_pool="solo",
    )
    with httpx.Client(base_url=api_server.url, timeout=30) as client:
        ready = client.get("/health/ready").json()
        assert ready["checks"]["database"] == "down"
        assert ready["status"] == "degraded"
        finished_job(client)
