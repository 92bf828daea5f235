"""Job records: RFC 3339 timestamps, the Redis hash round-trip, and the status body of API.md."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from visionq.jobs.records import JobRecord, isoformat, parse_time
from visionq.wire.jobs import dump_status
from visionq.wire.states import JobStatus, Priority, Stage

RFC3339_MILLIS_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
JOB_ID = "0b7c4a8e-5d1f-4f3a-9e2b-6c8d0a1b2c3d"


def _record(**changes: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "job_id": JOB_ID,
        "status": JobStatus.PENDING,
        "stage": Stage.QUEUED,
        "created_at": "2026-11-26T21:30:00.123Z",
        "updated_at": "2026-11-26T21:30:00.123Z",
        "model_version": "efficientnet-lite0@1",
        "priority": Priority.NORMAL,
        "top_k": 5,
        "image_format": "PNG",
        "image_width": 451,
        "image_height": 300,
    }
    return JobRecord(**(fields | changes))


def test_isoformat_is_utc_with_milliseconds_and_z() -> None:
    moment = datetime(2026, 11, 26, 21, 30, 0, 123456, tzinfo=UTC)
    assert isoformat(moment) == "2026-11-26T21:30:00.123Z"


def test_isoformat_converts_other_offsets_to_utc() -> None:
    moment = datetime(2026, 11, 26, 23, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    assert isoformat(moment) == "2026-11-26T21:30:00.000Z"


def test_isoformat_keeps_milliseconds_on_a_whole_second() -> None:
    assert RFC3339_MILLIS_Z.fullmatch(isoformat(datetime(2026, 1, 1, tzinfo=UTC)))


def test_parse_time_reads_back_what_isoformat_writes() -> None:
    moment = datetime(2026, 11, 26, 21, 30, 0, 123000, tzinfo=UTC)
    assert parse_time(isoformat(moment)) == moment


def test_to_redis_gives_only_strings() -> None:
    fields = _record(progress=25, attempts=2).to_redis()
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in fields.items())
    assert fields["progress"] == "25"
    assert fields["attempts"] == "2"
    assert fields["status"] == "pending"
    assert fields["priority"] == "normal"


def test_to_redis_omits_unset_fields() -> None:
    fields = _record().to_redis()
    for absent in ("started_at", "worker_id", "callback_url", "error_code", "error_message"):
        assert absent not in fields


def test_a_new_record_round_trips_through_redis() -> None:
    record = _record()
    assert JobRecord.from_redis(record.to_redis()) == record


def test_a_failed_record_round_trips_through_redis() -> None:
    record = _record(
        status=JobStatus.FAILED,
        stage=Stage.FAILED,
        progress=50,
        started_at="2026-11-26T21:30:01.000Z",
        worker_id="celery@host-1",
        attempts=3,
        callback_url="https://example.com/hook",
        error_code="invalid_image",
        error_message="the image is truncated",
    )
    assert JobRecord.from_redis(record.to_redis()) == record


def test_from_redis_treats_empty_strings_as_unset() -> None:
    fields = _record().to_redis() | {"worker_id": "", "error_code": ""}
    record = JobRecord.from_redis(fields)
    assert record.worker_id is None
    assert record.error is None


def test_dump_status_of_a_live_job_has_no_error_and_a_null_worker() -> None:
    body = dump_status(_record().status_body())
    assert "error" not in body
    assert body["worker_id"] is None
    assert body == {
        "job_id": JOB_ID,
        "status": "pending",
        "progress": 0,
        "stage": "queued",
        "created_at": "2026-11-26T21:30:00.123Z",
        "updated_at": "2026-11-26T21:30:00.123Z",
        "worker_id": None,
        "attempts": 0,
        "model_version": "efficientnet-lite0@1",
        "priority": "normal",
    }


def test_dump_status_of_a_processing_job_names_its_worker() -> None:
    record = _record(status=JobStatus.PROCESSING, stage=Stage.INFERENCE, progress=50, worker_id="celery@host-1")
    body = dump_status(record.status_body())
    assert body["worker_id"] == "celery@host-1"
    assert (body["status"], body["stage"], body["progress"]) == ("processing", "inference", 50)
    assert "error" not in body


def test_dump_status_of_a_failed_job_carries_its_error() -> None:
    record = _record(status=JobStatus.FAILED, stage=Stage.FAILED, error_code="invalid_image", error_message="empty")
    body = dump_status(record.status_body())
    assert body["error"] == {"code": "invalid_image", "message": "empty"}
    assert body["worker_id"] is None


def test_dump_status_of_an_expired_job_carries_its_error() -> None:
    record = _record(status=JobStatus.EXPIRED, stage=Stage.EXPIRED, error_code="expired", error_message="too late")
    assert dump_status(record.status_body())["error"] == {"code": "expired", "message": "too late"}


def test_dump_status_of_a_cancelled_job_has_no_error_but_its_failure_body_does() -> None:
    record = _record(status=JobStatus.CANCELLED, stage=Stage.CANCELLED, error_code="cancelled", error_message="asked")
    assert "error" not in dump_status(record.status_body())
    assert record.failure_body().model_dump(mode="json")["error"] == {"code": "cancelled", "message": "asked"}


@pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
def test_failure_body_names_status_and_error(status: JobStatus) -> None:
    record = _record(status=status, error_code="internal_error", error_message="gave up after 3 attempts")
    assert record.failure_body().model_dump(mode="json") == {
        "job_id": JOB_ID,
        "status": status.value,
        "error": {"code": "internal_error", "message": "gave up after 3 attempts"},
    }


def test_image_info_comes_from_the_record() -> None:
    assert _record().image.model_dump() == {"width": 451, "height": 300, "format": "PNG"}


# --- is_older_than: a watcher passes over updates that came before the state it already has -------------

EARLIER, LATER = "2026-11-26T21:30:01.000Z", "2026-11-26T21:30:02.000Z"
AT_25 = {"status": JobStatus.PROCESSING, "stage": Stage.PREPROCESSING, "progress": 25, "attempts": 1}


def test_an_update_written_before_the_state_the_watcher_read_is_older() -> None:
    known = _record(**AT_25, updated_at=LATER)
    taken = _record(status=JobStatus.PROCESSING, stage=Stage.QUEUED, progress=0, attempts=1, updated_at=EARLIER)

    assert taken.is_older_than(known)
    assert _record(updated_at=EARLIER).is_older_than(known)  # the pending state the API wrote


@pytest.mark.parametrize(
    "newer",
    [
        pytest.param({**AT_25, "stage": Stage.INFERENCE, "progress": 50, "updated_at": LATER}, id="further along"),
        pytest.param({**AT_25, "progress": 0, "attempts": 2, "updated_at": LATER}, id="a new attempt"),
        pytest.param({"progress": 0, "attempts": 1, "updated_at": LATER}, id="queued again after a crash"),
        pytest.param({"status": JobStatus.CANCELLED, "stage": Stage.CANCELLED, "updated_at": EARLIER}, id="terminal"),
        pytest.param({**AT_25, "progress": 50, "updated_at": EARLIER}, id="further along, on a slower clock"),
    ],
)
def test_a_state_written_later_or_further_along_or_terminal_is_not_older(newer: dict[str, Any]) -> None:
    known = _record(**AT_25, updated_at="2026-11-26T21:30:01.500Z")

    assert not _record(**newer).is_older_than(known)


def test_an_update_is_ordered_by_its_revision_when_it_has_one() -> None:
    # ADVANCE writes stages 25 and 50 in one step: one updated_at, two updates. A watcher that read the job at 50
    # passes over both, however the clocks compare.
    known = _record(**{**AT_25, "progress": 50}, updated_at=LATER, revision=3)

    assert _record(**AT_25, updated_at=LATER, revision=2).is_older_than(known)
    assert _record(**{**AT_25, "progress": 50}, updated_at=LATER, revision=3).is_older_than(known)
    assert not _record(**{**AT_25, "progress": 75}, updated_at=EARLIER, revision=4).is_older_than(known)
    assert not _record(status=JobStatus.PENDING, updated_at=LATER, revision=4).is_older_than(known), "queued again"


def test_a_state_the_api_wrote_before_any_update_is_older_than_every_update() -> None:
    known = _record(updated_at=LATER)  # revision 0: nothing published yet

    assert not _record(**AT_25, updated_at=EARLIER, revision=1).is_older_than(known)
