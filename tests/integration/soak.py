"""The soak: many jobs over mixed priorities and models, while worker processes are SIGKILLed and Redis is
restarted at random (seeded), then a count of what became of every job. On the `sentinel` topology (a master, a
replica, three sentinels) a Redis fault is a SIGKILL of the master: the sentinels promote the replica, and the
killed server comes back empty as the new master's replica.

Used by `tests/integration/test_soak.py` (a reduced run in CI) and `bench/soak.py` (the full run).
Everything is real: a private redis-server with AOF, `visionq worker` processes, the API under uvicorn,
the built-in models, the SQLite archive. A client submits each job with an `Idempotency-Key` and
retries on 503 or a dropped connection, as the SDK would, so a retried submit never makes a second job.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from integration.stack import (
    FAST_RECOVERY,
    RABBITMQ,
    ApiProcess,
    ApiServer,
    WorkerProcess,
    delete_broker_queues,
    wait_for,
)
from integration.topologies import SETTLE_TIMEOUT, ClusterSet, SentinelSet, state_client
from visionq.archive.repository import Archive
from visionq.connections import shards
from visionq.embedded import EmbeddedRedis
from visionq.jobs import keys
from visionq.settings import Settings

PRIORITIES = ("low", "normal", "high")
#: Models drawn for jobs, each as likely as it appears here (lite0 is `latest`, the common case).
MODELS = ("efficientnet-lite0", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass(frozen=True)
class SoakPlan:
    jobs: int = 2000
    seed: int = 20261127
    workers: int = 2
    #: Faults in the run, each after a seeded number of accepted jobs (so the run is the same on a fast
    #: machine and a slow one), spread over its middle 90%.
    faults: int = 30
    #: The share of faults that are Redis restarts; the others SIGKILL a worker (and its pool).
    redis_share: float = 0.3
    #: Jobs accepted but not yet finished beyond which the clients wait: the queue stays short, so the
    #: faults land on jobs in hand rather than on a backlog.
    max_in_flight: int = 30
    submitters: int = 2
    settle_timeout: float = 300.0
    #: `single`: one redis-server with AOF, restarted; `sentinel`: a Sentinel-managed master and replica, failed over;
    #: `cluster`: job state on a Redis Cluster of 3 masters and 3 replicas, one master SIGKILLed per fault (its replica
    #: takes over), the broker on RabbitMQ.
    topology: str = "single"
    #: Replicas of the Sentinel topology's master.
    replicas: int = 1


@dataclass
class SoakReport:
    plan: SoakPlan
    accepted: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    """`completed`, or `failed:<code>`: how many jobs ended so."""
    lost: list[str] = field(default_factory=list)
    """Accepted jobs that are gone from Redis, or were never finished."""
    duplicated: int = 0
    """Jobs finished beyond one per submission, by Redis's own counters: a second completion of a job, or a
    second job made by a retried submit that ran (a stray failed unrun, its submit refused, is no result)."""
    strays: dict[str, str] = field(default_factory=dict)
    """Jobs in Redis that no client was told of, by id, with `status[:error code], attempts N`: a submit that
    stored a job, then failed to queue it and was answered 503. Harmless unless one ran (then `duplicated`
    counts it); the API fails them when it can, the sweeper later otherwise."""
    refusals: list[str] = field(default_factory=list)
    """Submits answered with an error a client cannot retry."""
    archive_mismatches: list[str] = field(default_factory=list)
    """For each job whose archive row disagrees with Redis: its id, both statuses and when each was written."""
    failures: dict[str, str] = field(default_factory=dict)
    """Each failed job's error message, by id."""
    worker_kills: int = 0
    redis_restarts: int = 0
    retried_submits: int = 0
    """Submits answered 503 or cut off, sent again with the same `Idempotency-Key`."""
    replays: int = 0
    """Retried submits answered 200 with the job the first one had made (it was accepted, then cut off)."""
    failovers: list[float] = field(default_factory=list)
    """Seconds from each Redis fault to the next submit accepted (sentinel: the master's SIGKILL; single: the stop)."""
    refused_during_failover: int = 0
    """Submits answered 503 or cut off between a fault and the next accepted submit."""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        outcomes = ", ".join(f"{name} {count}" for name, count in sorted(self.outcomes.items()))
        return (
            f"soak (seed {self.plan.seed}): {self.plan.jobs} jobs, {self.plan.workers} workers, "
            f"{self.worker_kills} worker SIGKILLs, {self.redis_restarts} Redis restarts, {self.seconds:.0f} s\n"
            f"  accepted {self.accepted} ({self.retried_submits} submits retried, {self.replays} replayed); "
            f"{outcomes}\n"
            f"  lost {len(self.lost)}, duplicated {self.duplicated}, strays {len(self.strays)}, "
            f"archive mismatches {len(self.archive_mismatches)}, refused {len(self.refusals)}\n"
            f"  back to accepting after each Redis fault: {', '.join(f'{s:.1f} s' for s in self.failovers) or '-'}; "
            f"submits refused meanwhile {self.refused_during_failover}"
            + "".join(f"\n  stray {job_id}: {what}" for job_id, what in sorted(self.strays.items()))
            + "".join(f"\n  archive mismatch {what}" for what in self.archive_mismatches)
        )


class _Soak:
    def __init__(self, plan: SoakPlan, root: Path, image: bytes) -> None:
        self.plan = plan
        self.image = image
        self.redis = EmbeddedRedis(root / "redis", persistent=True)
        self.sentinels = SentinelSet(root / "sentinel", replicas=plan.replicas) if plan.topology == "sentinel" else None
        self.cluster = ClusterSet(root / "cluster") if plan.topology == "cluster" else None
        where: dict[str, Any] = {"redis_url": self.redis.url}
        queue = "visionq-soak"
        if self.sentinels is not None:
            where = self.sentinels.start().settings()
        if self.cluster is not None:  # queues of its own on the machine's RabbitMQ, deleted at the end
            where, queue = {**self.cluster.start().settings(), "broker_url": RABBITMQ}, f"visionq-soak-{plan.seed}"
        self.settings = Settings(
            **{**FAST_RECOVERY, "log_level": "ERROR"},
            requeue_lost_after=5.0,  # a fetch cut off by a Redis restart loses its message: queue it again soon
            **where,
            data_dir=root / "data",
            queue=queue,
            callback_queue=f"{queue}-callbacks",
            warm_models=sorted(set(MODELS)),
        )
        self.shards = shards(self.settings)
        self.workers = [WorkerProcess(self.settings) for _ in range(plan.workers)]
        # On Sentinel, `visionq api` as its own process: redis-py's asyncio clients leave connections they abandoned
        # during a failover to the garbage collector, whose warnings would land on whichever test ran next here.
        replicated = self.sentinels is not None or self.cluster is not None
        self.api: ApiServer | ApiProcess = ApiProcess(self.settings) if replicated else ApiServer(self.settings)
        self.client = state_client(self.settings)
        draw = random.Random(plan.seed)
        self.jobs = [(draw.choice(PRIORITIES), draw.choice(MODELS)) for _ in range(plan.jobs)]
        self.job_ids: dict[int, str] = {}
        #: Submits answered with something a client cannot retry: the soak fails on any.
        self.refusals: list[str] = []
        self.report = SoakReport(plan)
        self._next = 0
        self._lock = threading.Lock()
        self._done = threading.Event()
        #: Job indices at which a fault is due, drawn here so that the clients can wait for each to begin.
        draw = random.Random(plan.seed + 1)
        self._fault_points = sorted(draw.sample(range(plan.jobs // 20, plan.jobs - plan.jobs // 20), plan.faults))
        self._fault_draw = draw
        #: The clients take no job at or past the next fault's point until that fault has begun, so that every fault
        #: lands while jobs are still being submitted (else, on a fast machine, the last ones came after the last
        #: submit and "back to accepting" was never measured).
        self._gate = threading.Condition(self._lock)
        self._faults_begun = 0
        #: When the last Redis fault began, until a submit is accepted after it.
        self._fault_at: float | None = None

    def run(self) -> SoakReport:
        started = time.monotonic()
        if self.sentinels is None and self.cluster is None:
            self.redis.start()
        for worker in self.workers:
            worker.start()
        self.api.start()
        try:
            faults = threading.Thread(target=self._faults, name="soak-faults")
            faults.start()
            with httpx.Client(base_url=self.api.url, timeout=30) as http:
                submitters = [threading.Thread(target=self._submit, args=(http,)) for _ in range(self.plan.submitters)]
                for thread in submitters:
                    thread.start()
                for thread in submitters:
                    thread.join()
            self._done.set()
            faults.join()
            self._settle()
            self._count()
        finally:
            self.api.stop()
            for worker in self.workers:
                worker.stop()
            self.client.close()
            if self.sentinels is not None:
                self.sentinels.stop()
            elif self.cluster is not None:
                self.cluster.stop()
                delete_broker_queues(self.settings)
            else:
                self.redis.stop()
        self.report.seconds = time.monotonic() - started
        return self.report

    # --- clients -----------------------------------------------------------------------------

    def _take(self) -> int | None:
        with self._gate:
            self._gate.wait_for(self._may_take)
            if self._next >= len(self.jobs):
                return None
            self._next += 1
            return self._next - 1

    def _may_take(self) -> bool:
        """Whether a client may go on: no fault is due at the next job's index that has not begun."""
        due = self._fault_points[self._faults_begun :]
        return self._next >= len(self.jobs) or not due or self._next < due[0]

    def _submit(self, http: httpx.Client) -> None:
        while (index := self._take()) is not None:
            self._wait_for_room()
            priority, model = self.jobs[index]
            headers = {"Idempotency-Key": f"soak-{self.plan.seed}-{index}"}
            while True:
                sent = time.monotonic()
                try:
                    answer = http.post(
                        "/classify",
                        files={"file": ("cat.jpg", self.image)},
                        data={"priority": priority, "model_version": model},
                        headers=headers,
                    )
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code in (200, 202):
                    self._accepted(sent)
                    break
                if answer is not None and answer.status_code not in (409, 503):  # 409: the key is still held
                    self.refusals.append(f"{answer.status_code} {answer.text}")
                    return
                with self._lock:
                    self.report.retried_submits += 1
                    self.report.refused_during_failover += self._fault_at is not None
                time.sleep(0.1)
            with self._lock:
                self.job_ids[index] = answer.json()["job_id"]
                self.report.replays += answer.status_code == 200

    def _accepted(self, sent: float) -> None:
        """A submit sent at `sent` was accepted: the service accepts again, if it was sent after the last fault
        (one sent before it may have been answered before the fault reached it)."""
        with self._lock:
            if self._fault_at is not None and sent >= self._fault_at:
                self.report.failovers.append(time.monotonic() - self._fault_at)
                self._fault_at = None

    def _wait_for_room(self) -> None:
        while True:
            try:
                finished = self._finished()
            except redis.RedisError:
                return  # Redis is down: submit, and see what the service answers meanwhile
            with self._lock:
                in_flight = len(self.job_ids) - finished
            if in_flight < self.plan.max_in_flight:
                return
            time.sleep(0.02)

    # --- faults ------------------------------------------------------------------------------

    def _faults(self) -> None:
        try:
            self._inject()
        finally:  # however it ended, no client waits for a fault that will not come
            with self._gate:
                self._faults_begun = len(self._fault_points)
                self._gate.notify_all()

    def _inject(self) -> None:
        draw = self._fault_draw
        for accepted in self._fault_points:
            while len(self.job_ids) < accepted and not self._done.is_set() and not self.refusals:
                time.sleep(0.01)
            if draw.random() < self.plan.redis_share:
                if self.sentinels is not None:
                    self.sentinels.fail_over(killed=self._faulted)
                elif self.cluster is not None:
                    self.cluster.fail_over(draw.choice(self.cluster.masters()), killed=self._faulted)
                else:
                    self.redis.stop()  # SIGTERM: Redis flushes its AOF, as on a planned restart
                    self._faulted()
                    time.sleep(draw.uniform(0.2, 1.5))
                    self.redis.start()
                self.report.redis_restarts += 1
            else:
                worker = draw.choice(self.workers)
                worker.kill()
                self._begun()
                worker.start()
                self.report.worker_kills += 1

    def _faulted(self) -> None:
        """Redis is down now: the time to accepting again counts from here, and the clients go on submitting."""
        with self._lock:
            self._fault_at = time.monotonic()
        self._begun()

    def _begun(self) -> None:
        with self._gate:
            self._faults_begun += 1
            self._gate.notify_all()

    # --- the count ---------------------------------------------------------------------------

    def _statuses(self) -> dict[str, str | None]:
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in self.job_ids.values():
                pipe.hget(keys.status(job_id), "status")
            return dict(zip(self.job_ids.values(), pipe.execute(), strict=True))

    def _settle(self) -> None:
        def all_terminal() -> bool:
            return all(state in TERMINAL or state is None for state in self._statuses().values())

        for _ in range(3):
            masters = self._masters()
            with contextlib.suppress(AssertionError):  # what never finished is counted below, as lost
                wait_for(all_terminal, self.plan.settle_timeout, "every accepted job to finish", interval=0.5)
            wait_for(lambda: self._archive_backlog() == 0, 60, "the archive to catch up", 0.2)
            if self._masters() == masters:
                return

    def _masters(self) -> tuple[int, ...]:
        """Wait until each piece of data has one master, and read from them afresh: counted on a second master (an
        old one that a failover is about to turn into a replica, discarding what it took meanwhile), the jobs and
        Redis's counters could disagree, or agree on what is lost. Their ports (none for one server)."""
        if self.sentinels is not None:
            wait_for(self.sentinels.agreed, SETTLE_TIMEOUT, "one master, with the others its replicas", 0.1)
            self.client.connection_pool.disconnect()  # its connections reach the master of their day
            return (self.sentinels.master_port(),)
        if self.cluster is not None:  # a cluster client follows the slots' moves by itself
            wait_for(self.cluster.settled, SETTLE_TIMEOUT, "the cluster to be ok, its replicas in sync", 0.1)
            return tuple(server.port for server in self.cluster.masters())
        return ()

    def _count(self) -> None:
        report = self.report
        report.accepted = len(self.job_ids)
        outcomes: Counter[str] = Counter()
        archive = Archive(self.settings.archive_url)
        try:
            for job_id, state in self._statuses().items():
                if state not in TERMINAL:
                    report.lost.append(job_id)
                    continue
                code, message = self.client.hmget(keys.status(job_id), ["error_code", "error_message"])
                outcomes["completed" if state == "completed" else f"{state}:{code!s}"] += 1
                if state != "completed":
                    report.failures[job_id] = str(message)
                row = archive.find(job_id)
                if row is None or row.status != state:
                    updated = self.client.hget(keys.status(job_id), "updated_at")
                    archived = f"{row.status} of {row.updated_at.isoformat()}" if row else "no row"
                    report.archive_mismatches.append(f"{job_id}: {state} of {updated!s} in Redis, {archived} archived")
        finally:
            archive.close()
        report.outcomes = dict(outcomes)
        report.refusals = self.refusals
        ours = {keys.status(job_id) for job_id in self.job_ids.values()}
        unrun = 0  # strays that reached a terminal state without running: failed by the API that refused them
        for key in self.client.scan_iter(keys.status("*")):
            if key in ours:
                continue
            stray, code, attempts = (
                str(value) if value else "" for value in self.client.hmget(key, ["status", "error_code", "attempts"])
            )
            report.strays[str(key).split(":")[1].strip("{}")] = (
                f"{stray}{f':{code}' if code else ''}, attempts {attempts or 0}"
            )
            unrun += stray in TERMINAL and not int(attempts or 0)
        report.duplicated = self._finished() - sum(outcomes.values()) - unrun

    def _finished(self) -> int:
        """Jobs that reached a terminal state, by Redis's own counters (summed over the shards of job state)."""
        with self.client.pipeline(transaction=False) as pipe:
            for shard in self.shards.names:
                pipe.hmget(keys.job_stats(shard), sorted(TERMINAL))
            return sum(int(count or 0) for counts in pipe.execute() for count in counts)

    def _archive_backlog(self) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for shard in self.shards.names:
                pipe.zcard(keys.archive_outbox(shard))
            return sum(pipe.execute())


def run_soak(plan: SoakPlan, root: Path, image: bytes) -> SoakReport:
    """Run the soak in `root` (its Redis data, archive and logs) with `image` as every job's upload."""
    return _Soak(plan, root, image).run()
