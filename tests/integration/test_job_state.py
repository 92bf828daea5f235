"""JobStore and JobTracker against a real Redis: atomic transitions, TTLs and the stale-job sweeper."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio

from integration.records import IMAGE_TTL, QUEUE, RESULT_TTL, create, new_record, release_unmade, result_for
from visionq.jobs import keys
from visionq.jobs.breakers import Breakers
from visionq.jobs.records import JobRecord, Place
from visionq.jobs.scripts import CHANGING
from visionq.jobs.store import QUEUED_FIELD, JobStore
from visionq.jobs.tracker import PAST_DEADLINE, STALE_MESSAGE, JobTracker
from visionq.wire.states import PRIORITY_STEPS, Priority, Stage

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


def test_a_submit_makes_the_job_and_queues_its_message_in_one_step(redis_url: str, redis_client: redis.Redis) -> None:
    record = new_record()
    queue = f"visionq-test-submit-{time.time_ns()}"
    create(redis_url, record, queue=queue)

    messages = [json.loads(m) for m in redis_client.lrange(keys.priority_list(queue, 6), 0, -1)]
    assert [(m["headers"]["task"], m["headers"]["id"]) for m in messages] == [("visionq.classify_image", record.job_id)]
    assert redis_client.hget(keys.status(record.job_id), QUEUED_FIELD) == queue
    assert redis_client.zscore(keys.ARCHIVE_OUTBOX, record.job_id) is not None


def test_a_full_queue_refuses_the_submit_and_writes_nothing(redis_url: str, redis_client: redis.Redis) -> None:
    queue = f"visionq-test-full-{time.time_ns()}"
    first, second = new_record(), new_record()

    made = create(redis_url, first, queue=queue, max_queued=1)
    refused = create(redis_url, second, queue=queue, max_queued=1)

    assert (made.accepted, made.queued) == (True, 0)
    assert (refused.accepted, refused.queued) == (False, 1)
    assert redis_client.exists(keys.status(second.job_id), keys.image(second.job_id)) == 0
    assert redis_client.zscore(keys.LIVE_JOBS, second.job_id) is None
    assert redis_client.llen(keys.priority_list(queue, 6)) == 1, "only the first job's message"


def test_an_image_store_leaves_the_job_s_redis_without_its_image(redis_url: str, redis_client: redis.Redis) -> None:
    record = new_record().model_copy(update={"image_store": "directory"})
    create(redis_url, record, image=None)

    assert redis_client.exists(keys.image(record.job_id)) == 0
    assert redis_client.hget(keys.status(record.job_id), "image_store") == "directory"


def test_the_submit_gives_a_reserved_idempotency_key_its_answer_in_the_same_step(
    redis_url: str, redis_client: redis.Redis
) -> None:
    reserved, unreserved = f"reserved-{time.time_ns()}", f"unreserved-{time.time_ns()}"
    redis_client.set(reserved, '{"request": "r", "accepted": null}', ex=60)  # as IdempotencyKeys.reserve leaves it
    answer = b'{"request": "r", "accepted": {"job_id": "j"}}'

    assert create(redis_url, new_record(), remember=(reserved, answer)).accepted
    assert create(redis_url, new_record(), remember=(unreserved, answer)).accepted

    entry = json.loads(redis_client.get(reserved) or "")
    wait = entry.pop("wait")  # the estimate the answer gave: none, unless other stacks on this Redis made one known
    assert wait == "" or float(wait) > 0
    assert entry == {"request": "r", "accepted": {"job_id": "j"}}
    assert redis_client.ttl(reserved) > 23 * 3600
    assert redis_client.get(unreserved) is None, "a reservation that expired is not made again"


def test_a_reservation_is_freed_once_redis_is_back_only_if_its_job_was_never_made(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A submit whose round trip failed, done or not: a key whose job was never made is freed for the client's
    retry; a made one (the reply was lost) keeps its answer, and the retry gets the job back."""
    unmade, made = new_record(), new_record()
    reserved, answered = f"reserved-{time.time_ns()}", f"answered-{time.time_ns()}"
    redis_client.set(reserved, '{"request": "r", "accepted": null}', ex=60)
    redis_client.set(answered, '{"request": "r", "accepted": null}', ex=60)
    assert create(redis_url, made, remember=(answered, b'{"request": "r", "accepted": {}}')).accepted

    release_unmade(redis_url, unmade.job_id, reserved)
    release_unmade(redis_url, made.job_id, answered)

    assert redis_client.exists(reserved) == 0, "the retry may make the job"
    assert redis_client.exists(keys.status(unmade.job_id)) == 0
    assert redis_client.hget(keys.status(made.job_id), "status") == "pending"
    assert json.loads(redis_client.get(answered) or "")["accepted"] == {}, "the retry gets the job back"


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


def test_a_processing_job_whose_message_was_lost_is_queued_again_once_its_worker_has_been_silent(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    """A failover can lose a taken job's message (a retry's new one, or the unacked copy an acknowledgement
    outran): the job is processing with nothing left to deliver it. It is queued again, under a new message id
    and with a new deadline, once its worker has been silent `waited` seconds; a job whose message a worker
    holds is not."""
    lost, held = new_record(), new_record()
    for record in (lost, held):
        create(redis_url, record)
        tracker.take(record.job_id)
    messages = {
        job_id: str(message)
        for step in PRIORITY_STEPS
        for message in redis_client.lrange(keys.priority_list(QUEUE, step), 0, -1)
        for job_id in (lost.job_id, held.job_id)
        if job_id in message
    }
    for message in messages.values():
        redis_client.lrem(keys.priority_list(QUEUE, Priority.NORMAL.broker_priority), 1, message)
    redis_client.hset(keys.BROKER_UNACKED, "tag-of-held", messages[held.job_id])  # as kombu keeps one in hand
    deadline = redis_client.zscore(keys.LIVE_JOBS, lost.job_id)
    assert deadline is not None

    def found(after: float) -> list[str]:
        silent = tracker.lost_messages(QUEUE, waited=5, image_ttl=IMAGE_TTL, now=time.time() + after)
        return [job_id for job_id, _ in silent if job_id in (lost.job_id, held.job_id)]

    assert found(after=0) == [], "a worker that reported just now may still have the job in hand"
    assert found(after=6) == [lost.job_id]

    tracker.requeue(lost.job_id, QUEUE, Priority.NORMAL)
    queued = redis_client.lrange(keys.priority_list(QUEUE, Priority.NORMAL.broker_priority), 0, -1)
    [requeued] = [str(message) for message in queued if lost.job_id in message]
    message_id = str(redis_client.hget(keys.status(lost.job_id), "message"))

    assert message_id in requeued
    assert (redis_client.zscore(keys.LIVE_JOBS, lost.job_id) or 0) > deadline, "time for a worker to take it"
    assert tracker.take(lost.job_id).claim.attempts == STALE_MESSAGE, "the lost message, should it turn up"
    assert tracker.take(lost.job_id, message_id).claim.attempts == 2


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


def test_the_background_refresh_keeps_a_closed_breaker_trusted_and_sees_one_opened_elsewhere(
    redis_client: redis.Redis,
) -> None:
    here, elsewhere = (Breakers(redis_client, failures=1, cooldown=60) for _ in range(2))
    ref = f"model-{time.time_ns()}@1"
    assert here.allow(ref), "a model with no breaker record yet is closed"
    elsewhere.failed(ref, "failed a job in another process")
    assert here.allow(ref), "trusted closed for a while after it was read, without a read per job"

    here.refresh(ahead=1.0)
    assert not here.allow(ref), "the refresh saw it open: the next job reads it and is refused"

    elsewhere.succeeded(ref)
    assert here.allow(ref)
    here.refresh(ahead=1.0)
    elsewhere.failed(ref, "failed again")
    assert here.allow(ref), "a refresh that found it closed trusts it until the next refresh is due"


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


def test_a_jobs_updated_at_moves_forward_and_never_back(
    redis_url: str, redis_client: redis.Redis, tracker: JobTracker
) -> None:
    """Each change stamps the job with its writer's time, unless the job's own stamp is later (another machine's
    clock ahead, or stages stamped after the result they go with): the archive keeps the newest state by it."""
    record = new_record()
    create(redis_url, record)
    status = keys.status(record.job_id)
    past, future = "2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z"

    redis_client.hset(status, "updated_at", past)
    tracker.take(record.job_id)
    taken = redis_client.hget(status, "updated_at")
    redis_client.hset(status, "updated_at", future)
    assert tracker.advance(record.job_id, Stage.INFERENCE)
    advanced = redis_client.hget(status, "updated_at")
    completed_at = tracker.complete(result_for(record))

    assert isinstance(taken, str)  # the test client decodes
    assert past < taken < future
    assert advanced == completed_at == redis_client.hget(status, "updated_at") == future


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
    published = [json.loads(u["data"]) for u in updates if u]
    assert [update["stage"] for update in published] == ["initializing", "preprocessing", "failed"]
    assert (published[-1]["error_code"], published[0]["error_code"]) == ("invalid_image", ""), "all it can change"
    assert set(published[0]) == set(CHANGING), "only what a change can change"


def test_sweeper_fails_jobs_past_their_deadline(redis_url: str, redis_client: redis.Redis, tracker: JobTracker) -> None:
    queued, abandoned, fresh = new_record(), new_record(), new_record()
    for record in (queued, abandoned, fresh):
        create(redis_url, record)
    tracker.take(abandoned.job_id)

    # A processing job is overdue after STALE_AFTER without progress; a queued one once its image expired.
    # Other tests' jobs share this Redis: only these three are judged.
    stale = set(tracker.sweep(now=time.time() + STALE_AFTER + 1)) & {queued.job_id, abandoned.job_id, fresh.job_id}
    assert stale == {abandoned.job_id}
    assert set(tracker.sweep(now=time.time() + IMAGE_TTL + 1)) >= {queued.job_id, fresh.job_id}
    for record in (queued, abandoned):
        status = redis_client.hgetall(keys.status(record.job_id))
        assert status["status"] == "failed"
        assert status["error_code"] == "internal_error"
        assert redis_client.exists(keys.image(record.job_id)) == 0


def test_a_worker_that_reaches_a_job_past_its_deadline_expires_it_unrun(
    redis_url: str, redis_client: redis.Redis
) -> None:
    tracker = JobTracker(redis.Redis.from_url(redis_url), worker_id="test:1", result_ttl=RESULT_TTL,
                         stale_after=STALE_AFTER, queue=QUEUE)  # fmt: skip
    late, on_time = new_record(), new_record()
    create(redis_url, late, deadline=time.time() - 1)
    create(redis_url, on_time, deadline=time.time() + 60)

    reached = tracker.take(late.job_id)
    untouched = redis_client.hgetall(keys.status(late.job_id))
    expired = tracker.expire(late.job_id)
    taken = tracker.take(on_time.job_id)
    expired_after_start = tracker.expire(on_time.job_id)
    tracker.redis.close()

    assert reached.claim.attempts == PAST_DEADLINE
    assert (untouched["status"], untouched["attempts"]) == ("pending", "0"), "nothing was written by the take"
    assert expired
    final = redis_client.hgetall(keys.status(late.job_id))
    assert (final["status"], final["stage"], final["error_code"]) == ("expired", "expired", "expired")
    assert "started_at" not in final
    assert redis_client.zscore(keys.JOB_DEADLINES, late.job_id) is None
    assert redis_client.zscore(keys.waiting(QUEUE, ""), late.job_id) is None
    assert taken.claim.attempts == 1, "a job reached before its deadline runs"
    assert not expired_after_start, "a started job no longer expires"
    assert redis_client.zscore(keys.JOB_DEADLINES, on_time.job_id) is None


def test_a_waiting_jobs_rank_is_its_queue_position(redis_url: str, redis_client: redis.Redis) -> None:
    queue = f"visionq-test-rank-{time.time_ns()}"
    tracker = JobTracker(redis.Redis.from_url(redis_url), worker_id="test:1", result_ttl=RESULT_TTL,
                         stale_after=STALE_AFTER, queue=queue)  # fmt: skip
    normal = [new_record() for _ in range(3)]
    urgent = new_record().model_copy(update={"priority": Priority.URGENT})
    for record in [*normal, urgent]:
        create(redis_url, record, queue=queue)

    def ranks() -> list[object]:
        return [redis_client.zrank(keys.waiting(queue, ""), r.job_id) for r in [*normal, urgent]]

    before = ranks()
    tracker.take(urgent.job_id)
    after_a_start = ranks()
    tracker.redis.close()

    assert before == [1, 2, 3, 0], "urgent first, then the others in arrival order"
    assert after_a_start == [0, 1, 2, None]


def test_a_watchers_first_read_is_the_job_with_its_place_in_one_step(redis_url: str) -> None:
    queue = f"visionq-test-placed-{time.time_ns()}"
    ahead, waiting, taken = new_record(), new_record(), new_record()
    for record in (taken, ahead, waiting):
        create(redis_url, record, queue=queue)
    tracker = JobTracker(redis.Redis.from_url(redis_url), worker_id="test:1", result_ttl=RESULT_TTL,
                         stale_after=STALE_AFTER, queue=queue)  # fmt: skip
    tracker.take(taken.job_id)
    tracker.redis.close()

    Read = tuple[JobRecord | None, Place | None]

    async def read() -> list[tuple[Read, Read]]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL, queue=queue)
            return [
                (await store.get_placed(job_id), (await store.get(job_id), await store.place(job_id)))
                for job_id in (ahead.job_id, waiting.job_id, taken.job_id, "no-such-job")
            ]
        finally:
            await client.aclose()

    pairs = asyncio.run(read())

    assert all(placed == apart for placed, apart in pairs), "the same as a read of the job and one of its place"
    (_, first), (_, second), (running, not_waiting), (unknown, nowhere) = (placed for placed, _ in pairs)
    assert (first.position if first else None, second.position if second else None) == (0, 1)
    assert running is not None
    assert (running.status, not_waiting) == ("processing", None)
    assert (unknown, nowhere) == (None, None)


def test_the_aged_scan_finds_the_jobs_that_arrived_at_their_priority_before_a_moment(redis_url: str) -> None:
    queue = f"visionq-test-aged-{time.time_ns()}"
    early = new_record().model_copy(update={"priority": Priority.LOW})
    create(redis_url, early, queue=queue)
    between = time.time() + 0.002  # past the millisecond of the first ticket
    time.sleep(0.004)
    late, other = new_record().model_copy(update={"priority": Priority.LOW}), new_record()
    create(redis_url, late, queue=queue)
    create(redis_url, other, queue=queue)  # normal priority: never among the low ones

    async def aged(older_than: float) -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            store = JobStore(client, result_ttl=RESULT_TTL, image_ttl=IMAGE_TTL, queue=queue)
            return await store.aged(Priority.LOW, older_than)
        finally:
            await client.aclose()

    assert asyncio.run(aged(between)) == [early.job_id]
    assert asyncio.run(aged(time.time() + 1)) == [early.job_id, late.job_id], "oldest first"
    assert asyncio.run(aged(between - 1)) == []
