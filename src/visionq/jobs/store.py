"""JobStore: the API's side of job state in Redis (create, read, give up).

Workers change jobs through `JobTracker` (tracker.py); both run the same Lua scripts
(scripts.py), whose key and argument lists are built once here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from visionq import errors
from visionq.jobs import keys, scripts
from visionq.jobs.idempotency import IDEMPOTENCY_TTL
from visionq.jobs.publisher import Publisher
from visionq.jobs.queue import new_message_id, task_message
from visionq.jobs.records import JobRecord, Place, isoformat, utcnow
from visionq.jobs.replication import Replication
from visionq.wire.states import JobStatus, Priority, Stage

log = logging.getLogger(__name__)

ScriptCall = tuple[list[str], list[str | int | float]]
#: The status-hash field naming the queue a job's message was put on (`JobRecord.queued`).
QUEUED_FIELD = "queued"
#: SUBMIT's first reply when the result cache had the answer (nothing written).
CACHE_HIT = 2
#: The Celery queue of jobs unless settings name another (`Settings.queue`).
DEFAULT_QUEUE = "visionq"
#: The error code of a job whose deadline passed before it started.
EXPIRED_CODE = "expired"
#: The oldest messages of a priority list looked through for an aged job's; beyond them it waits for the next pass.
PROMOTE_SCAN = 200
#: Jobs expired, or looked at for promotion per priority, in one pass.
QUEUE_PASS_BATCH = 100
#: TAKE's answer to a message the job was published again after (jobs/queue.py): dropped, unrun.
STALE = -4


@dataclass(frozen=True)
class Submitted:
    """What `JobStore.submit` did."""

    accepted: bool
    """False when the queue was full: nothing was written."""
    queued: int
    """Jobs waiting in the queue, all priorities, before this one."""
    wait: float | None
    """Estimated seconds until the job is done (see `JobStore.estimate_wait`); None while unknown."""
    starts_in: float | None = None
    """Estimated seconds until a worker starts it; None while unknown."""
    position: int = 0
    """Jobs that will start before it."""
    cached: bytes | None = None
    """The result of an identical job (the cache entry's, `record.cache_key`) when there is one: nothing was
    written; the caller makes the job completed with it (`JobStore.record_hit`)."""


def claim_call(
    job_id: str, worker_id: str, deadline: float, queue: str, message_id: str | None = None, *, shard: str
) -> ScriptCall:
    return (
        [
            keys.status(job_id),
            keys.live_jobs(shard),
            keys.events(job_id),
            keys.processing_jobs(shard),
            keys.image(job_id),
            keys.waiting(queue, shard),
            keys.job_deadlines(shard),
            keys.pace(queue, shard),
            keys.unpublished(queue, shard),
        ],
        [isoformat(utcnow()), worker_id, deadline, time.time(), message_id or ""],
    )


def advance_call(job_id: str, stages: Sequence[Stage], deadline: float, *, shard: str) -> ScriptCall:
    return [keys.status(job_id), keys.live_jobs(shard), keys.events(job_id)], [
        isoformat(utcnow()),
        deadline,
        *_stage_args(stages),
    ]


def _stage_args(stages: Sequence[Stage]) -> list[str | int]:
    """Each stage and its progress, as the scripts' `advance` reads them."""
    return [value for stage in stages for value in (stage.value, stage.progress)]


def complete_call(
    job_id: str,
    result_json: bytes | str,
    completed_at: str,
    result_ttl: int,
    processing_seconds: float,
    *,
    queue: str,
    shard: str,
    reusable: bool = False,
    reused: bool = False,
    stages: Sequence[Stage] = (),
) -> ScriptCall:
    """Complete a job with its result, after the `stages` not yet written. `reusable`: the result may serve later
    identical submits (the job's own model made it); `reused`: it came from another job's result (a cache hit: no
    processing time to count)."""
    body = result_json.decode() if isinstance(result_json, bytes) else result_json
    return (
        [
            keys.status(job_id),
            keys.result(job_id),
            keys.image(job_id),
            keys.live_jobs(shard),
            keys.events(job_id),
            keys.job_stats(shard),
            keys.processing_jobs(shard),
            keys.archive_outbox(shard),
            keys.callbacks_due(shard),
            keys.waiting(queue, shard),
        ],
        [
            body,
            completed_at,
            result_ttl,
            processing_seconds,
            time.time(),
            _flag(reusable),
            _flag(reused),
            *_stage_args(stages),
        ],
    )


def _flag(value: bool) -> str:
    return "1" if value else ""


def finish_call(
    job_id: str,
    status: JobStatus,
    code: str,
    message: str,
    result_ttl: int,
    dead_letter_ttl: int = 0,
    *,
    queue: str,
    shard: str,
    only_pending: bool = False,
) -> ScriptCall:
    """Fail, cancel or expire a live job (with `only_pending`, only while no worker has started it); with
    `dead_letter_ttl`, it also lands in the dead-letter queue, kept (image included) that long so that an admin
    can retry it."""
    return (
        [
            keys.status(job_id),
            keys.image(job_id),
            keys.live_jobs(shard),
            keys.events(job_id),
            keys.job_stats(shard),
            keys.processing_jobs(shard),
            keys.archive_outbox(shard),
            keys.callbacks_due(shard),
            keys.dead_letters(shard),
            keys.waiting(queue, shard),
            keys.job_deadlines(shard),
        ],
        [
            status.value,
            code,
            message,
            isoformat(utcnow()),
            result_ttl,
            time.time(),
            dead_letter_ttl,
            "1" if only_pending else "",
        ],
    )


def expire_call(job_id: str, result_ttl: int, queue: str, *, shard: str) -> ScriptCall:
    """Expire a job still pending past its `deadline`: it ends `expired`, never run."""
    return finish_call(
        job_id,
        JobStatus.EXPIRED,
        EXPIRED_CODE,
        "no worker started the job before its deadline; it was not run",
        result_ttl,
        queue=queue,
        shard=shard,
        only_pending=True,
    )


class JobStore:
    """Job state as the API reads and writes it.

    >>> store = JobStore(redis, result_ttl=3600, image_ttl=1800, queue="visionq")  # doctest: +SKIP
    >>> await store.submit(record, queue="visionq", image=image_bytes)  # doctest: +SKIP
    >>> (await store.get(record.job_id)).status                       # doctest: +SKIP
    <JobStatus.PENDING: 'pending'>
    """

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int,
        image_ttl: int,
        queue: str = DEFAULT_QUEUE,
        replication: Replication | None = None,
        publisher: Publisher | None = None,
        shards: keys.Shards | None = None,
    ) -> None:
        self.redis = redis
        self._node_pools: dict[str, ConnectionPool] = {}
        self.shards = shards or keys.Shards()
        """Where jobs and their queue's structures live: one shard on one Redis, several on a Redis Cluster."""
        self.replication = replication
        """With replicas, how many must hold a new job before `submit` returns (None: none are waited for)."""
        self.publisher = publisher
        """The broker apart from job state, when there is one: messages go through the outbox (jobs/publisher.py)."""
        self.queue = queue
        """The queue this API process submits to: the one whose places, expiries and promotions it looks after."""
        self.result_ttl = result_ttl
        self.image_ttl = image_ttl
        self._finish = redis.register_script(scripts.FINISH_UNSUCCESSFULLY)
        self._revive = redis.register_script(scripts.REVIVE)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._place = redis.register_script(scripts.PLACE)
        self._placed = redis.register_script(scripts.PLACED)
        self._cached = redis.register_script(scripts.CACHED)
        self._wait = redis.register_script(scripts.WAIT)
        self._promote = redis.register_script(scripts.PROMOTE)
        self._republish = redis.register_script(scripts.REPUBLISH)
        self._published = redis.register_script(scripts.PUBLISHED)

    async def submit(
        self,
        record: JobRecord,
        *,
        queue: str,
        image: bytes | None,
        max_queued: int = 0,
        remember: tuple[str, bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Submitted:
        """Make the job and queue it, in one round trip (`scripts.SUBMIT`): its record, its `image` (None when
        an image store holds it), its archive mark, its place in the queue and its task message on `queue`, all
        or nothing. Refused, with nothing written, when `max_queued` jobs (0: no bound) are already waiting; the
        bound of a priority is its share of that (`Priority.shed_share`), so the lowest is refused first. A job
        with a `deadline` (unix s) is expired if no worker has started it by then. With `remember` (an
        Idempotency-Key's entry name and its answer), the key is given its answer in the same step. `headers`
        go into the task message (the trace context). The job's deadline in the live set is its image's expiry:
        a job still queued then can never run. Where replicas are required (`replication`), a made job is
        confirmed on them before this returns, or `Unconfirmed` is raised: made, but maybe not durable. With a broker
        apart (`publisher`), the job is made with its outbox entry, then its message is published."""
        now = time.time()
        priority = record.priority.broker_priority
        fields = {**record.to_redis(), QUEUED_FIELD: queue}  # its first message has no id (jobs/queue.py)
        shard = self.shards.of(record.job_id)
        job_keys = [
            keys.status(record.job_id),
            keys.image(record.job_id),
            keys.live_jobs(shard),
            keys.archive_outbox(shard),
            keys.unpublished(queue, shard) if self.publisher else keys.priority_list(queue, priority),
            keys.job_stats(shard),
            keys.workers_seen(shard),
            keys.waiting(queue, shard),
            keys.queue_tickets(shard),
            keys.job_deadlines(shard),
            keys.pace(queue, shard),
        ]
        # Each shard holds about its share of the waiting jobs, and is bounded to that share.
        max_queued = -(-max_queued // len(self.shards.names))
        args: list[str | bytes | int | float] = [
            orjson.dumps(fields),
            self.image_ttl + self.result_ttl,
            image if image is not None else b"",
            self.image_ttl,
            now + self.image_ttl,
            now,
            ""
            if self.publisher
            else task_message(record.job_id, queue=queue, broker_priority=priority, headers=headers),
            max(1, int(max_queued * record.priority.shed_share)) if max_queued else 0,
            priority,
            "" if deadline is None else deadline,
        ]
        entry, unused = record.cache_key, job_keys[0]  # an unused key is the status hash again: one slot per step
        job_keys += [
            remember[0] if remember else unused,
            entry or unused,
            keys.cache_followers(entry) if entry else unused,
        ]
        args += [remember[1] if remember else "", IDEMPOTENCY_TTL, self.result_ttl, "1" if self.publisher else ""]
        args += [_flag(remember is not None), _flag(entry is not None)]
        required = await self.replication.required_now() if self.replication is not None else 0
        if required and self.replication is not None:
            async with self._connection(job_keys[0]) as connection:  # WAIT counts what its own connection wrote
                reply = await self._submit(keys=job_keys, args=args, client=connection)
                if int(reply[0]) == 1:  # made (a refusal or a cache hit wrote nothing)
                    await self.replication.confirm(connection, required)
        else:
            reply = await self._submit(keys=job_keys, args=args)
        if int(reply[0]) == CACHE_HIT:
            result = reply[2]
            return Submitted(False, int(reply[1]), None, cached=result.encode() if isinstance(result, str) else result)
        made, queued, wait, starts_in, position = reply
        if made:
            await self._publish(record.job_id, queue, priority, None, headers)
        return Submitted(bool(made), int(queued), _seconds(wait), _seconds(starts_in), int(position))

    async def _publish(
        self,
        job_id: str,
        queue: str,
        broker_priority: int,
        message_id: str | None,
        headers: Mapping[str, str] | None = None,
        *,
        in_request: bool = True,
    ) -> bool:
        """With a broker apart: publish the job's message and take it off the outbox. A broker that cannot be
        reached leaves it there for the queue keeper (`resend`): the job is made either way. False then."""
        publisher = self.publisher
        if publisher is None:
            return True
        try:
            await asyncio.to_thread(
                publisher.publish,
                job_id,
                queue=queue,
                broker_priority=broker_priority,
                message_id=message_id,
                headers=dict(headers or {}),
                in_request=in_request,
            )
        except Exception as exc:  # kombu raises each transport's own errors; every one leaves the job in the outbox
            log.warning("broker unreachable; the job stays in the outbox: %s", exc, extra={"job_id": job_id})
            return False
        try:
            outbox = keys.unpublished(queue, self.shards.of(job_id))
            await self._published(keys=[keys.status(job_id), outbox], args=[job_id, message_id or ""])
        except RedisError as exc:  # published: the keeper's republication of it, under a new id, will run alone
            log.warning("could not clear the job's outbox entry: %s", exc, extra={"job_id": job_id})
        return True

    async def resend(self, older_than: float) -> int:
        """With a broker apart: publish again the messages of jobs left in the outbox since before `older_than`
        (unix s), each under a new message id. Returns how many were published."""
        if self.publisher is None:
            return 0
        sent = 0
        every_stuck = await self._in_every_shard(
            lambda pipe, shard: pipe.zrangebyscore(
                keys.unpublished(self.queue, shard), "-inf", older_than, start=0, num=QUEUE_PASS_BATCH
            )
        )
        for shard, stuck in zip(self.shards.names, every_stuck, strict=True):
            for job_id in map(str, stuck):
                message_id = new_message_id()
                priority = await self._republish(
                    keys=[keys.status(job_id), keys.unpublished(self.queue, shard), keys.waiting(self.queue, shard),
                          keys.queue_tickets(shard)],
                    args=[job_id, message_id, time.time(), "", "", ""],
                )  # fmt: skip
                if not priority:
                    continue
                step = Priority(str(priority)).broker_priority
                if not await self._publish(job_id, self.queue, step, message_id, in_request=False):
                    return sent  # the broker is still away: the rest wait for the next pass, not each fail in turn
                sent += 1
        return sent

    async def confirm_durable(self, shard: str = "") -> None:
        """Where replicas are required, wait until they hold everything the master of `shard` holds now (a job whose
        answer an Idempotency-Key replays may not have reached them: its first answer was a 503), or raise
        `Unconfirmed`."""
        required = await self.replication.required_now() if self.replication is not None else 0
        if not required or self.replication is None:
            return
        probe = keys.replication_probe(shard)
        async with self._connection(probe) as connection:
            # WAIT counts what its own connection wrote: a write now makes it wait for the master's whole history.
            await connection.incr(probe)
            await self.replication.confirm(connection, required)

    @contextlib.asynccontextmanager
    async def _connection(self, key: str) -> AsyncIterator[Redis]:
        """A client on one connection to the master of `key`: what WAIT needs, since it counts one connection's
        writes. On a Redis Cluster, a connection to the node that holds `key`'s slot; should that fail (a
        failover moved the slot), the cluster client learns the new layout for the next try."""
        if not isinstance(self.redis, RedisCluster):
            async with self.redis.client() as connection:
                yield connection
            return
        await self.redis.initialize()  # a no-op once the client knows the cluster
        node = self.redis.get_node_from_key(key)
        pool = self._node_pools.get(node.name)
        if pool is None:
            pool = self._node_pools[node.name] = ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
        try:
            async with Redis(connection_pool=pool).client() as connection:
                yield connection
        except RedisError:
            await self.redis.nodes_manager.initialize()
            raise

    async def aclose(self) -> None:
        """Close the connections to single cluster nodes (the client's own are its owner's to close)."""
        for pool in self._node_pools.values():
            await pool.disconnect()

    async def record_hit(self, record: JobRecord, result: bytes, *, remember: tuple[str, bytes] | None = None) -> None:
        """Make `record`'s job completed at once with `result`, reused from an identical job's (`scripts.CACHED`);
        with `remember`, an Idempotency-Key's answer in the same step."""
        job_id = record.job_id
        entry, answer = remember if remember else (keys.status(job_id), b"")
        shard = self.shards.of(job_id)
        await self._cached(
            keys=[keys.status(job_id), keys.result(job_id), keys.archive_outbox(shard), keys.job_stats(shard),
                  keys.callbacks_due(shard), entry],
            args=[orjson.dumps(record.to_redis()), result, self.result_ttl, time.time(), answer, IDEMPOTENCY_TTL,
                  _flag(remember is not None)],
        )  # fmt: skip

    async def release_unmade(self, job_id: str, reservation: str) -> None:
        """Free an Idempotency-Key's `reservation` (an entry name) whose request never made its job: the
        client's retry then makes it, instead of being answered 409 until the reservation expires. A made job's
        entry holds its answer by then, and is left alone. Raises RedisError while Redis is away."""
        if not await self.redis.exists(keys.status(job_id)):
            entry = await self.redis.get(reservation)
            if entry is not None and orjson.loads(entry).get("accepted") is None:
                await self.redis.delete(reservation)

    async def get(self, job_id: str) -> JobRecord | None:
        fields = await self.redis.hgetall(keys.status(job_id))
        return JobRecord.from_redis({str(k): str(v) for k, v in fields.items()}) if fields else None

    async def require(self, job_id: str) -> JobRecord:
        """The job, or JobNotFound (404) when the id is unknown or has expired."""
        record = await self.get(job_id)
        if record is None:
            raise errors.JobNotFound(f"no job {job_id!r}: the id is unknown or its result has expired")
        return record

    async def place(self, job_id: str) -> Place | None:
        """Where a pending job stands in the queue (one round trip: its rank is O(log n)); None when it is not
        waiting."""
        shard = self.shards.of(job_id)
        position, starts_in, score = await self._place(keys=self._place_keys(shard), args=[job_id, time.time()])
        return await self._place_across(shard, position, starts_in, score)

    async def get_placed(self, job_id: str) -> tuple[JobRecord | None, Place | None]:
        """`get` and `place` in one round trip (`scripts.PLACED`): a watcher's first read of a job."""
        shard = self.shards.of(job_id)
        reply = await self._placed(keys=[keys.status(job_id), *self._place_keys(shard)], args=[job_id, time.time()])
        if not reply:
            return None, None
        flat, position, starts_in, score = reply
        fields = {str(name): str(value) for name, value in zip(flat[::2], flat[1::2], strict=True)}
        return JobRecord.from_redis(fields), await self._place_across(shard, position, starts_in, score)

    def _place_keys(self, shard: str) -> list[str]:
        """PLACE's keys: the shard's waiting jobs, job stats, live workers and queue pace."""
        return [
            keys.waiting(self.queue, shard),
            keys.job_stats(shard),
            keys.workers_seen(shard),
            keys.pace(self.queue, shard),
        ]

    async def _place_across(self, shard: str, position: Any, starts_in: Any, score: Any) -> Place | None:
        """PLACE's answer for a job of `shard` as a Place, the jobs of the other shards before it counted in."""
        if int(position) < 0:
            return None
        others = [name for name in self.shards.names if name != shard]
        if others:  # the jobs of the other shards that will start before it (tickets compare across shards)
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in others:
                    pipe.zcount(keys.waiting(self.queue, name), "-inf", f"({score}")
                position = int(position) + sum(await pipe.execute())
        return Place(int(position), _seconds(starts_in))

    async def get_deliveries(self, job_id: str) -> list[bytes]:
        """The callback delivery attempts recorded for the job, oldest first, each a JSON object."""
        return [
            item.encode() if isinstance(item, str) else item
            for item in await self.redis.lrange(keys.deliveries(job_id), 0, -1)
        ]

    async def get_result(self, job_id: str) -> bytes | None:
        """The stored result JSON of a completed job, exactly as the worker wrote it."""
        raw: bytes | str | None = await self.redis.get(keys.result(job_id))
        return raw.encode() if isinstance(raw, str) else raw

    async def cancel(self, job_id: str, *, only_pending: bool = False) -> bool:
        """Cancel a live job: a queued one is never processed, a running one stops at its next stage (with
        `only_pending`, a running one is left to finish). False if the job is unknown or already terminal."""
        job_keys, args = finish_call(
            job_id,
            JobStatus.CANCELLED,
            "cancelled",
            "cancelled by request",
            self.result_ttl,
            queue=self.queue,
            shard=self.shards.of(job_id),
            only_pending=only_pending,
        )
        return bool(await self._finish(keys=job_keys, args=args))

    async def fail(self, job_id: str, code: str, message: str) -> bool:
        """Fail a live job (for example one the broker refused); False if it was already terminal."""
        job_keys, args = finish_call(
            job_id, JobStatus.FAILED, code, message, self.result_ttl, queue=self.queue, shard=self.shards.of(job_id)
        )
        return bool(await self._finish(keys=job_keys, args=args))

    async def dead_letters(self) -> list[tuple[JobRecord, float]]:
        """The dead-letter queue, oldest first: each job and when it landed there (unix seconds)."""
        found = await self._in_every_shard(
            lambda pipe, shard: pipe.zrange(keys.dead_letters(shard), 0, -1, withscores=True)
        )
        entries = [entry for shard_entries in found for entry in shard_entries if isinstance(entry, tuple)]
        entries.sort(key=lambda entry: float(entry[1]))
        records = [(await self.get(str(entry[0])), float(entry[1])) for entry in entries]
        return [(record, score) for record, score in records if record is not None]

    async def revive(self, record: JobRecord, *, queue: str) -> JobRecord | int:
        """Put a dead-lettered job back to pending and queue its message, in one step. The job as revived (read in
        that step: a worker may already have it by the time this returns), or 0 if it is not in the dead-letter
        queue, or -1 if its image (kept in Redis) has expired."""
        job_id, priority = record.job_id, record.priority.broker_priority
        deadline = time.time() + self.image_ttl
        message_id = new_message_id()
        message = (
            "" if self.publisher else task_message(job_id, queue=queue, broker_priority=priority, message_id=message_id)
        )
        shard = self.shards.of(job_id)
        queued_on = keys.unpublished(queue, shard) if self.publisher else keys.priority_list(queue, priority)
        revived = await self._revive(
            keys=[keys.status(job_id), keys.image(job_id), keys.live_jobs(shard), keys.events(job_id),
                  keys.dead_letters(shard), keys.archive_outbox(shard), queued_on, keys.waiting(queue, shard),
                  keys.queue_tickets(shard)],
            args=[isoformat(utcnow()), deadline, self.image_ttl + self.result_ttl, self.image_ttl, time.time(),
                  message, priority, message_id, "1" if self.publisher else ""],
        )  # fmt: skip
        if not isinstance(revived, list):
            return int(revived)
        await self._publish(job_id, queue, priority, message_id)
        pairs = iter(str(item) for item in revived)
        return JobRecord.from_redis(dict(zip(pairs, pairs, strict=True)))

    async def purge_dead_letters(self, job_ids: list[str] | None = None) -> int:
        """Drop dead-lettered jobs (all of them by default) and their images; their failure stays visible."""
        if job_ids is None:
            found = await self._in_every_shard(lambda pipe, shard: pipe.zrange(keys.dead_letters(shard), 0, -1))
            job_ids = [str(job_id) for shard_ids in found for job_id in shard_ids]
        removed = 0
        for job_id in job_ids:  # a job at a time: its keys and its shard's dead letters share a slot
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(keys.dead_letters(self.shards.of(job_id)), job_id)
                pipe.delete(keys.image(job_id))
                pipe.expire(keys.status(job_id), self.result_ttl)
                gone, *_ = await pipe.execute()
            removed += int(gone)
        return removed

    async def overdue(self, now: float | None = None) -> list[str]:
        """Pending jobs whose `deadline` has passed, oldest deadline first in each shard (a batch of them)."""
        until = now or time.time()
        found = await self._in_every_shard(
            lambda pipe, shard: pipe.zrangebyscore(
                keys.job_deadlines(shard), "-inf", until, start=0, num=QUEUE_PASS_BATCH
            )
        )
        return [str(job_id) for ids in found for job_id in ids]

    async def expire(self, job_id: str) -> bool:
        """End a job still pending past its deadline as `expired`; False (and the job's deadline entry dropped)
        when a worker started it first, or it is already terminal or gone."""
        shard = self.shards.of(job_id)
        job_keys, args = expire_call(job_id, self.result_ttl, self.queue, shard=shard)
        if await self._finish(keys=job_keys, args=args):
            return True
        await self.redis.zrem(keys.job_deadlines(shard), job_id)
        return False

    async def aged(self, priority: Priority, older_than: float) -> list[str]:
        """Pending jobs at `priority` (their own, or one they were promoted to) that have waited there since
        before `older_than` (unix s), oldest first. A waiting job's ticket is the moment it arrived at its priority
        (submitted, promoted or revived): the scan reads the queue's sorted set alone."""
        low = priority.broker_priority * keys.TICKET_SPAN
        before = low + keys.first_ticket(older_than)
        found = await self._in_every_shard(
            lambda pipe, shard: pipe.zrangebyscore(
                keys.waiting(self.queue, shard), low, f"({before}", start=0, num=QUEUE_PASS_BATCH
            )
        )
        return [str(job_id) for ids in found for job_id in ids]

    async def _in_every_shard(self, command: Callable[[Pipeline, str], object]) -> list[Any]:
        """The replies of one command per shard, sent in one pipeline: on a Redis Cluster, one round trip per node
        rather than one per shard (32), for the queue keeper's every pass."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in self.shards.names:
                command(pipe, shard)
            return list(await pipe.execute())

    async def promote(self, job_id: str, priority: Priority) -> bool:
        """Move a pending job waiting at `priority` one step up (`Priority.raised`), behind the jobs already
        there; False when it is no longer waiting or a worker has fetched its message."""
        higher = priority.raised
        shard = self.shards.of(job_id)
        if self.publisher is not None:
            # A message in RabbitMQ cannot be moved: the job is published again one step up, and its first message,
            # now stale, is dropped when a worker reaches it.
            message_id = new_message_id()
            raised = await self._republish(
                keys=[keys.status(job_id), keys.unpublished(self.queue, shard), keys.waiting(self.queue, shard),
                      keys.queue_tickets(shard)],
                args=[job_id, message_id, time.time(), higher.broker_priority, higher.value, isoformat(utcnow())],
            )  # fmt: skip
            if raised:
                await self._publish(job_id, self.queue, higher.broker_priority, message_id)
            return bool(raised)
        promoted = await self._promote(
            keys=[
                keys.status(job_id),
                keys.waiting(self.queue, shard),
                keys.queue_tickets(shard),
                keys.priority_list(self.queue, priority.broker_priority),
                keys.priority_list(self.queue, higher.broker_priority),
            ],
            args=[job_id, higher.broker_priority, higher.value, isoformat(utcnow()), PROMOTE_SCAN, time.time()],
        )
        return bool(promoted)

    async def estimate_wait(self, broker_priority: int) -> float | None:
        """Seconds until a job queued now at `broker_priority` should be done (as `scripts.SUBMIT` estimates it);
        None until some job has completed, or while no worker is live."""
        shard = random.choice(self.shards.names)  # a sample: each shard holds its share of the queue, at its pace
        wait = await self._wait(
            keys=[keys.waiting(self.queue, shard), keys.job_stats(shard), keys.workers_seen(shard),
                  keys.pace(self.queue, shard)],
            args=[broker_priority, time.time()],
        )  # fmt: skip
        return _seconds(wait)

    async def ping(self) -> None:
        """Raise RedisError unless Redis answers."""
        await self.redis.ping()

    async def memory(self) -> tuple[int, int]:
        """Redis's used memory and its `maxmemory` (0: none), in bytes; on a Redis Cluster, its fullest node's."""
        info = await self.redis.info("memory")
        nodes = [info] if "used_memory" in info else [one for one in info.values() if isinstance(one, dict)]
        figures = [(int(one.get("used_memory", 0)), int(one.get("maxmemory", 0))) for one in nodes] or [(0, 0)]
        return max(figures, key=lambda pair: pair[0] / pair[1] if pair[1] else 0.0)

    async def callbacks_due(self) -> int:
        """Finished jobs whose callback is still to be delivered."""
        return sum(map(int, await self._in_every_shard(lambda pipe, shard: pipe.zcard(keys.callbacks_due(shard)))))

    async def jobs_in_hand(self) -> dict[str, list[str]]:
        """The jobs being processed, by the worker process that holds each (sorted ids)."""
        members = await self._in_every_shard(lambda pipe, shard: pipe.smembers(keys.processing_jobs(shard)))
        job_ids = sorted(str(job_id) for ids in members for job_id in ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(keys.status(job_id), "worker_id")
            holders = await pipe.execute()
        held: dict[str, list[str]] = {}
        for job_id, worker_id in zip(job_ids, holders, strict=True):
            if worker_id:
                held.setdefault(str(worker_id), []).append(job_id)
        return held


def _seconds(reply: bytes | str | None) -> float | None:
    """A seconds figure a script returned as a string ('' while unknown)."""
    return float(reply) if reply else None
