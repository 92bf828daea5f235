"""Job vocabulary (statuses, stages, priorities, allowed changes) and the Redis key names of HLD §3.3."""

from __future__ import annotations

import pytest

from visionq.jobs import keys
from visionq.wire.states import WORKER_STAGES, JobStatus, Priority, Stage

LIVE = (JobStatus.PENDING, JobStatus.PROCESSING)
TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED)
JOB_ID = "3f0c1d2e-4b5a-4c6d-8e7f-901234567890"


def test_stage_progress_follows_the_design() -> None:
    assert Stage.QUEUED.progress == 0
    assert Stage.INITIALIZING.progress == 0
    assert Stage.PREPROCESSING.progress == 25
    assert Stage.INFERENCE.progress == 50
    assert Stage.POSTPROCESSING.progress == 75
    assert Stage.COMPLETED.progress == 100


def test_worker_stages_run_in_order_of_progress() -> None:
    assert WORKER_STAGES == (Stage.INITIALIZING, Stage.PREPROCESSING, Stage.INFERENCE, Stage.POSTPROCESSING)
    progress = [stage.progress for stage in WORKER_STAGES]
    assert progress == sorted(progress)


def test_only_completed_failed_cancelled_and_expired_are_terminal() -> None:
    assert {status for status in JobStatus if status.terminal} == set(TERMINAL)


def test_urgent_is_served_before_high_before_normal_before_low() -> None:
    order = [Priority.URGENT, Priority.HIGH, Priority.NORMAL, Priority.LOW]
    steps = [priority.broker_priority for priority in order]
    assert steps == sorted(steps)
    assert len(set(steps)) == len(steps)


def test_broker_priorities_are_the_steps_of_kombus_redis_transport() -> None:
    assert {priority.broker_priority for priority in Priority} <= set(range(10))
    assert Priority.URGENT.broker_priority == 0


def test_job_keys_are_named_as_in_the_design() -> None:
    assert keys.status(JOB_ID) == f"job:{{{JOB_ID}}}:status"
    assert keys.result(JOB_ID) == f"job:{{{JOB_ID}}}:result"
    assert keys.image(JOB_ID) == f"job:{{{JOB_ID}}}:image"
    assert keys.events(JOB_ID) == f"job:{{{JOB_ID}}}:events"


def test_a_job_s_id_is_read_back_from_its_events_channel() -> None:
    assert keys.job_id_from_events(keys.events(JOB_ID)) == JOB_ID


def test_the_highest_priority_step_uses_the_bare_queue_name() -> None:
    assert keys.priority_list("visionq", 0) == "visionq"


@pytest.mark.parametrize("step", [3, 6, 9])
def test_other_priority_steps_get_a_suffix(step: int) -> None:
    assert keys.priority_list("visionq", step) == f"visionq:{step}"


@pytest.mark.parametrize("job_id", [JOB_ID, "78c7592f-82d6-49ce-a889-74967d4f9c1d", "job-with:colons:events"])
def test_the_job_id_round_trips_through_its_events_channel(job_id: str) -> None:
    assert keys.job_id_from_events(keys.events(job_id)) == job_id


def test_worker_and_stats_keys_live_under_the_visionq_prefix() -> None:
    assert keys.worker("w1@host") == "visionq:worker:w1@host"
    assert keys.inference_stats("efficientnet-lite0@1") == "visionq:stats:inference:efficientnet-lite0@1"


def test_idempotency_fingerprints_keep_field_boundaries() -> None:
    from visionq.jobs.idempotency import fingerprint

    assert fingerprint(b"ab", "c") != fingerprint(b"a", "bc")
    assert fingerprint(b"img", "latest", "normal") == fingerprint(b"img", "latest", "normal")


def test_idempotency_keys_are_per_owner_and_bounded_whatever_the_header() -> None:
    from visionq.jobs import keys

    one = keys.Shards()
    assert keys.idempotency("alice", "k", one) != keys.idempotency("bob", "k", one)
    assert len(keys.idempotency("alice", "x" * 255, one)) == len(keys.idempotency("alice", "y", one))


def test_on_one_redis_there_is_one_shard_and_the_queue_wide_names_read_as_before() -> None:
    one = keys.Shards()
    job_id = one.new_id()

    assert one.names == ("",)
    assert one.of(job_id) == ""
    assert keys.live_jobs("") == "visionq:jobs:live"
    assert keys.waiting("visionq", "") == "visionq:queue:visionq:waiting"
    assert keys.idempotency("alice", "k", one).startswith("visionq:idem:alice:")


CLUSTER = keys.Shards(keys.CLUSTER_SHARDS)


@pytest.mark.parametrize("shard", CLUSTER.names)
def test_a_job_made_in_a_shard_has_every_key_in_that_shards_slot(shard: str) -> None:
    import uuid

    from redis.crc import key_slot

    job_id = CLUSTER.new_id(shard)
    slots = {
        key_slot(name.encode())
        for name in (keys.status(job_id), keys.result(job_id), keys.image(job_id), keys.events(job_id),
                     keys.deliveries(job_id), keys.live_jobs(shard), keys.waiting("visionq", shard),
                     keys.job_stats(shard), keys.archive_outbox(shard), keys.callbacks_due(shard))
    }  # fmt: skip

    assert CLUSTER.of(job_id) == shard
    assert uuid.UUID(job_id).version == 4, "still a UUID 4"
    assert slots == {keys.slot(shard)}, "one slot: each Lua step touches one"


def test_the_shards_spread_over_every_third_and_quarter_of_the_slots() -> None:
    """So that every master of an evenly split cluster of 3 (or 4) holds some."""
    slots = sorted(keys.slot(name) for name in CLUSTER.names)
    for masters in (3, 4):
        owners = {slot * masters // keys.SLOTS for slot in slots}
        assert owners == set(range(masters))


def test_named_things_keep_their_shard_and_batches_name_theirs_in_their_key() -> None:
    from visionq.jobs.batches import batch_key

    batch_id = CLUSTER.new_id()
    name = keys.idempotency("alice", "k", CLUSTER)

    assert name.startswith("visionq:{vq")
    assert CLUSTER.for_name("idem:alice") == CLUSTER.for_name("idem:alice")
    assert CLUSTER.of(batch_key(batch_id)) == CLUSTER.of(batch_id)
    with pytest.raises(ValueError, match="not the id of a job"):
        CLUSTER.of("3f0c1d2e-4b5a-4c6d-8e7f-901234567890")  # not made for this layout: its slot is no shard's
