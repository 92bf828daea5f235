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
    assert keys.status(JOB_ID) == f"job:{JOB_ID}:status"
    assert keys.result(JOB_ID) == f"job:{JOB_ID}:result"
    assert keys.image(JOB_ID) == f"job:{JOB_ID}:image"
    assert keys.events(JOB_ID) == f"job:{JOB_ID}:events"


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

    assert keys.idempotency("alice", "k") != keys.idempotency("bob", "k")
    assert len(keys.idempotency("alice", "x" * 255)) == len(keys.idempotency("alice", "y"))
