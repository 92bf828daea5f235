"""The queue's rules as pure logic: promotion steps, shedding shares, a submit's deadline, the result's validator,
and which status fields a body leaves out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from visionq.api.endpoints.status import _matches
from visionq.jobs import cache
from visionq.jobs.batches import status_body
from visionq.jobs.records import JobRecord, Place, isoformat, parse_time, utcnow
from visionq.wire.jobs import ResultBody, StatusBody, dump_status
from visionq.wire.schemas import MAX_DEADLINE_SECONDS, ClassifyForm
from visionq.wire.states import PRIORITY_ORDER, JobStatus, Priority, Stage


def test_each_priority_is_raised_one_step_and_urgent_stays() -> None:
    assert [priority.raised for priority in PRIORITY_ORDER] == [
        Priority.URGENT,
        Priority.URGENT,
        Priority.HIGH,
        Priority.NORMAL,
    ]


def test_the_lowest_priority_is_shed_first() -> None:
    shares = [priority.shed_share for priority in PRIORITY_ORDER]
    assert shares == sorted(shares, reverse=True)
    assert len(set(shares)) == len(shares)
    assert Priority.URGENT.shed_share == 1.0


def test_a_deadline_in_seconds_counts_from_the_submit() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    form = ClassifyForm.model_validate({"deadline": "90"})
    assert form.deadline_at(now) == now + timedelta(seconds=90)


def test_a_deadline_as_a_time_is_kept_with_its_offset() -> None:
    moment = datetime.now(UTC) + timedelta(hours=1)
    form = ClassifyForm.model_validate({"deadline": moment.isoformat()})
    assert form.deadline_at(datetime.now(UTC)) == moment


@pytest.mark.parametrize(
    "deadline",
    ["0", "-5", "nan", "inf", str(MAX_DEADLINE_SECONDS + 1), "2020-01-01T00:00:00Z", "2026-12-06T23:00:00", "soon"],
)
def test_a_deadline_that_cannot_hold_is_refused(deadline: str) -> None:
    with pytest.raises(ValidationError):
        ClassifyForm.model_validate({"deadline": deadline})


def test_no_deadline_means_none() -> None:
    assert ClassifyForm().deadline_at(datetime.now(UTC)) is None


@pytest.mark.parametrize(
    ("header", "matches"),
    [('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True), ('"abd"', False), ("abc", False)],
)
def test_if_none_match_compares_weakly(header: str, matches: bool) -> None:
    assert _matches(header, '"abc"') is matches


def _body(**extra: object) -> StatusBody:
    return StatusBody.model_validate(
        {
            "job_id": "j",
            "status": JobStatus.PENDING,
            "progress": 0,
            "stage": Stage.QUEUED,
            "created_at": "2026-12-06T12:00:00.000Z",
            "updated_at": "2026-12-06T12:00:00.000Z",
            "model_version": "m@1",
            "priority": Priority.LOW,
            **extra,
        }
    )


def test_a_status_body_leaves_out_the_queue_fields_it_has_no_value_for() -> None:
    dumped = dump_status(_body())
    assert dumped["worker_id"] is None
    assert not {"error", "deadline", "promoted_to", "queue_position", "estimated_start"} & dumped.keys()


def test_a_waiting_jobs_body_carries_its_place() -> None:
    dumped = dump_status(_body(queue_position=3, estimated_start="2026-12-06T12:00:05.000Z", promoted_to="normal"))
    assert (dumped["queue_position"], dumped["promoted_to"]) == (3, "normal")
    assert dumped["estimated_start"] == "2026-12-06T12:00:05.000Z"


def _record() -> JobRecord:
    now = isoformat(utcnow())
    return JobRecord.model_validate(
        {"job_id": "j", "status": "pending", "stage": "queued", "created_at": now, "updated_at": now,
         "model_version": "m@1", "priority": "low", "top_k": 5, "image_format": "JPEG", "image_width": 1,
         "image_height": 1}
    )  # fmt: skip


def test_a_place_gives_the_position_and_a_start_from_the_measured_pace() -> None:
    before = utcnow()
    body = _record().status_body(Place(position=4, starts_in=8.0))
    assert body.queue_position == 4
    assert body.estimated_start is not None
    start = parse_time(body.estimated_start)
    assert before + timedelta(seconds=8, milliseconds=-1) <= start <= utcnow() + timedelta(seconds=8)  # ms precision


def test_a_place_without_a_known_pace_gives_the_position_alone() -> None:
    body = _record().status_body(Place(position=0, starts_in=None))
    assert (body.queue_position, body.estimated_start) == (0, None)


def _finished_result(job_id: str) -> ResultBody:
    return ResultBody.model_validate(
        {"job_id": job_id, "predictions": [{"class_id": 285, "class_name": "Egyptian cat", "confidence": 0.9}],
         "confidence_score": 0.9, "processing_time": 0.03, "model_version": "m@1",
         "created_at": "2026-12-06T12:00:00.000Z", "completed_at": "2026-12-06T12:00:00.050Z",
         "metadata": {"image": {"width": 1, "height": 1, "format": "JPEG"}, "queue_time": 0.01, "total_time": 0.05,
                      "batch_size": 2, "batch_wait": 0.001, "cache": "miss"}}
    )  # fmt: skip


def test_a_cache_entry_is_per_owner_unless_shared() -> None:
    mine = _record().model_copy(update={"image_sha256": "ab" * 32, "owner": "key:one"})
    theirs = mine.model_copy(update={"owner": "key:two"})
    other_top_k = mine.model_copy(update={"top_k": 3})
    assert cache.entry_key(mine, shared=False) != cache.entry_key(theirs, shared=False)
    assert cache.entry_key(mine, shared=True) == cache.entry_key(theirs, shared=True)
    assert cache.entry_key(mine, shared=True) != cache.entry_key(other_top_k, shared=True)


def test_a_reused_result_keeps_the_answer_and_takes_the_jobs_own_id_and_times() -> None:
    record = _record()
    now = parse_time(record.created_at) + timedelta(seconds=2)
    reused = cache.reused(cache.result_json(_finished_result("first")), record, now)
    assert (reused.job_id, reused.created_at, reused.completed_at) == ("j", record.created_at, isoformat(now))
    assert reused.predictions[0].class_id == 285
    assert reused.metadata.cache == "hit"
    assert (reused.metadata.queue_time, reused.metadata.total_time) == (2.0, 2.0)
    assert reused.processing_time == 0.0, "no worker picked it up"
    assert reused.metadata.batch_size is None, "no call of the model served it"


def test_a_batch_is_pending_until_an_item_starts_then_running_until_every_item_ends() -> None:
    fields = {"batch_id": "b", "total": "4", "state": "open", "ended": "0"}
    waiting = status_body(fields, pace=0.5)
    running = status_body({**fields, "processing": "1", "completed": "1", "ended": "1"}, pace=0.5)
    ended = status_body({**fields, "state": "completed", "completed": "3", "failed": "1", "ended": "4",
                         "ended_at": "2026-12-06T12:00:00.000Z"})  # fmt: skip

    assert (waiting["status"], waiting["counts"]["pending"], waiting["progress"]) == ("pending", 4, 0)
    assert waiting["estimated_completion"] is not None, "four items at the queue's pace"
    assert (running["status"], running["counts"]["pending"], running["progress"]) == ("running", 2, 25)
    assert (ended["status"], ended["progress"], ended["estimated_completion"]) == (
        "completed",
        100,
        "2026-12-06T12:00:00.000Z",
    )
    assert ended["counts"] == {"pending": 0, "processing": 0, "completed": 3, "failed": 1, "cancelled": 0, "expired": 0}
    assert status_body(fields)["estimated_completion"] is None, "no pace measured yet"
