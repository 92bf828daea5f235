"""JobStore and JobTracker against a real Redis: atomic transitions, TTLs and the stale-job sweeper."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from integration.records import IMAGE_TTL, RESULT_TTL, confirm, create, new_record, result_for, settle_refused
from visionq.inference.breaker import Breakers
from visionq.jobs import keys
from visionq.jobs.records import JobRecord
from visionq.jobs.states import Stage
from visionq.jobs.store import QUEUED_FIELD
from visionq.jobs.tracker import JobTracker

STALE_AFTER = 20


@pytest.fixture
def tracker(redis_url: str) -> Iterator[JobTracker]:
    client = redis.Redis.from_url(redis_url)
    yield JobTracker(client, worker_id="test:1", result_ttl=RESULT_TTL, stale_after=STALE_AFTER)
    client.close()


def test_create_stores_status_image_and_deadline(redis_url: str, redis_client: redis.Redis) -> None:
    record = new_record()
    create(redis_url, record)

    assert redis_client.hget(keys.status(record.job_id), "status") == "pending"
    assert 0 < redis_client.ttl(keys.image(record.job_id)) <= IMAGE_TTL
    assert redis_client.ttl(keys.status(record.job_id)) > IMAGE_TTL
    deadline = redis_client.zscore(keys.LIVE_JOBS, record.job_id)
    assert deadline is not None
    assert deadline <= time.time() + IMAGE_TTL


def test_taking_a_job_claims_it_and_reads_it_in_one_go(redis_url: str, tracker: JobTracker) -> None:
    record = new_record()
    create(redis_url, record, image=b"the image")

    taken = tracker.take(record.job_id)
    tracker.complete(result_for(record))
    late = tracker.take(record.job_id)

    assert taken.claim == (1, 0)
    assert taken.record is not None
    assert (taken.record.job_id, taken.record.status, taken.record.attempts) == (record.job_id, "processing", 1)
    assert taken.image == b"the image"
    assert late.claim.attempts == 0, "a finished job is not taken again"
    assert late.image is None


def test_a_job_is_taken_only_once_the_api_has_confirmed_it(redis_url: str, tracker: JobTracker) -> None:
    record = new_record()
    create(redis_url, record, confirm=False)  # stored and queued; the API's confirmation not yet in

    early = tracker.take(record.job_id)
    assert confirm(redis_url, record.job_id)
    taken = tracker.take(record.job_id)
    tracker.complete(result_for(record))  # nothing left processing for the sweeper tests

    assert early.unconfirmed
    assert (early.claim, early.record) == ((0, 0), None), "nothing claimed"
    assert not taken.unconfirmed
    assert taken.claim == (1, 0), "the early look was no delivery"
    assert not tracker.give_up_unconfirmed(record.job_id), "a confirmed job is never given up"


def test_a_job_never_confirmed_is_failed_unrun_and_a_late_confirmation_refused(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    record = new_record()
    create(redis_url, record, confirm=False)

    assert tracker.give_up_unconfirmed(record.job_id)
    late = confirm(redis_url, record.job_id)

    assert not late, "the API answers 503: its client's retry makes the only job"
    status = redis_client.hgetall(keys.status(record.job_id))
    assert (status["status"], status["error_code"], status["attempts"]) == ("failed", "broker_unavailable", "0")
    assert QUEUED_FIELD not in status
    assert tracker.take(record.job_id).claim.attempts == 0


def test_the_confirmation_gives_a_reserved_idempotency_key_its_answer_in_the_same_step(
    redis_url: str, redis_client: redis.Redis
) -> None:
    reserved, unreserved = f"reserved-{time.time_ns()}", f"unreserved-{time.time_ns()}"
    redis_client.set(reserved, '{"request": "r", "accepted": null}', ex=60)  # as IdempotencyKeys.reserve leaves it
    answer = b'{"request": "r", "accepted": {"job_id": "j"}}'
    first, second = new_record(), new_record()
    create(redis_url, first, confirm=False)
    create(redis_url, second, confirm=False)

    assert confirm(redis_url, first.job_id, remember=(reserved, answer))
    assert confirm(redis_url, second.job_id, remember=(unreserved, answer))

    assert redis_client.get(reserved) == answer.decode()
    assert redis_client.ttl(reserved) > 23 * 3600
    assert redis_client.get(unreserved) is None, "a reservation that expired is not made again"


def test_a_refused_submit_is_settled_once_redis_is_back(redis_url: str, redis_client: redis.Redis) -> None:
    """Its confirmation failed, done or not: an unconfirmed job is failed unrun and its key freed for the
    client's retry; a confirmed one (the reply was lost) keeps running, and its key keeps the answer."""
    unconfirmed, confirmed = new_record(), new_record()
    reserved, answered = f"reserved-{time.time_ns()}", f"answered-{time.time_ns()}"
    redis_client.set(reserved, '{"request": "r", "accepted": null}', ex=60)
    redis_client.set(answered, '{"request": "r", "accepted": null}', ex=60)
    create(redis_url, unconfirmed, confirm=False)
    create(redis_url, confirmed, confirm=False)
    assert confirm(redis_url, confirmed.job_id, remember=(answered, b'{"request": "r", "accepted": {}}'))

    settle_refused(redis_url, unconfirmed.job_id, reserved)
    settle_refused(redis_url, confirmed.job_id, answered)

    refused = redis_client.hgetall(keys.status(unconfirmed.job_id))
    assert (refused["status"], refused["error_code"], refused["attempts"]) == ("failed", "broker_unavailable", "0")
    assert redis_client.exists(reserved) == 0, "the retry may make the job"
    assert redis_client.hget(keys.status(confirmed.job_id), "status") == "pending"
    assert redis_client.get(answered) == '{"request": "r", "accepted": {}}', "the retry gets the job back"


def test_a_lost_message_is_queued_again_only_by_a_worker_of_its_own_queue(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    record = new_record()
    create(redis_url, record)
    redis_client.hset(keys.status(record.job_id), QUEUED_FIELD, "queue-b")  # as the API marks it; no message left

    def lost(queue: str) -> list[str]:
        found = tracker.lost_messages(queue, waited=0, image_ttl=IMAGE_TTL)
        return [job_id for job_id, _ in found if job_id == record.job_id]

    assert lost("queue-a") == [], "another queue's job is not this worker's to queue again"
    assert lost("queue-b") == [record.job_id]


def test_a_success_writes_to_a_closed_breaker_only_to_reset_its_failures(redis_client: redis.Redis) -> None:
    breakers = Breakers(redis_client, failures=3, cooldown=1)
    ref = f"model-{time.time_ns()}@1"
    breakers.succeeded(ref)  # the first success makes the breaker's record
    redis_client.hset(keys.breaker(ref), "reason", "a marker that a write would delete")
    breakers.succeeded(ref)
    while_healthy = redis_client.hgetall(keys.breaker(ref))
    breakers.failed(ref, "a failure")
    breakers.succeeded(ref)

    assert while_healthy["reason"] == "a marker that a write would delete", "a healthy model's success writes nothing"
    assert redis_client.hgetall(keys.breaker(ref)) == {"state": "closed", "failures": "0"}, "failures reset"
    assert breakers.allow(ref)


def test_claim_advance_complete_is_one_way(redis_url: str, redis_client: redis.Redis, tracker: JobTracker) -> None:
    record = new_record()
    create(redis_url, record)

    assert tracker.take(record.job_id).claim == (1, 0)
    assert redis_client.sismember(keys.PROCESSING_JOBS, record.job_id)
    assert tracker.advance(record.job_id, Stage.INFERENCE)
    assert tracker.advance(record.job_id, Stage.PREPROCESSING)  # a redelivery restarting its stages…
    assert redis_client.hget(keys.status(record.job_id), "progress") == "50"  # …never lowers progress
    assert tracker.complete(result_for(record))

    assert not tracker.complete(result_for(record)), "a second result is refused"
    assert not tracker.fail(record.job_id, "internal_error", "late failure"), "a finished job cannot fail"
    assert not tracker.advance(record.job_id, Stage.POSTPROCESSING)
    assert tracker.take(record.job_id).claim.attempts == 0
    status = redis_client.hgetall(keys.status(record.job_id))
    assert (status["status"], status["progress"], status["attempts"]) == ("completed", "100", "1")
    assert redis_client.exists(keys.image(record.job_id)) == 0
    assert 0 < redis_client.ttl(keys.result(record.job_id)) <= RESULT_TTL
    assert 0 < redis_client.ttl(keys.status(record.job_id)) <= RESULT_TTL
    assert redis_client.zscore(keys.LIVE_JOBS, record.job_id) is None
    assert not redis_client.sismember(keys.PROCESSING_JOBS, record.job_id)


def test_a_process_that_died_on_the_image_is_counted_with_its_evidence(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    record = new_record()
    create(redis_url, record)

    tracker.take(record.job_id)
    assert tracker.crashed(record.job_id, "signal 9") == 0, "died before touching the image: not the image's fault"
    assert tracker.take(record.job_id).claim == (2, 0)
    tracker.advance(record.job_id, Stage.PREPROCESSING)
    assert tracker.crashed(record.job_id, "signal 9 (SIGKILL)") == 1
    assert tracker.take(record.job_id).claim == (3, 1)
    tracker.advance(record.job_id, Stage.INFERENCE)
    assert tracker.crashed(record.job_id, "exitcode 139") == 2

    fields = redis_client.hgetall(keys.status(record.job_id))
    log = JobRecord.from_redis({str(k): str(v) for k, v in fields.items()}).crash_log
    assert [(c.attempt, c.stage, c.worker_id, c.reason) for c in log] == [
        (2, Stage.PREPROCESSING, "test:1", "signal 9 (SIGKILL)"),
        (3, Stage.INFERENCE, "test:1", "exitcode 139"),
    ]
    assert tracker.dead_letter(record.job_id, "poison_input", "quarantined")
    assert tracker.crashed(record.job_id, "late") == 0, "a finished job counts nothing more"


def test_every_change_is_published(redis_url: str, redis_client: redis.Redis, tracker: JobTracker) -> None:
    record = new_record()
    create(redis_url, record)
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(keys.events(record.job_id))
    assert pubsub.get_message(timeout=5) is not None  # the subscribe confirmation

    tracker.take(record.job_id)
    tracker.advance(record.job_id, Stage.PREPROCESSING)
    tracker.fail(record.job_id, "invalid_image", "bad bytes")

    updates = [pubsub.get_message(timeout=5) for _ in range(3)]
    pubsub.close()
    stages = [JobRecord.model_validate_json(u["data"]).stage for u in updates if u]
    assert stages == [Stage.INITIALIZING, Stage.PREPROCESSING, Stage.FAILED]


def test_sweeper_fails_jobs_past_their_deadline(redis_url: str, redis_client: redis.Redis, tracker: JobTracker) -> None:
    queued, abandoned, fresh = new_record(), new_record(), new_record()
    for record in (queued, abandoned, fresh):
        create(redis_url, record)
    tracker.take(abandoned.job_id)

    # A processing job is overdue after STALE_AFTER without progress; a queued one once its image expired.
    assert tracker.sweep(now=time.time() + STALE_AFTER + 1) == [abandoned.job_id]
    assert set(tracker.sweep(now=time.time() + IMAGE_TTL + 1)) >= {queued.job_id, fresh.job_id}
    for record in (queued, abandoned):
        status = redis_client.hgetall(keys.status(record.job_id))
        assert status["status"] == "failed"
        assert status["error_code"] == "internal_error"
        assert redis_client.exists(keys.image(record.job_id)) == 0
