"""Every Prometheus metric visionq exposes, declared once with the names of API.md.

Two kinds live here. Request metrics are counted by each API process in memory. Job and
worker figures are cluster-wide: workers and Lua scripts keep them in Redis (keys.py), and
each scrape of `/metrics` reads them back, so one scrape of any API process shows the whole
fleet, whichever machines its workers run on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from visionq.inference.breaker import breaker_states
from visionq.jobs import heartbeats, keys
from visionq.jobs.states import BROKER_PRIORITY, TERMINAL_STATUSES, JobStatus
from visionq.jobs.tracker import BATCH_BUCKETS, INFERENCE_BUCKETS

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ClusterSnapshot:
    """Job and worker figures read from Redis for one scrape."""

    active_jobs: int = 0
    queue_depth: dict[str, int] = field(default_factory=dict)
    jobs_total: dict[str, int] = field(default_factory=dict)
    inference: dict[str, dict[str, float]] = field(default_factory=dict)
    workers: int = 0
    processing_seconds: float = 0.0
    archive_backlog: int = 0
    dead_letters: int = 0
    breakers: dict[str, int] = field(default_factory=dict)
    """model ref → breaker state as `BreakerState.gauge` (models that never failed have none)."""
    load_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    """(model ref, worker id) → seconds that worker took to load that model."""


async def read_cluster(redis: Redis, queue: str) -> ClusterSnapshot:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.scard(keys.PROCESSING_JOBS)
        pipe.hgetall(keys.JOB_STATS)
        pipe.zcard(keys.ARCHIVE_OUTBOX)
        pipe.zcard(keys.DEAD_LETTERS)
        for step in BROKER_PRIORITY.values():
            pipe.llen(keys.priority_list(queue, step))
        active, totals, backlog, dead_letters, *depths = await pipe.execute()
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
        inference=inference,
        workers=workers,
        archive_backlog=int(backlog),
        dead_letters=int(dead_letters),
        load_seconds=load_seconds,
        breakers={ref: state.gauge for ref, (state, _) in (await breaker_states(redis, closed_too=True)).items()},
    )


class _ClusterCollector(Collector):
    def __init__(self) -> None:
        self.snapshot = ClusterSnapshot()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        yield GaugeMetricFamily("visionq_active_jobs", "Jobs a worker is processing now.", value=snap.active_jobs)
        depth = GaugeMetricFamily("visionq_queue_depth", "Jobs waiting in the queue.", labels=["priority"])
        for priority, count in snap.queue_depth.items():
            depth.add_metric([priority], count)
        yield depth
        jobs = CounterMetricFamily("visionq_jobs", "Jobs that reached a terminal state.", labels=["status"])
        for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            jobs.add_metric([status.value], snap.jobs_total.get(status.value, 0))
        yield jobs
        yield CounterMetricFamily(
            "visionq_job_processing_seconds",
            "Worker seconds spent on completed jobs, from pick-up to stored result.",
            value=snap.processing_seconds,
        )
        yield _histogram(
            "visionq_model_inference_seconds",
            "Seconds spent in model prediction.",
            snap.inference,
            "",
            INFERENCE_BUCKETS,
        )
        yield _histogram(
            "visionq_inference_batch_size", "Images per call of the model.", snap.inference, "batch:", BATCH_BUCKETS
        )
        loads = GaugeMetricFamily(
            "visionq_model_load_seconds",
            "Seconds a live worker took to load a model.",
            labels=["model_version", "worker"],
        )
        for (model_ref, worker), seconds in sorted(snap.load_seconds.items()):
            loads.add_metric([model_ref, worker], seconds)
        yield loads
        breakers = GaugeMetricFamily(
            "visionq_model_breaker_state",
            "Circuit breaker per model: 0 closed, 1 half-open, 2 open.",
            labels=["model_version"],
        )
        for model_ref, gauge in sorted(snap.breakers.items()):
            breakers.add_metric([model_ref], gauge)
        yield breakers
        yield GaugeMetricFamily("visionq_workers", "Live worker processes (fresh heartbeats).", value=snap.workers)
        yield GaugeMetricFamily(
            "visionq_archive_backlog", "Job changes not yet written to the archive.", value=snap.archive_backlog
        )
        yield GaugeMetricFamily(
            "visionq_dlq_size", "Jobs in the dead-letter queue (used up their attempts).", value=snap.dead_letters
        )


class Metrics:
    """The registry of one API process.

    >>> metrics = Metrics()
    >>> metrics.http_requests.labels("GET", "/health", "200").inc()
    >>> b"visionq_http_requests_total" in metrics.render(ClusterSnapshot())
    True
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_duration = Histogram(
            "visionq_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "visionq_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        self._cluster = _ClusterCollector()
        self.registry.register(self._cluster)

    def render(self, snapshot: ClusterSnapshot) -> bytes:
        self._cluster.snapshot = snapshot
        return generate_latest(self.registry)


def _histogram(
    name: str, documentation: str, stats: dict[str, dict[str, float]], prefix: str, bounds: tuple[float, ...]
) -> HistogramMetricFamily:
    """A histogram per model from the counts the workers keep in Redis (see `JobTracker.record_inference`):
    `<prefix>in:<bound>` per bucket, which are summed here into Prometheus's cumulative `le` buckets, and
    `<prefix>count`, `<prefix>sum`."""
    family = HistogramMetricFamily(name, documentation, labels=["model_version"])
    for model_ref, fields in sorted(stats.items()):
        total, buckets = 0.0, []
        for bound in bounds:
            total += fields.get(f"{prefix}in:{bound}", 0.0)
            buckets.append((str(bound), total))
        buckets.append(("+Inf", fields.get(f"{prefix}count", 0.0)))
        family.add_metric([model_ref], buckets, sum_value=fields.get(f"{prefix}sum", 0.0))
    return family
