"""The archive behind the API on each backend it supports, SQLite and PostgreSQL: real API, worker and Redis,
authentication required. What the API keeps in the database is exercised through the API: the job list and its
filters, results served from the archive once Redis has let them go, API keys (made, checked, revoked) and the
audit log. Each test also reads the database itself, so a PostgreSQL run is known to have written there.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from factories import cat_variants
from integration.conftest import StackFactory, archive_database
from integration.stack import submit, wait_for, wait_terminal
from tests_support import CAT_CLASSES
from visionq.archive.tables import ApiKey, ArchivedJob, AuditEntry
from visionq.jobs import keys
from visionq.settings import Settings

AUTH = {"auth": "required", "auth_secret": "archive-backends-suite-secret-0123456789"}
#: Seconds a job may take to reach the archive on the test stacks (archive_interval 0.2 s).
ARCHIVE_TIMEOUT = 15.0
#: Seconds one `visionq keys ...` command may take.
COMMAND_TIMEOUT = 60


@dataclass(frozen=True)
class ArchiveStack:
    backend: str
    """`sqlite` or `postgresql`: the archive's backend."""
    settings: Settings
    url: str
    admin_key: str
    """Made by `visionq keys create`, as the first admin key of a service is."""
    database: Engine
    """The archive database itself, to see what the service wrote there."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """conftest's `database_url` for the whole module: each backend's stack (a worker start) serves all its
    tests. An empty SQLite file, then a private schema of the PostgreSQL at VISIONQ_TEST_DATABASE_URL."""
    with archive_database(request.param, tmp_path_factory.mktemp(f"archive-{request.param}")) as url:
        yield url


@pytest.fixture(scope="module")
def archive_stack(database_url: str, start_stack: StackFactory) -> Iterator[ArchiveStack]:
    backend = make_url(database_url).get_backend_name()
    settings, worker, server = start_stack(f"archive-{backend}", database_url=database_url, worker_pool="solo", **AUTH)
    database = create_engine(database_url)
    try:
        yield ArchiveStack(backend, settings, server.url, make_key(settings, "admin", "archive suite admin"), database)
    finally:
        database.dispose()
        # Stopped here, not at the end of the module: before their schema is dropped, and so that the two
        # backends' stacks never run at once.
        server.stop()
        worker.stop()


def visionq_keys(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`visionq keys ...` as an operator runs it, against the stack's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONQ_")}
    env |= {"VISIONQ_DATABASE_URL": settings.archive_url, "VISIONQ_REDIS_URL": settings.state_url}
    run = subprocess.run(
        [sys.executable, "-m", "visionq", "keys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run


def make_key(settings: Settings, role: str, name: str) -> str:
    """A key made by `visionq keys create`: alone on the last line of its output."""
    return visionq_keys(settings, "create", "--role", role, "--name", name).stdout.strip().splitlines()[-1]


def key_id(key: str) -> str:
    return key.split("_")[1]


def client(stack: ArchiveStack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"X-API-Key": key}, timeout=30)


def new_user(stack: ArchiveStack, name: str) -> str:
    """A user key made through the admin API: each test's jobs are then its own."""
    with client(stack, stack.admin_key) as admin:
        made = admin.post("/admin/keys", json={"role": "user", "name": name})
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def finished_job(api: httpx.Client) -> str:
    accepted = submit(api, cat_variants()["jpeg"], "cat.jpg")
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["job_id"]
    assert wait_terminal(api, job_id)["status"] == "completed"
    return job_id


def listed_ids(api: httpx.Client, **params: Any) -> list[str]:
    page = api.get("/jobs", params={"limit": 100, **params})
    assert page.status_code == 200, page.text
    return [job["job_id"] for job in page.json()["jobs"]]


def wait_archived(api: httpx.Client, job_ids: list[str]) -> None:
    wait_for(lambda: set(job_ids) <= set(listed_ids(api, status="completed")), ARCHIVE_TIMEOUT, "the archived jobs")


def test_the_job_list_pages_and_filters_the_owner_s_archived_jobs(archive_stack: ArchiveStack) -> None:
    alice_key, bob_key = new_user(archive_stack, "alice"), new_user(archive_stack, "bob")
    with client(archive_stack, alice_key) as alice:
        jobs = [finished_job(alice) for _ in range(3)]
        wait_archived(alice, jobs)
        first = alice.get("/jobs", params={"limit": 2}).json()
        second = alice.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        newest = first["jobs"][0]
        created = datetime.fromisoformat(newest["created_at"])
        filtered = {
            "model name": listed_ids(alice, model="efficientnet-lite0"),
            "model version": listed_ids(alice, model="efficientnet-lite0@1"),
            "other model": listed_ids(alice, model="efficientnet-lite2"),
            "unfinished": listed_ids(alice, status=["pending", "failed", "cancelled"]),
            "at or after the newest": listed_ids(alice, created_after=created.isoformat()),
            "before the newest": listed_ids(alice, created_before=created.isoformat()),
        }
    with client(archive_stack, bob_key) as bob:
        bobs = bob.get("/jobs").json()
    with client(archive_stack, archive_stack.admin_key) as admin:
        alices_for_the_admin = listed_ids(admin, owner=f"key:{key_id(alice_key)}")

    newest_first = list(reversed(jobs))
    assert [job["job_id"] for job in first["jobs"] + second["jobs"]] == newest_first
    assert second["next_cursor"] is None
    assert newest["status"] == "completed"
    assert (newest["model_version"], newest["priority"]) == ("efficientnet-lite0@1", "normal")
    assert newest["top_prediction"]["class_id"] in CAT_CLASSES
    assert newest["confidence_score"] == newest["top_prediction"]["confidence"]
    assert newest["image"] == {"width": 451, "height": 300, "format": "JPEG"}
    assert newest["error"] is None
    assert filtered == {
        "model name": newest_first,
        "model version": newest_first,
        "other model": [],
        "unfinished": [],
        "at or after the newest": newest_first[:1],
        "before the newest": newest_first[1:],
    }
    assert bobs == {"jobs": [], "next_cursor": None}, "another user's jobs are not listed"
    assert alices_for_the_admin == newest_first
    with Session(archive_stack.database) as session:
        rows = session.execute(select(ArchivedJob.job_id, ArchivedJob.owner).where(ArchivedJob.job_id.in_(jobs)))
        assert dict(rows.all()) == dict.fromkeys(jobs, f"key:{key_id(alice_key)}")


def test_a_result_is_served_from_the_archive_once_redis_has_let_it_go(archive_stack: ArchiveStack) -> None:
    alice_key, bob_key = new_user(archive_stack, "alice"), new_user(archive_stack, "bob")
    with (
        client(archive_stack, alice_key) as alice,
        client(archive_stack, bob_key) as bob,
        redis.Redis.from_url(archive_stack.settings.state_url) as stack_redis,
    ):
        job_id = finished_job(alice)
        original = alice.get(f"/result/{job_id}").json()
        wait_archived(alice, [job_id])

        stack_redis.delete(keys.status(job_id), keys.result(job_id))  # what the result TTL does

        gone = alice.get(f"/status/{job_id}")
        archived = alice.get(f"/result/{job_id}")
        others = bob.get(f"/result/{job_id}")

    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
    assert archived.status_code == 200
    assert archived.json() == original
    assert original["predictions"][0]["class_id"] in CAT_CLASSES
    assert (others.status_code, others.json()["code"]) == (404, "not_found"), "the archive keeps the job's owner"
    with Session(archive_stack.database) as session:
        row = session.get(ArchivedJob, job_id)
    assert row is not None, f"job {job_id} is not in the {archive_stack.backend} archive"
    assert (row.status, row.predictions) == ("completed", original["predictions"])


def test_keys_from_the_cli_and_the_admin_api_work_until_revoked_and_only_their_hashes_are_kept(
    archive_stack: ArchiveStack,
) -> None:
    settings = archive_stack.settings
    api_key, cli_key = new_user(archive_stack, "made by the API"), make_key(settings, "user", "made by the CLI")
    with client(archive_stack, archive_stack.admin_key) as admin:
        listed = {key["key_id"]: key for key in admin.get("/admin/keys").json()}
    pages_before = []
    for key in (api_key, cli_key):
        with client(archive_stack, key) as user:
            pages_before.append(user.get("/jobs").json())

    with client(archive_stack, archive_stack.admin_key) as admin:
        revoked = admin.delete(f"/admin/keys/{key_id(api_key)}")
    revoked_by_cli = visionq_keys(settings, "revoke", key_id(cli_key))
    refusals = []
    for key in (api_key, cli_key):
        with client(archive_stack, key) as user:
            refusals.append(user.get("/jobs"))

    assert {key_id(api_key), key_id(cli_key)} <= set(listed)
    assert (listed[key_id(cli_key)]["role"], listed[key_id(cli_key)]["name"]) == ("user", "made by the CLI")
    assert all("key" not in key for key in listed.values()), "keys are shown once, never listed"
    assert pages_before == [{"jobs": [], "next_cursor": None}] * 2
    assert revoked.status_code == 200
    assert (revoked.json()["key_id"], revoked.json()["owner"]) == (key_id(api_key), f"key:{key_id(api_key)}")
    assert revoked.json()["revoked_at"]
    assert f"revoked key {key_id(cli_key)}" in revoked_by_cli.stdout
    for refused in refusals:
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
        assert "revoked" in refused.json()["detail"]
    with Session(archive_stack.database) as session:
        rows = session.scalars(select(ApiKey).where(ApiKey.key_id.in_([key_id(api_key), key_id(cli_key)])))
        stored = {row.key_id: (row.key_hash, row.revoked_at is not None) for row in rows}
    assert stored == {key_id(key): (hashlib.sha256(key.encode()).hexdigest(), True) for key in (api_key, cli_key)}, (
        "the hash of each key, and when it was revoked; never the key"
    )


def test_the_audit_log_says_who_made_and_revoked_each_key(archive_stack: ArchiveStack) -> None:
    admin_id = key_id(archive_stack.admin_key)
    with client(archive_stack, archive_stack.admin_key) as admin:
        made = admin.post(
            "/admin/keys", json={"role": "user", "name": "audited"}, headers={"X-Request-ID": "audit-create"}
        ).json()
        admin.delete(f"/admin/keys/{made['key_id']}", headers={"X-Request-ID": "audit-revoke"})
        entries = admin.get("/admin/audit", params={"limit": 500}).json()

    ours = [entry for entry in entries if entry["target"] in {made["key_id"], admin_id}]
    assert [(e["principal"], e["action"], e["target"], e["request_id"]) for e in ours] == [
        (f"key:{admin_id}", "key.revoke", made["key_id"], "audit-revoke"),
        (f"key:{admin_id}", "key.create", made["key_id"], "audit-create"),
        ("cli", "key.create", admin_id, None),
    ], "newest first"
    assert ours[1]["details"] == {"role": "user", "name": "audited"}
    assert ours[2]["details"] == {"role": "admin", "name": "archive suite admin"}
    with Session(archive_stack.database) as session:
        logged = session.scalars(
            select(AuditEntry.action).where(AuditEntry.target == made["key_id"]).order_by(AuditEntry.entry_id)
        )
        assert list(logged) == ["key.create", "key.revoke"]
