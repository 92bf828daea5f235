"""The archive on a real SQLite file and a real PostgreSQL: migrations, rows, queries, and the archiver
draining a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from integration.records import create, new_record, result_for
from visionq.archive import schema
from visionq.archive.archiver import Archiver
from visionq.archive.repository import Archive, BadCursor, JobQuery
from visionq.archive.rows import outcome_from_row, row_from_job
from visionq.archive.tables import Base
from visionq.embedded import EmbeddedRedis
from visionq.jobs import keys, scripts
from visionq.jobs.tracker import JobTracker
from visionq.wire.jobs import FailureBody, Receipt, ResultBody
from visionq.wire.states import JobStatus, Stage

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.fixture
def archive(database_url: str) -> Iterator[Archive]:
    archive = Archive(database_url)
    schema.upgrade(archive.engine)
    yield archive
    archive.close()


@pytest.fixture(scope="module")
def own_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server of this module's own: the shared one's outbox is drained by the shared stack's worker."""
    with EmbeddedRedis(tmp_path_factory.mktemp("archive-redis"), persistent=False) as server:
        yield server.url


@pytest.fixture
def sync_redis(own_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis_url)
    client.flushdb()
    yield client
    client.close()


def row(job_id: str, **values: Any) -> dict[str, Any]:
    record = new_record().model_copy(update={"job_id": job_id})
    return row_from_job(record, None) | values


def test_migrations_upgrade_from_empty_and_downgrade_back(database_url: str) -> None:
    archive = Archive(database_url)
    assert schema.current_revision(archive.engine) is None

    schema.upgrade(archive.engine)
    schema.upgrade(archive.engine)  # at head already: nothing to do

    tables = inspect(archive.engine)
    assert {"jobs", "alembic_version"} <= set(tables.get_table_names())
    assert {index["name"] for index in tables.get_indexes("jobs")} == {
        "ix_jobs_owner_created_at_job_id",
        "ix_jobs_status",
        "ix_jobs_model_version",
    }
    assert schema.current_revision(archive.engine) == schema.head_revision()

    schema.downgrade(archive.engine, "base")
    assert "jobs" not in inspect(archive.engine).get_table_names()
    assert schema.current_revision(archive.engine) is None
    archive.close()


def test_the_migrations_build_exactly_the_tables_the_code_maps(archive: Archive) -> None:
    with archive.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_a_saved_row_reads_back_and_saving_again_updates_it(archive: Archive) -> None:
    record = new_record()
    archive.save([row_from_job(record, None)])
    assert archive.find(record.job_id).status == "pending"  # type: ignore[union-attr]

    done = record.model_copy(update={"status": JobStatus.COMPLETED, "attempts": 1})
    result = result_for(done)
    archive.save([row_from_job(done, result)])
    archive.save([row_from_job(done, result)])

    found = archive.find(record.job_id)
    assert found is not None
    assert found.status == "completed"
    assert found.attempts == 1
    assert found.created_at.tzinfo is not None
    assert found.created_at.utcoffset() == timedelta(0)
    assert outcome_from_row(found) == result
    assert archive.find("no-such-job") is None


def test_a_result_s_receipt_is_kept_and_read_back(archive: Archive) -> None:
    done = new_record().model_copy(update={"status": JobStatus.COMPLETED, "attempts": 1})
    result = result_for(done)
    receipt = Receipt(
        image_sha256="ab" * 32,
        weights_sha256="cd" * 32,
        runtime="onnxruntime",
        runtime_version="1.32.0",
        precision="fp32",
        preprocessing="decode=exif_upright,rgb,alpha_on_white;resize=squash;size=224x224",
        preprocessing_sha256="ef" * 32,
        labels_sha256="01" * 32,
    )
    with_receipt = result.model_copy(update={"metadata": result.metadata.model_copy(update={"receipt": receipt})})
    archive.save([row_from_job(done, with_receipt)])

    found = archive.find(done.job_id)
    assert found is not None
    assert found.receipt == receipt.model_dump()
    assert outcome_from_row(found) == with_receipt


def test_an_older_snapshot_written_late_does_not_replace_a_newer_row(archive: Archive) -> None:
    # Two workers' archivers read the job before and after it finished, and write in the other order.
    queued = new_record()
    later = (datetime.fromisoformat(queued.updated_at) + timedelta(milliseconds=80)).isoformat()
    done = queued.model_copy(update={"status": JobStatus.COMPLETED, "attempts": 1, "updated_at": later})
    archive.save([row_from_job(done, result_for(done))])
    archive.save([row_from_job(queued, None)])

    found = archive.find(queued.job_id)
    assert found is not None
    assert (found.status, found.attempts) == ("completed", 1)


def test_a_failed_row_gives_the_failure_body(archive: Archive) -> None:
    failed = new_record().model_copy(
        update={"status": JobStatus.FAILED, "error_code": "invalid_image", "error_message": "truncated"}
    )
    archive.save([row_from_job(failed, None)])
    found = archive.find(failed.job_id)
    assert found is not None
    assert outcome_from_row(found) == failed.failure_body()


def test_listing_is_per_owner_newest_first_in_pages_that_cover_every_job_once(archive: Archive) -> None:
    # Pairs of jobs share a creation time, so the pages must break ties by id.
    archive.save([row(f"job-{n:02}", owner="alice", created_at=T0 + timedelta(seconds=n // 2)) for n in range(25)])
    archive.save([row(f"other-{n}", owner="bob", created_at=T0) for n in range(3)])

    seen: list[str] = []
    cursor = None
    while True:
        page = archive.list_jobs(JobQuery(owner="alice", limit=10, cursor=cursor))
        seen += [job.job_id for job in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [f"job-{n:02}" for n in reversed(range(25))]
    assert len(archive.list_jobs(JobQuery(owner="bob")).jobs) == 3
    assert len(archive.list_jobs(JobQuery(owner=None, limit=100)).jobs) == 28


def test_listing_filters_by_status_model_and_time(archive: Archive) -> None:
    archive.save(
        [
            row("a", owner="o", status="completed", model_version="efficientnet-lite0@1", created_at=T0),
            row("b", owner="o", status="failed", model_version="efficientnet-lite0@2", created_at=T0 + timedelta(1)),
            row("c", owner="o", status="completed", model_version="efficientnet-lite2@1", created_at=T0 + timedelta(2)),
            row("d", owner="o", status="cancelled", model_version="efficient_net@1", created_at=T0 + timedelta(3)),
        ]
    )

    def ids(**filters: Any) -> list[str]:
        return [job.job_id for job in archive.list_jobs(JobQuery(owner="o", **filters)).jobs]

    assert ids(statuses=["completed"]) == ["c", "a"]
    assert ids(statuses=["failed", "cancelled"]) == ["d", "b"]
    assert ids(model="efficientnet-lite0") == ["b", "a"]
    assert ids(model="efficientnet-lite0@2") == ["b"]
    assert ids(model="efficient_net") == ["d"], "`_` in a name is a character, not a LIKE wildcard"
    assert ids(created_after=T0 + timedelta(1), created_before=T0 + timedelta(3)) == ["c", "b"]


def test_a_cursor_that_was_not_handed_out_is_refused(archive: Archive) -> None:
    for cursor in ("not-base64!", "bm90IGpzb24", "WzEsMl0"):
        with pytest.raises(BadCursor):
            archive.list_jobs(JobQuery(owner="o", cursor=cursor))


def test_the_archiver_writes_accepted_then_finished_jobs_and_empties_the_outbox(
    own_redis_url: str, sync_redis: redis.Redis, archive: Archive
) -> None:
    archiver = Archiver(sync_redis, archive)
    tracker = JobTracker(sync_redis, worker_id="test:1", result_ttl=60, stale_after=20)
    done, cancelled = new_record(), new_record()
    create(own_redis_url, done)
    create(own_redis_url, cancelled)

    assert archiver.drain() == 2
    assert archive.find(done.job_id).status == "pending"  # type: ignore[union-attr]
    assert sync_redis.zcard(keys.ARCHIVE_OUTBOX) == 0

    tracker.take(done.job_id)
    result = result_for(done)
    tracker.complete(result)
    tracker.fail(cancelled.job_id, "internal_error", "gave up")
    assert sync_redis.zcard(keys.ARCHIVE_OUTBOX) == 2, "each terminal change marks the job again"

    assert archiver.drain() == 2
    assert sync_redis.zcard(keys.ARCHIVE_OUTBOX) == 0
    archived = archive.find(done.job_id)
    assert archived is not None
    assert archived.attempts == 1
    assert archived.worker_id == "test:1"
    assert archived.started_at is not None
    assert outcome_from_row(archived) == result
    failed = archive.find(cancelled.job_id)
    assert failed is not None
    assert isinstance(outcome_from_row(failed), FailureBody)
    assert failed.error_code == "internal_error"
    assert archiver.drain() == 0


def test_a_job_that_changes_while_it_is_archived_stays_on_the_outbox(
    own_redis_url: str, sync_redis: redis.Redis, archive: Archive
) -> None:
    record = new_record()
    create(own_redis_url, record)
    archived = sync_redis.register_script(scripts.ARCHIVED)
    # The archiver wrote the job as pending; meanwhile it completed.
    JobTracker(sync_redis, worker_id="test:1", result_ttl=60, stale_after=20).complete(result_for(record))

    removed = archived(keys=[keys.ARCHIVE_OUTBOX, keys.status(record.job_id)], args=[record.job_id, "pending"])

    assert removed == 0
    assert sync_redis.zscore(keys.ARCHIVE_OUTBOX, record.job_id) is not None
    Archiver(sync_redis, archive).drain()
    found = archive.find(record.job_id)
    assert found is not None
    assert isinstance(outcome_from_row(found), ResultBody)
    assert sync_redis.zcard(keys.ARCHIVE_OUTBOX) == 0


def test_a_change_waits_until_it_has_settled_and_a_job_that_ends_meanwhile_is_written_once(
    own_redis_url: str, sync_redis: redis.Redis, archive: Archive
) -> None:
    record = new_record()
    create(own_redis_url, record)
    archiver = Archiver(sync_redis, archive, settle=3600)

    young = archiver.drain()
    JobTracker(sync_redis, worker_id="test:1", result_ttl=60, stale_after=20).complete(result_for(record))
    still = archiver.drain()
    flushed = archiver.drain(settled=False)  # as a worker does on its way out

    assert (young, still, flushed) == (0, 0, 1)
    found = archive.find(record.job_id)
    assert found is not None
    assert isinstance(outcome_from_row(found), ResultBody), "never written as pending"


def test_a_completion_stamped_before_the_jobs_last_change_still_replaces_it_in_the_archive(
    own_redis_url: str, sync_redis: redis.Redis, archive: Archive
) -> None:
    """A result stamped before the job's last change (by a worker whose clock is behind the one that wrote it, or, as
    it was, stamped as it was made while the stages sent after it were stamped later), and that change archived
    meanwhile: the completion still reaches the archive, by the stamp Redis wrote it with."""
    record = new_record()
    create(own_redis_url, record)
    tracker = JobTracker(sync_redis, worker_id="test:1", result_ttl=60, stale_after=20)
    archiver = Archiver(sync_redis, archive)
    tracker.take(record.job_id)
    result = result_for(record).model_copy(update={"completed_at": "2026-11-27T09:00:00.000Z"})  # made earlier
    assert tracker.advance(record.job_id, Stage.POSTPROCESSING)  # the last change, stamped now
    stage_stamp = sync_redis.hget(keys.status(record.job_id), "updated_at")
    assert archiver.drain() == 1, "archived as processing"

    completed_at = tracker.complete(result)
    assert completed_at is not None
    archiver.completed_here(record.completed(completed_at), result)  # as the worker that ran it does
    archiver.drain()

    assert completed_at.encode() == stage_stamp == sync_redis.hget(keys.status(record.job_id), "updated_at")
    found = archive.find(record.job_id)
    assert found is not None
    assert (found.status, outcome_from_row(found)) == ("completed", result)
    assert sync_redis.zcard(keys.ARCHIVE_OUTBOX) == 0


def test_a_job_gone_from_redis_leaves_the_outbox_without_a_row(
    own_redis_url: str, sync_redis: redis.Redis, archive: Archive
) -> None:
    sync_redis.zadd(keys.ARCHIVE_OUTBOX, {"expired-job": 1.0})

    assert Archiver(sync_redis, archive).drain() == 0

    assert sync_redis.zcard(keys.ARCHIVE_OUTBOX) == 0
    assert archive.find("expired-job") is None


def test_a_result_completed_here_is_archived_without_reading_it_back(
    own_redis_url: str, sync_redis: redis.Redis, archive: Archive
) -> None:
    mine, other = new_record(), new_record()
    for record in (mine, other):
        create(own_redis_url, record)
    archiver = Archiver(sync_redis, archive)
    tracker = JobTracker(sync_redis, worker_id="test:1", result_ttl=60, stale_after=20)
    results = {record.job_id: result_for(record) for record in (mine, other)}
    for result in results.values():
        tracker.complete(result)
    mine_completed = mine.completed(results[mine.job_id].completed_at)
    archiver.completed_here(mine_completed, results[mine.job_id])  # as the worker that ran it does
    sync_redis.delete(keys.result(mine.job_id))  # so that only the handed-over result can be archived
    sync_redis.hset(keys.status(mine.job_id), "request_id", "read-back")  # and only the handed-over state

    assert archiver.drain() == 2

    for job_id, result in results.items():
        found = archive.find(job_id)
        assert found is not None
        assert outcome_from_row(found) == result, "the handed-over one, and the other read from Redis"
        assert found.status == "completed"
    handed = archive.find(mine.job_id)
    assert handed is not None
    assert handed.request_id == mine.request_id, "its state as handed over, not read back"
    assert handed.completed_at is not None
