"""Archive rows from job records and back, and page cursors: pure conversions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from visionq.archive.repository import BadCursor, decode_cursor, encode_cursor
from visionq.archive.rows import outcome_from_row, row_from_job
from visionq.archive.tables import ArchivedJob
from visionq.jobs.records import JobRecord
from visionq.wire.jobs import FailureBody, ImageInfo, Prediction, Receipt, ResultBody, ResultMetadata
from visionq.wire.states import JobStatus, Priority, Stage

JOB_ID = "0b5c2d1e-4f6a-4b8c-9d0e-1f2a3b4c5d6e"
RECORD = JobRecord(
    job_id=JOB_ID,
    status=JobStatus.COMPLETED,
    stage=Stage.COMPLETED,
    progress=100,
    created_at="2026-11-27T10:00:00.000Z",
    updated_at="2026-11-27T10:00:00.250Z",
    started_at="2026-11-27T10:00:00.100Z",
    worker_id="host:1",
    attempts=1,
    model_version="efficientnet-lite0@1",
    priority=Priority.HIGH,
    top_k=1,
    image_format="PNG",
    image_width=451,
    image_height=300,
    owner="alice",
    image_sha256="ab" * 32,
    request_id="req-1",
)
RESULT = ResultBody(
    job_id=JOB_ID,
    predictions=[Prediction(class_id=285, class_name="Egyptian cat", confidence=0.8125)],
    confidence_score=0.8125,
    processing_time=0.125,
    model_version="efficientnet-lite0@1",
    created_at="2026-11-27T10:00:00.000Z",
    completed_at="2026-11-27T10:00:00.240Z",
    metadata=ResultMetadata(image=ImageInfo(width=451, height=300, format="PNG"), queue_time=0.1, total_time=0.24),
)


def test_a_completed_job_round_trips_to_its_result_body() -> None:
    row = row_from_job(RECORD, RESULT)

    assert row["owner"] == "alice"
    assert row["image_sha256"] == "ab" * 32
    assert row["request_id"] == "req-1"
    assert row["created_at"] == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert row["completed_at"] == datetime(2026, 11, 27, 10, 0, 0, 240000, tzinfo=UTC), "the result's own time"
    assert outcome_from_row(ArchivedJob(**row)) == RESULT


def test_no_image_bytes_reach_the_row() -> None:
    assert not any(isinstance(value, bytes) for value in row_from_job(RECORD, RESULT).values())


def test_a_pending_job_has_no_outcome_and_no_completion_time() -> None:
    pending = RECORD.model_copy(update={"status": JobStatus.PENDING, "stage": Stage.QUEUED, "started_at": None})
    row = row_from_job(pending, None)

    assert row["completed_at"] is None
    assert row["predictions"] is None
    assert row["started_at"] is None
    assert outcome_from_row(ArchivedJob(**row)) is None


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_an_unsuccessful_job_gives_its_failure_body(status: JobStatus) -> None:
    ended = RECORD.model_copy(update={"status": status, "error_code": "invalid_image", "error_message": "bad"})
    row = row_from_job(ended, None)

    assert row["completed_at"] == datetime(2026, 11, 27, 10, 0, 0, 250000, tzinfo=UTC)
    assert outcome_from_row(ArchivedJob(**row)) == FailureBody(job_id=JOB_ID, status=status, error=ended.error)


def test_a_cursor_carries_the_last_row_exactly() -> None:
    moment = datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(moment, JOB_ID)) == (moment, JOB_ID)


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "e30", "WyJub3QgYSB0aW1lIiwgImlkIl0", "WyIyMDI2LTExLTI3VDEwOjAwOjAwIiwiaWQiXQ"]
)
def test_anything_else_is_not_a_cursor(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def test_a_result_served_by_the_fallback_keeps_who_served_it_and_why() -> None:
    degraded = RESULT.model_copy(
        update={
            "model_version": "efficientnet-lite1@1",
            "metadata": RESULT.metadata.model_copy(
                update={"served_by": "efficientnet-lite1@1", "degraded_reason": "lite0 is unavailable"}
            ),
        }
    )
    row = row_from_job(RECORD, degraded)

    assert row["model_version"] == row["served_by"] == "efficientnet-lite1@1"
    assert outcome_from_row(ArchivedJob(**row)) == degraded


def test_a_result_keeps_its_receipt_and_one_without_reads_back_without() -> None:
    receipt = Receipt(
        image_sha256="ab" * 32,
        weights_sha256="cd" * 32,
        runtime="onnxruntime",
        runtime_version="1.32.0",
        precision="fp32",
        preprocessing="decode=exif_upright,rgb,alpha_on_white;resize=squash",
        preprocessing_sha256="ef" * 32,
        labels_sha256="01" * 32,
    )
    with_receipt = RESULT.model_copy(update={"metadata": RESULT.metadata.model_copy(update={"receipt": receipt})})
    row = row_from_job(RECORD, with_receipt)

    assert row["receipt"] == receipt.model_dump()
    assert outcome_from_row(ArchivedJob(**row)) == with_receipt
    without = outcome_from_row(ArchivedJob(**row_from_job(RECORD, RESULT)))
    assert isinstance(without, ResultBody)
    assert without.metadata.receipt is None
