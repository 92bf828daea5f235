"""Job state and the Celery broker on a Sentinel-managed Redis (a master, a replica, three sentinels): the API and
the worker find the master through the sentinels, a 202 waits until the replica holds the job, and after the
master is SIGKILLed and a replica promoted, both carry on with no restart and no accepted job lost."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from factories import cat_variants
from integration.conftest import StackFactory
from integration.receivers import Receiver, receiving
from integration.soak import SoakPlan, run_soak
from integration.stack import (
    ApiServer,
    CallbackWorkerProcess,
    WorkerProcess,
    submit,
    submitted_twice_and_followed,
    wait_for,
    wait_terminal,
)
from integration.topologies import SentinelSet, state_client
from tests_support import CAT_CLASSES
from visionq.callbacks.signing import verify
from visionq.settings import Settings

CAT = cat_variants()["jpeg"]
JOB_TIMEOUT = 60.0
FAILOVER_KEY = "visionq:test:failover"


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    with SentinelSet(tmp_path_factory.mktemp("sentinel")) as cluster:
        yield cluster


SECRET = "sentinel-callback-secret"


@pytest.fixture(scope="module")
def stack(sentinels: SentinelSet, start_stack: StackFactory) -> Iterator[tuple[Settings, WorkerProcess, ApiServer]]:
    settings, worker, api = start_stack(
        "sentinel",
        **sentinels.settings(),
        callback_secret=SECRET,
        callback_allow_private=True,  # the receiver listens on 127.0.0.1
        callback_queue="visionq-test-sentinel-deliveries",
    )
    deliverer = CallbackWorkerProcess(settings)
    deliverer.start()
    yield settings, worker, api
    deliverer.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    with receiving() as (state, url):
        yield state, url


def test_a_job_runs_through_the_master_the_sentinels_name_and_is_followed_over_the_websocket(
    stack: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    first, again, messages = submitted_twice_and_followed(stack[2], CAT)
    job_id = first.json()["job_id"]
    assert first.status_code == 202
    assert (again.status_code, again.json()["job_id"]) == (200, job_id), "the retry replays the first answer"
    assert messages[-1]["job_id"] == job_id
    assert messages[-1]["predictions"][0]["class_id"] in CAT_CLASSES, "the last message is the result"
    assert messages[-2]["status"] == "completed", "then the result, once it completed"


def test_the_callback_is_delivered_signed_through_the_sentinels_master(
    stack: tuple[Settings, WorkerProcess, ApiServer], receiver: tuple[Receiver, str]
) -> None:
    _, _, api = stack
    state, url = receiver
    received = state.requests
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job_id = submit(http, CAT, callback_url=url).json()["job_id"]
        wait_for(lambda: received, JOB_TIMEOUT, "the callback")
    headers, body = received[0]
    assert json.loads(body)["job_id"] == job_id
    assert verify(body, SECRET, headers["x-visionq-signature"])


def test_urgent_work_goes_first_and_a_queued_job_can_be_cancelled(
    stack: tuple[Settings, WorkerProcess, ApiServer],
) -> None:
    settings, _, _ = stack
    # An API on a queue no worker serves: its jobs wait, in the order of their priorities.
    held = settings.model_copy(update={"queue": f"{settings.queue}-held"})
    with ApiServer(held) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        low, urgent = (submit(http, CAT, priority=p).json()["job_id"] for p in ("low", "urgent"))
        places = {job: http.get(f"/status/{job}").json()["queue_position"] for job in (low, urgent)}
        cancelled = http.delete(f"/jobs/{low}")
        after = http.get(f"/status/{low}").json()
    assert places == {urgent: 0, low: 1}
    assert cancelled.status_code in (200, 202)
    assert after["status"] == "cancelled"


def test_a_202_waits_for_a_replica_and_without_one_the_answer_is_503(
    stack: tuple[Settings, WorkerProcess, ApiServer], sentinels: SentinelSet
) -> None:
    _, _, api = stack
    replica = next(
        server for server in [sentinels.master, *sentinels.replicas] if server.port != sentinels.master_port()
    )
    assert replica.process is not None
    with httpx.Client(base_url=api.url, timeout=30) as http:
        os.kill(replica.process.pid, signal.SIGSTOP)  # alive, connected, acknowledging nothing
        try:
            key = {"Idempotency-Key": f"unconfirmed-{uuid.uuid4()}"}
            refused = http.post("/classify", files={"file": ("cat.jpg", CAT)}, headers=key)
            replay_refused = http.post("/classify", files={"file": ("cat.jpg", CAT)}, headers=key)
        finally:
            os.kill(replica.process.pid, signal.SIGCONT)
        retried = http.post("/classify", files={"file": ("cat.jpg", CAT)}, headers=key)
        outcome = wait_terminal(http, retried.json()["job_id"], timeout=JOB_TIMEOUT)
    assert refused.status_code == 503
    assert refused.json()["code"] == "broker_unavailable"
    assert "replica" in refused.json()["detail"]
    assert replay_refused.status_code == 503, "nor is the job's answer replayed before a replica holds it"
    assert retried.status_code in (200, 202), "the same key finds the job the refused request made"
    assert outcome["status"] == "completed", "it was made once, and runs"


def test_a_sigkilled_master_loses_no_accepted_job_and_the_service_accepts_again_by_itself(tmp_path: Path) -> None:
    plan = SoakPlan(jobs=60, seed=20261206, faults=2, redis_share=1.0, topology="sentinel", settle_timeout=120)
    report = run_soak(plan, tmp_path, CAT)
    sys.stdout.write(report.summary() + "\n")  # the recovery figures, with -s
    assert report.redis_restarts == plan.faults, "each fault killed the master the sentinels named"
    assert len(report.failovers) == plan.faults, "the service accepted work again after each failover"
    assert report.refusals == []
    assert report.accepted == plan.jobs
    assert report.lost == []
    assert report.duplicated == 0
    assert report.archive_mismatches == []
    assert report.outcomes == {"completed": plan.jobs}, report.failures


def test_the_job_state_client_follows_the_promoted_master(tmp_path: Path) -> None:
    with SentinelSet(tmp_path) as cluster:
        settings = Settings(**cluster.settings(), data_dir=tmp_path / "data")
        client = state_client(settings)
        client.set(FAILOVER_KEY, "before")
        assert client.wait(1, 5000) == 1, "the replica holds it"
        first = cluster.master_port()
        cluster.kill_master()
        wait_for(lambda: cluster.master_port() != first, 30, "a replica to be promoted", 0.2)
        wait_for(lambda: _reads(client) == "before", 30, "the client to reach the new master", 0.2)
        client.close()


def _reads(client: redis.Redis) -> str | None:
    try:
        value = client.get(FAILOVER_KEY)
    except redis.RedisError:
        time.sleep(0.1)
        return None
    return str(value) if value is not None else None
