"""A job's stage changes against a real Redis: short stages go with the next write, each still published in
order; a stage expected to last is written as it begins; a written stage is where a cancelled job stops."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from integration.records import RESULT_TTL, create, new_record, result_for
from visionq.jobs import keys
from visionq.jobs.tracker import JobTracker
from visionq.wire.states import Stage
from visionq.worker.stages import JobNoLongerLive, StageLengths, StageReport

MODEL = "efficientnet-lite0@1"
WINDOW = 0.05


@pytest.fixture
def tracker(redis_url: str) -> Iterator[JobTracker]:
    client = redis.Redis.from_url(redis_url)
    yield JobTracker(client, worker_id="test:stages", result_ttl=RESULT_TTL, stale_after=60)
    client.close()


def _taken_job(redis_url: str, tracker: JobTracker) -> str:
    record = new_record()
    create(redis_url, record)
    assert tracker.take(record.job_id).claim.attempts == 1
    return record.job_id


def _published(pubsub: redis.client.PubSub) -> list[str]:
    stages = []
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        if message["type"] == "message":
            stages.append(orjson.loads(message["data"])["stage"])
    return stages


def _run_to_completion(
    redis_client: redis.Redis, tracker: JobTracker, report: StageReport
) -> tuple[bytes | str | None, str | None, list[str]]:
    """Report each stage of a job in turn, then complete it with the stages not yet written: the stage its status
    showed just before the completion, its stamp (None if refused), and the stages published, in order."""
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(keys.events(report.job_id))
    assert pubsub.get_message(timeout=5) is not None  # the subscribe confirmation
    for stage in Stage.PREPROCESSING, Stage.INFERENCE, Stage.POSTPROCESSING:
        report(stage)
    seen_before_completion = redis_client.hget(keys.status(report.job_id), "stage")
    completed = tracker.complete(
        result_for(new_record().model_copy(update={"job_id": report.job_id})), stages=report.unwritten()
    )
    published = _published(pubsub)
    pubsub.close()
    return seen_before_completion, completed, published


def test_short_stages_go_with_the_completion_and_are_each_published_in_order(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    job_id = _taken_job(redis_url, tracker)
    lengths = StageLengths()
    for stage in Stage.INFERENCE, Stage.POSTPROCESSING:
        lengths.observe(MODEL, stage, WINDOW / 10)
    report = StageReport(tracker, job_id, MODEL, lengths, window=WINDOW)

    # preprocessing is always written: the worker starts reading the client's bytes
    seen_before_completion, completed, published = _run_to_completion(redis_client, tracker, report)

    assert seen_before_completion == "preprocessing"
    assert completed
    assert published == ["preprocessing", "inference", "postprocessing", "completed"]


def test_a_worker_that_counts_no_crashes_writes_a_short_preprocessing_with_the_completion_too(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    job_id = _taken_job(redis_url, tracker)
    lengths = StageLengths()
    for stage in Stage.PREPROCESSING, Stage.INFERENCE, Stage.POSTPROCESSING:
        lengths.observe(MODEL, stage, WINDOW / 10)
    report = StageReport(tracker, job_id, MODEL, lengths, window=WINDOW, always=frozenset())  # a threads worker's

    seen_before_completion, completed, published = _run_to_completion(redis_client, tracker, report)

    assert seen_before_completion == "initializing"
    assert completed
    assert published == ["preprocessing", "inference", "postprocessing", "completed"]


def test_a_stage_expected_to_last_is_written_as_it_begins(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    job_id = _taken_job(redis_url, tracker)
    lengths = StageLengths()
    lengths.observe(MODEL, Stage.INFERENCE, WINDOW * 10)
    report = StageReport(tracker, job_id, MODEL, lengths, window=WINDOW)

    report(Stage.PREPROCESSING)
    report(Stage.INFERENCE)

    assert redis_client.hget(keys.status(job_id), "stage") == "inference"
    assert report.unwritten() == []


def test_a_stage_never_seen_before_is_written_at_once(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    job_id = _taken_job(redis_url, tracker)
    report = StageReport(tracker, job_id, MODEL, StageLengths(), window=WINDOW)

    report(Stage.PREPROCESSING)
    report(Stage.POSTPROCESSING)

    assert redis_client.hget(keys.status(job_id), "stage") == "postprocessing"


def test_a_written_stage_of_a_cancelled_job_stops_it(redis_url: str, tracker: JobTracker) -> None:
    job_id = _taken_job(redis_url, tracker)
    report = StageReport(tracker, job_id, MODEL, StageLengths(), window=WINDOW)
    assert tracker.fail(job_id, "cancelled", "cancelled by the test")

    with pytest.raises(JobNoLongerLive):
        report(Stage.PREPROCESSING)
