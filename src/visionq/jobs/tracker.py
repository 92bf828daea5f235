"""JobTracker: the worker's side of job state in Redis (claim, advance, complete, fail, sweep)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

import orjson
from redis import Redis
from redis.cluster import RedisCluster

from visionq.jobs import cache, keys, scripts
from visionq.jobs.queue import new_message_id, task_message
from visionq.jobs.records import JobRecord, isoformat, utcnow
from visionq.jobs.replication import ReplicaPolicy, check
from visionq.jobs.steps import Steps
from visionq.jobs.store import (
    DEFAULT_QUEUE,
    QUEUED_FIELD,
    STALE,
    advance_call,
    claim_call,
    complete_call,
    expire_call,
    finish_call,
)
from visionq.wire.jobs import ResultBody
from visionq.wire.states import PRIORITY_STEPS, JobStatus, Priority, Stage

log = logging.getLogger(__name__)

#: Bucket bounds (images) of the batch-size histogram kept in Redis for `visionq_inference_batch_size`.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Bucket bounds (seconds) of the inference-time histogram kept in Redis for `visionq_model_inference_seconds`.
INFERENCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Bucket bounds of the top-1 confidence histogram kept in Redis for `visionq_prediction_confidence`: steps of
#: 0.05, finer near 1 where a confident model's answers crowd, and 1.0 so that every answer has a finite bucket.
CONFIDENCE_BUCKETS = (
    *(round(0.05 * step, 2) for step in range(1, 20)),
    0.975,
    0.99,
    0.995,
    0.999,
    1.0,
)
#: Jobs the sweeper gives up in one pass; the rest wait for the next pass.
SWEEP_BATCH = 100


#: `Claim.attempts` of a job still pending past its deadline: not taken, to be expired (`JobTracker.expire`).
PAST_DEADLINE = -1
#: `Claim.attempts` of a follower whose cache leader still runs: not taken; look again later.
LEADER_RUNNING = -2
#: `Claim.attempts` of a follower whose leader completed: not taken; complete it from `Taken.leader_result`.
LEADER_DONE = -3
#: `Claim.attempts` of a message the job was published again after (jobs/queue.py): not taken; dropped unrun.
STALE_MESSAGE = STALE


class Claim(NamedTuple):
    attempts: int
    """The delivery number of this attempt; 0 when the job is no longer live, PAST_DEADLINE when it is to expire."""
    crashes: int
    """Earlier deliveries whose process died while reading or running the image."""


class Taken(NamedTuple):
    """A claimed job, with what the worker needs of it, read in the claim's round trip."""

    claim: Claim
    record: JobRecord | None
    """The job as the claim left it; None when it is gone."""
    image: bytes | None
    """Its image when the job's Redis keeps it; None once expired, or when an image store holds it."""
    leader_result: bytes | None = None
    """A follower's leader's result JSON (LEADER_DONE)."""


class JobTracker:
    """Moves jobs through their stages on behalf of one worker process.

    >>> tracker = JobTracker(redis, worker_id="w1@host", result_ttl=3600, stale_after=300)  # doctest: +SKIP
    >>> taken = tracker.take(job_id)                                                       # doctest: +SKIP
    >>> tracker.advance(job_id, Stage.PREPROCESSING)                                       # doctest: +SKIP
    """

    def __init__(
        self,
        redis: Redis,
        *,
        worker_id: str,
        result_ttl: int,
        stale_after: int,
        dead_letter_ttl: int = 0,
        queue: str = DEFAULT_QUEUE,
        replicas: ReplicaPolicy | None = None,
        replica_timeout: float = 1.0,
        shards: keys.Shards | None = None,
    ) -> None:
        self.redis = redis
        self.queue = queue
        """The queue this worker takes jobs from."""
        self.shards = shards or keys.Shards()
        """Where jobs and their queue's structures live (keys.Shards)."""
        self.replicas = replicas or ReplicaPolicy(0)
        """How many replicas must hold a completion before its message is acknowledged."""
        self.replica_timeout = replica_timeout
        self.dead_letter_ttl = dead_letter_ttl
        self.worker_id = worker_id
        self.result_ttl = result_ttl
        self.stale_after = stale_after
        self._take = redis.register_script(scripts.TAKE)
        self._requeue = redis.register_script(scripts.REQUEUE)
        self._crashed = redis.register_script(scripts.CRASHED)
        self._advance = redis.register_script(scripts.ADVANCE)
        self._complete = redis.register_script(scripts.COMPLETE)
        self._finish = redis.register_script(scripts.FINISH_UNSUCCESSFULLY)

    def answers(self) -> None:
        """Raise RedisError unless Redis answers: on a cluster, every master (a job's steps may reach any)."""
        if isinstance(self.redis, RedisCluster):
            self.redis.ping(target_nodes=RedisCluster.PRIMARIES)
        else:
            self.redis.ping()

    def _deadline(self) -> float:
        return time.time() + self.stale_after

    def take(self, job_id: str, message_id: str | None = None) -> Taken:
        """Mark the job as taken by this worker and read it and its image, in one round trip (the hot path of
        every job). Its `claim` says which delivery this is (0: the job is no longer live; STALE_MESSAGE: the
        message, `message_id`, is not the job's current one) and how many earlier deliveries' processes died while
        reading or running the image."""
        job_keys, args = claim_call(
            job_id, self.worker_id, self._deadline(), self.queue, message_id, shard=self.shards.of(job_id)
        )
        reply = self._take(keys=job_keys, args=args)
        if not isinstance(reply, list):
            return Taken(Claim(attempts=int(reply), crashes=0), None, None)
        attempts, crashes, flat, image = (*reply, None)[:4]  # an expired image: nil, or no fourth item
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        if int(attempts) == LEADER_DONE:
            return Taken(Claim(LEADER_DONE, 0), JobRecord.from_redis(fields), None, leader_result=image)
        return Taken(Claim(int(attempts), int(crashes)), JobRecord.from_redis(fields), image)

    def crashed(self, job_id: str, reason: str) -> int:
        """The process running the job died (`reason`, as its parent saw it): count it against the image if
        it died reading or running it (see `scripts.CRASHED`). Returns the job's crashes so far."""
        return int(self._crashed(keys=[keys.status(job_id)], args=[isoformat(utcnow()), reason]))

    def crash_log(self, job_id: str) -> list[dict[str, object]]:
        """The evidence of the deliveries whose process died on the job."""
        raw = self.redis.hget(keys.status(job_id), "crash_log")
        return orjson.loads(raw) if raw else []

    def advance(self, job_id: str, *stages: Stage) -> bool:
        """Move the job through `stages`, in order, in one step; False (nothing written) if it is no longer live:
        cancelled, or finished elsewhere."""
        job_keys, args = advance_call(job_id, stages, self._deadline(), shard=self.shards.of(job_id))
        return bool(self._advance(keys=job_keys, args=args))

    def refresh_replicas(self, ahead: float = 0.0) -> None:
        """Read the master's replica count if it is due within `ahead` seconds (the worker's housekeeping does,
        so that a completion does not wait for the read)."""
        if self.replicas.due(ahead=ahead):
            self.replicas.note(self.redis.info("replication"))

    def complete(
        self,
        result: ResultBody,
        *,
        stages: Sequence[Stage] = (),
        also: Callable[[Steps], object] | None = None,
        reusable: bool = False,
        followed: Callable[[JobRecord], object] | None = None,
    ) -> str | None:
        """Store the result and finish the job; returns the `updated_at` it was written with (the result's
        `completed_at`, or the job's own stamp if later: `scripts._STAMP`), None if another delivery finished it
        first. `stages` not yet written are written first, in the same step, and the commands `also` queues
        (metrics, the breaker) go in the same round trip. `reusable`: the result may serve identical submits
        (jobs/cache.py); the job's followers, if it led any, are completed from it, and `followed` is called with
        each. Where replicas are required, the same round trip waits for them (`WAIT`) and `Unconfirmed` is raised
        if they did not confirm: the task is then retried, and the job runs again if a failover lost its
        completion."""
        self.refresh_replicas()  # read here only when the housekeeping has fallen behind
        required = self.replicas.required
        body = result.model_dump_json()
        shard = self.shards.of(result.job_id)
        job_keys, args = complete_call(
            result.job_id,
            body,
            result.completed_at,
            self.result_ttl,
            result.processing_time,
            queue=self.queue,
            shard=shard,
            reusable=reusable,
            stages=stages,
        )
        with Steps(self.redis, key=keys.status(result.job_id)) as steps:
            if also is not None:
                also(steps)
            steps.script(self._complete, job_keys, args)
            if required:
                steps.wait(required, int(self.replica_timeout * 1000))
            replies = steps.execute()
        if required:
            check(int(replies.pop()), required, self.replica_timeout)
        reply = replies[-1]
        if not isinstance(reply, list):  # 0: no longer live
            return None
        for record in self.complete_followers([_text(job_id) for job_id in reply[1:]], body):
            if followed is not None:
                followed(record)
        return _text(reply[0])

    def complete_followers(self, job_ids: list[str], leader_result: bytes | str) -> list[JobRecord]:
        """Complete a leader's followers from its result (a cache hit each); those no longer live are passed.
        Returns those completed."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(keys.status(job_id))
            hashes = pipe.execute()
        records = [JobRecord.from_redis({_text(k): _text(v) for k, v in fields.items()}) for fields in hashes if fields]
        return [record for record in records if self.complete_from(record, leader_result)]

    def complete_from(self, record: JobRecord, leader_result: bytes | str) -> bool:
        """Complete a follower from its leader's result, with no inference; False if it is no longer live."""
        result = cache.reused(leader_result, record, utcnow())
        job_keys, args = complete_call(
            record.job_id,
            cache.result_json(result),
            result.completed_at,
            self.result_ttl,
            0.0,
            queue=self.queue,
            shard=self.shards.of(record.job_id),
            reused=True,
        )
        return bool(self._complete(keys=job_keys, args=args))

    def fail(self, job_id: str, code: str, message: str) -> bool:
        job_keys, args = finish_call(
            job_id, JobStatus.FAILED, code, message, self.result_ttl, queue=self.queue, shard=self.shards.of(job_id)
        )
        return bool(self._finish(keys=job_keys, args=args))

    def expire(self, job_id: str) -> bool:
        """End a job still pending past its deadline as `expired`, never run."""
        return bool(self._finish(*expire_call(job_id, self.result_ttl, self.queue, shard=self.shards.of(job_id))))

    def dead_letter(self, job_id: str, code: str, message: str) -> bool:
        """Fail a job that used up its attempts and keep it, image included, in the dead-letter queue."""
        job_keys, args = finish_call(
            job_id,
            JobStatus.FAILED,
            code,
            message,
            self.result_ttl,
            self.dead_letter_ttl,
            queue=self.queue,
            shard=self.shards.of(job_id),
        )
        return bool(self._finish(keys=job_keys, args=args))

    def record_inference(self, model_ref: str, seconds: float, images: int, *, steps: Steps) -> None:
        """Queue in `steps` one observation per image for the cluster-wide inference histogram, and one per batch
        (a call of the model) for the batch-size histogram. Each observation counts in its own bucket only
        (`in:`); `/metrics` adds them up into Prometheus's cumulative buckets, so a call costs six increments."""
        key, pipe = keys.inference_stats(model_ref), steps.commands
        bound = bucket_of(seconds, INFERENCE_BUCKETS)
        if bound is not None:
            pipe.hincrby(key, f"in:{bound}", images)
        pipe.hincrby(key, "count", images)
        pipe.hincrbyfloat(key, "sum", seconds * images)
        size = bucket_of(images, BATCH_BUCKETS)
        if size is not None:
            pipe.hincrby(key, f"batch:in:{size}", 1)
        pipe.hincrby(key, "batch:count", 1)
        pipe.hincrby(key, "batch:sum", images)

    def record_confidence(self, model_ref: str, confidence: float, *, steps: Steps) -> None:
        """Queue in `steps` one observation of a completed job's top-1 confidence for the cluster-wide
        `visionq_prediction_confidence` histogram of the model that served it (same hash and layout as
        `record_inference`, fields `confidence:…`): three increments per job."""
        key, pipe = keys.inference_stats(model_ref), steps.commands
        bound = bucket_of(confidence, CONFIDENCE_BUCKETS)
        if bound is not None:
            pipe.hincrby(key, f"confidence:in:{bound}", 1)
        pipe.hincrby(key, "confidence:count", 1)
        pipe.hincrbyfloat(key, "confidence:sum", confidence)

    def lost_messages(
        self, queue: str, *, waited: float, image_ttl: int, now: float | None = None
    ) -> list[tuple[str, Priority]]:
        """Live jobs of `queue` whose Celery message is in none of its priority lists and not held by any worker:
        the message was lost. Pending jobs queued more than `waited` seconds ago (a worker's BRPOP answered as
        Redis went down takes a message off its list without it ever reaching the worker); processing jobs whose
        worker last reported more than `waited` seconds ago (a failover lost a retry's message, or an
        acknowledgement outran it). The caller queues them again; a second message for a job is harmless, since
        a claim refuses a finished job and a superseded message is dropped unrun."""
        now = now or time.time()
        # A pending job's score in the live set is its creation + image_ttl (JobStore.create); a processing job's,
        # its last report + stale_after (`_deadline`), past which the sweep gives it up.
        cutoffs = {
            JobStatus.PENDING.value: now - waited + image_ttl,
            JobStatus.PROCESSING.value: now - waited + self.stale_after,
        }
        overdue = self.redis.zrangebyscore(
            keys.LIVE_JOBS,
            "-inf",
            max(cutoffs.values()),
            start=0,
            num=SWEEP_BATCH,
            withscores=True,  # one Redis
        )
        candidates = [(_text(raw), float(score)) for raw, score in cast("list[tuple[bytes | str, float]]", overdue)]
        if not candidates:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in candidates:
                pipe.hmget(keys.status(job_id), ["status", "priority", QUEUED_FIELD])
            fields = pipe.execute()
        # Only jobs queued on this queue: one of another queue has its message there, out of this worker's sight.
        lost = {
            job_id: Priority(_text(priority))
            for (job_id, score), (state, priority, queued) in zip(candidates, fields, strict=True)
            if state and priority and queued and _text(queued) == queue and score <= cutoffs.get(_text(state), -1.0)
        }
        if not lost:
            return []
        # One snapshot (MULTI), so a message moved between our reads is not missed. Kombu's own move (BRPOP, then
        # the unacked write) leaves a message in neither for a moment: at worst that queues a harmless duplicate.
        with self.redis.pipeline(transaction=True) as pipe:
            for step in PRIORITY_STEPS:
                pipe.lrange(keys.priority_list(queue, step), 0, -1)
            pipe.hvals(keys.BROKER_UNACKED)
            held = b"".join(m if isinstance(m, bytes) else m.encode() for ms in pipe.execute() for m in ms)
        return [(job_id, priority) for job_id, priority in lost.items() if job_id.encode() not in held]

    def requeue(self, job_id: str, queue: str, priority: Priority) -> None:
        """Queue the job's message again (its last was lost), under a new message id: should the lost one turn up
        after all (a worker had it in hand), it is dropped unrun. A processing job gets a new deadline: the
        message needs a worker to take it before the sweep gives the job up."""
        step, message_id = priority.broker_priority, new_message_id()
        self._requeue(
            keys=[keys.status(job_id), keys.priority_list(queue, step), keys.LIVE_JOBS],  # one Redis: its broker
            args=[
                message_id,
                task_message(job_id, queue=queue, broker_priority=step, message_id=message_id),
                self._deadline(),
                job_id,
            ],
        )

    def holding_images(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` whose image must stay: their job is still live, or dead-lettered (an admin may
        retry it)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(keys.status(job_id), "status")
                pipe.zscore(keys.dead_letters(self.shards.of(job_id)), job_id)
            replies = pipe.execute()
        live = {JobStatus.PENDING.value, JobStatus.PROCESSING.value}
        return {
            job_id
            for job_id, state, dead in zip(job_ids, replies[::2], replies[1::2], strict=True)
            if dead is not None or (state is not None and _text(state) in live)
        }

    def sweep(self, now: float | None = None) -> list[str]:
        """Fail live jobs past their deadline: queued jobs whose image expired, and processing jobs
        whose worker stopped reporting longer ago than any redelivery would take."""
        until = now or time.time()
        overdue = [
            (shard, _text(raw_id))
            for shard in self.shards.names
            for raw_id in self.redis.zrangebyscore(keys.live_jobs(shard), "-inf", until, start=0, num=SWEEP_BATCH)
            if isinstance(raw_id, bytes | str)
        ]
        given_up: list[str] = []
        for shard, job_id in overdue:
            state = self.redis.hget(keys.status(job_id), "status")
            if state is None:
                self.redis.zrem(keys.live_jobs(shard), job_id)
                continue
            if _text(state) == JobStatus.PENDING:
                message = "no worker took the job before its image expired; submit it again"
            else:
                message = "the worker processing the job stopped responding and it was not redelivered in time"
            if self.fail(job_id, "internal_error", message):
                log.warning("swept stale job", extra={"job_id": job_id, "status": _text(state)})
                given_up.append(job_id)
        return given_up


def bucket_of(value: float, bounds: tuple[float, ...]) -> float | None:
    """The least of the (ascending) `bounds` that `value` does not exceed: its histogram bucket; None when it
    exceeds them all (counted in `+Inf` only).

    >>> bucket_of(0.87, CONFIDENCE_BUCKETS), bucket_of(1.0, CONFIDENCE_BUCKETS), bucket_of(70, BATCH_BUCKETS)
    (0.9, 1.0, None)
    """
    return next((bound for bound in bounds if value <= bound), None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
