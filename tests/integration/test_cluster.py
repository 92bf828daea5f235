"""Job state on a real Redis Cluster (3 masters, 3 replicas: `ClusterSet`), the broker on RabbitMQ (kombu has no
Cluster transport). Each flow a client relies on: jobs spread over every master, each followed over the WebSocket
to its result, an idempotent retry, a signed callback, priorities (a queue position counts every shard's jobs) and
cancellation; and a master SIGKILLed under load loses no accepted job and runs none twice (the soak, on the
cluster topology)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from factories import cat_variants
from integration.conftest import StackFactory
from integration.receivers import receiving
from integration.soak import SoakPlan, run_soak
from integration.stack import (
    RABBITMQ,
    ApiServer,
    CallbackWorkerProcess,
    WorkerProcess,
    delete_broker_queues,
    started_at,
    submit,
    submitted_twice_and_followed,
    wait_for,
    wait_terminal,
)
from integration.topologies import ClusterSet
from tests_support import CAT_CLASSES
from visionq.callbacks.signing import verify
from visionq.jobs import keys
from visionq.settings import Settings

CAT = cat_variants()["jpeg"]
SECRET = "cluster-callback-secret"
Stack = tuple[Settings, WorkerProcess, ApiServer, ClusterSet]


@pytest.fixture(scope="module")
def stack(start_stack: StackFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ClusterSet(tmp_path_factory.mktemp("cluster")) as cluster:
        name = f"cluster-{uuid.uuid4().hex[:8]}"
        settings, worker, api = start_stack(
            name,
            **cluster.settings(),
            broker_url=RABBITMQ,
            callback_secret=SECRET,
            callback_allow_private=True,  # the receiver listens on 127.0.0.1
            callback_queue=f"visionq-test-{name}-deliveries",
        )
        deliverer = CallbackWorkerProcess(settings)
        deliverer.start()
        yield settings, worker, api, cluster
        for process in (deliverer, worker, api):  # consumers first: a running one would declare its queue again
            process.stop()
        delete_broker_queues(settings, f"{settings.queue}-held", f"{settings.queue}-kept")


def test_jobs_spread_over_every_master_and_each_is_followed_to_its_result(stack: Stack) -> None:
    settings, _, api, cluster = stack
    first, again, messages = submitted_twice_and_followed(api, CAT)
    with httpx.Client(base_url=api.url, timeout=30) as http:
        others = [submit(http, CAT).json()["job_id"] for _ in range(23)]
        finals = [wait_terminal(http, job_id) for job_id in others]
        metrics = http.get("/metrics").text
    job_ids = [first.json()["job_id"], *others]
    masters = {cluster.master_of_key(keys.status(job_id)).port for job_id in job_ids}
    completed = [line for line in metrics.splitlines() if line.startswith('visionq_jobs_total{status="completed"}')]

    assert (again.status_code, again.json()["job_id"]) == (200, first.json()["job_id"]), "the retry replays"
    assert messages[-1]["predictions"][0]["class_id"] in CAT_CLASSES, "the last message is the result"
    assert {final["status"] for final in finals} == {"completed"}
    assert masters == {master.port for master in cluster.masters()}, "job state spreads over all three masters"
    assert float(completed[0].split()[-1]) >= len(job_ids), "the figures sum every shard's"


def test_the_callback_is_delivered_signed(stack: Stack) -> None:
    with receiving() as (state, url), httpx.Client(base_url=stack[2].url, timeout=30) as http:
        job_id = submit(http, CAT, callback_url=url).json()["job_id"]
        wait_for(lambda: state.requests, 60, "the callback")
    headers, body = state.requests[0]
    assert json.loads(body)["job_id"] == job_id
    assert verify(body, SECRET, headers["x-visionq-signature"])


def test_urgent_work_starts_first_and_a_cancelled_job_never_runs(stack: Stack) -> None:
    held = stack[0].model_copy(update={"queue": f"{stack[0].queue}-held", "worker_concurrency": 1})
    with ApiServer(held) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        lows = [submit(http, CAT, priority="low").json()["job_id"] for _ in range(6)]
        cancelled = submit(http, CAT, priority="normal").json()["job_id"]
        urgent = submit(http, CAT, priority="urgent").json()["job_id"]
        places = [http.get(f"/status/{job_id}").json()["queue_position"] for job_id in [*lows, urgent]]
        refused = http.delete(f"/jobs/{cancelled}")
        with WorkerProcess(held):  # one job at a time, from the queue as the broker orders it
            ended = {job: wait_terminal(http, job) for job in [*lows, urgent, cancelled]}
            started = {job: started_at(http.get(f"/result/{job}").json()) for job in [*lows, urgent]}
    shards = {keys.Shards(keys.CLUSTER_SHARDS).of(job_id) for job_id in lows}

    assert len(shards) > 1, "the low jobs are in several shards"
    # Ahead of each low job: the urgent one, the normal one (not cancelled yet) and the lows before it.
    assert places == [2, 3, 4, 5, 6, 7, 0], "a place counts the jobs of every shard ahead of it"
    assert refused.status_code == 200
    assert (ended[cancelled]["status"], ended[cancelled]["attempts"]) == ("cancelled", 0), "it never ran"
    assert all(ended[job]["status"] == "completed" for job in [*lows, urgent])
    assert all(started[urgent] < started[low] for low in lows), "urgent went first"


def test_the_queue_keeper_expires_and_promotes_the_jobs_of_every_shard(stack: Stack) -> None:
    kept = stack[0].model_copy(
        update={"queue": f"{stack[0].queue}-kept", "queue_pass_interval": 0.2, "priority_aging": 0.5}
    )
    with ApiServer(kept) as server, httpx.Client(base_url=server.url, timeout=30) as http:  # no worker: all wait
        expiring = [submit(http, CAT, priority="urgent", deadline=1).json()["job_id"] for _ in range(6)]
        aging = [submit(http, CAT, priority="low").json()["job_id"] for _ in range(6)]
        ended = {job: wait_terminal(http, job) for job in expiring}
        wait_for(
            lambda: all(http.get(f"/status/{job}").json().get("promoted_to") == "urgent" for job in aging),
            30,
            "every low job to reach urgent",
        )
        for job in aging:
            http.delete(f"/jobs/{job}")
    shards = keys.Shards(keys.CLUSTER_SHARDS)

    assert len({shards.of(job) for job in expiring}) > 1
    assert len({shards.of(job) for job in aging}) > 1
    assert {ended[job]["status"] for job in expiring} == {"expired"}


def test_a_sigkilled_master_loses_no_accepted_job_and_runs_none_twice(tmp_path: Path) -> None:
    plan = SoakPlan(jobs=60, seed=20261206, faults=2, redis_share=1.0, topology="cluster", settle_timeout=120)
    report = run_soak(plan, tmp_path, CAT)
    sys.stdout.write(report.summary() + "\n")  # the recovery figures, with -s
    assert report.redis_restarts == plan.faults, "each fault killed a master"
    assert report.refusals == []
    assert report.accepted == plan.jobs
    assert report.lost == []
    assert report.duplicated == 0
    assert report.archive_mismatches == []
    assert report.outcomes == {"completed": plan.jobs}, report.failures
