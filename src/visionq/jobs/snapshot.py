"""The cluster's job and worker figures, read from Redis in one go for a scrape of `/metrics` or an admin."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from visionq.jobs import heartbeats, keys
from visionq.jobs.breakers import breaker_states
from visionq.wire.states import BROKER_PRIORITY, TERMINAL_STATUSES

#: Seconds a job spends in the outbox on its way to a broker apart, at most, while the broker answers.
OUTBOX_GRACE = 5.0


@dataclass
class ClusterSnapshot:
    """Job and worker figures read from Redis for one scrape."""

    active_jobs: int = 0
    queue_depth: dict[str, int] = field(default_factory=dict)
    jobs_total: dict[str, int] = field(default_factory=dict)
    inference: dict[str, dict[str, float]] = field(default_factory=dict)
    workers: int = 0
    processing_seconds: float = 0.0
    cache_lookups: dict[str, int] = field(default_factory=dict)
    """`hit`/`miss` → result cache lookups that found an answer (or an identical job running) / did not."""
    archive_backlog: int = 0
    dead_letters: int = 0
    unpublished: int = 0
    """Jobs in the outbox of a broker apart from job state (jobs/publisher.py) for over OUTBOX_GRACE seconds."""
    breakers: dict[str, int] = field(default_factory=dict)
    """model ref → breaker state as `BreakerState.gauge` (models that never failed have none)."""
    load_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    """(model ref, worker id) → seconds that worker took to load that model."""


async def read_cluster(redis: Redis, queue: str, shards: keys.Shards | None = None) -> ClusterSnapshot:
    """The figures of `queue` and of every worker, from Redis (a client with `decode_responses`), summed over the
    shards of job state."""
    names = (shards or keys.Shards()).names
    steps = list(BROKER_PRIORITY.values())
    async with redis.pipeline(transaction=False) as pipe:
        for shard in names:
            pipe.scard(keys.processing_jobs(shard))
            pipe.hgetall(keys.job_stats(shard))
            pipe.zcard(keys.archive_outbox(shard))
            pipe.zcard(keys.dead_letters(shard))
            pipe.zcount(keys.unpublished(queue, shard), "-inf", time.time() - OUTBOX_GRACE)
            for step in steps:  # the jobs waiting at each priority, whatever the broker
                pipe.zcount(keys.waiting(queue, shard), step * keys.TICKET_SPAN, f"({(step + 1) * keys.TICKET_SPAN}")
        replies = await pipe.execute()
    active = backlog = dead_letters = unpublished = 0
    totals: dict[str, float] = {}
    depths = [0] * len(steps)
    width = 5 + len(steps)
    for at in range(0, len(replies), width):
        shard_active, shard_totals, shard_backlog, shard_dead, shard_unpublished, *shard_depths = replies[
            at : at + width
        ]
        active, backlog = active + int(shard_active), backlog + int(shard_backlog)
        dead_letters, unpublished = dead_letters + int(shard_dead), unpublished + int(shard_unpublished)
        for name, value in shard_totals.items():
            totals[name] = totals.get(name, 0.0) + float(value)
        depths = [depth + int(more) for depth, more in zip(depths, shard_depths, strict=True)]
    inference: dict[str, dict[str, float]] = {}
    async for key in redis.scan_iter(match=f"{keys.INFERENCE_STATS_PREFIX}*", count=100):
        fields = await redis.hgetall(key)
        inference[key.removeprefix(keys.INFERENCE_STATS_PREFIX)] = {str(k): float(v) for k, v in fields.items()}
    live = await heartbeats.live(redis)
    workers = len(live)
    load_seconds = {
        (model_ref, beat.worker_id): seconds for beat in live for model_ref, seconds in beat.load_seconds.items()
    }
    return ClusterSnapshot(
        active_jobs=int(active),
        queue_depth={p.value: int(d) for p, d in zip(BROKER_PRIORITY, depths, strict=True)},
        jobs_total={k: int(v) for k, v in totals.items() if k in TERMINAL_STATUSES},
        processing_seconds=float(totals.get("processing_seconds", 0.0)),
        cache_lookups={"hit": int(totals.get("cache_hits", 0)), "miss": int(totals.get("cache_misses", 0))},
        inference=inference,
        workers=workers,
        archive_backlog=int(backlog),
        dead_letters=int(dead_letters),
        unpublished=int(unpublished),
        load_seconds=load_seconds,
        breakers={ref: state.gauge for ref, (state, _) in (await breaker_states(redis, closed_too=True)).items()},
    )
