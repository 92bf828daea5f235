"""What one worker process holds: settings, catalog, loaded models, Redis, and its housekeeping.

Set up once per process (each prefork child, or the main process for `solo`/`threads`), before
it takes any job: models are loaded and warmed first, then the heartbeat that announces the
process as ready starts, together with the stale-job sweeper.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from redis import Redis, RedisError
from sqlalchemy.exc import SQLAlchemyError

from visionq.archive import schema
from visionq.archive.archiver import Archiver
from visionq.archive.repository import Archive
from visionq.connections import shards, sync_redis
from visionq.errors import VisionqError
from visionq.images import create_image_store
from visionq.inference.batching import Batcher
from visionq.inference.catalog import Catalog
from visionq.inference.classifier import Classifier
from visionq.inference.control import ModelControl
from visionq.inference.export import ExportRefused
from visionq.inference.registry import ModelRegistry
from visionq.inference.repository import RepositoryError, WeightsMismatch
from visionq.inference.sources import ModelSources
from visionq.inference.spec import ModelSpec
from visionq.jobs import heartbeats, keys
from visionq.jobs.breakers import Breakers
from visionq.jobs.heartbeats import Heartbeat
from visionq.jobs.locks import take_turn
from visionq.jobs.records import JobRecord, isoformat, utcnow
from visionq.jobs.replication import ReplicaPolicy
from visionq.jobs.tracker import JobTracker
from visionq.settings import BuiltinRuntime, Settings, WorkerPool
from visionq.wire.states import Stage
from visionq.worker.stages import ALWAYS_WRITTEN, StageLengths
from visionq.worker.watchdog import TIME_LIMIT_EXCEEDED, Watchdog, over_time

log = logging.getLogger(__name__)

#: Seconds between a worker's tries to reach a Redis that went away mid-job.
REDIS_POLL = 0.25


def housekeeping_tick(settings: Settings) -> float:
    """Seconds between a worker's housekeeping passes: the archiver's interval, or the heartbeat's if shorter."""
    return min(settings.archive_interval, settings.heartbeat_interval)


def job_tracker(settings: Settings, redis: Redis, worker_id: str) -> JobTracker:
    """A worker's job steps as `settings` configure them, named `worker_id` in the jobs it takes."""
    return JobTracker(
        redis,
        worker_id=worker_id,
        result_ttl=settings.result_ttl,
        stale_after=settings.stale_job_after,
        dead_letter_ttl=settings.dead_letter_ttl,
        queue=settings.queue,
        replicas=ReplicaPolicy(settings.redis_min_replicas),
        replica_timeout=settings.redis_replica_timeout,
        shards=shards(settings),
    )


class WorkerContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.sources = ModelSources(settings)
        self.catalog: Catalog = self.sources.catalog
        self.registry = ModelRegistry(
            self.catalog,
            device=settings.device,
            threads=settings.threads_per_job,
            cache=settings.model_cache,
            builtin_onnx=settings.builtin_runtime is BuiltinRuntime.ONNX,
            weights=self.sources.ensure_weights,
        )
        self.redis: Redis = sync_redis(settings)
        self.tracker = job_tracker(settings, self.redis, self.worker_id)
        self.models = ModelControl(self.redis, self.catalog, self.registry)
        self.breakers = Breakers(
            self.redis,
            failures=settings.breaker_failures,
            cooldown=settings.breaker_cooldown,
            enabled=settings.breakers,
        )
        self.fallback = self.catalog.resolve(settings.fallback_model) if settings.fallback_model else None
        self.images = create_image_store(settings)
        self.stage_lengths = StageLengths()
        self.archive = Archive(settings.archive_url)
        self.archiver = Archiver(self.redis, self.archive, settle=settings.archive_settle, shards=self.tracker.shards)
        self.started_at = isoformat(utcnow())
        self.jobs_done = 0
        self._archive_failing = False
        self._batchers: dict[str, tuple[Classifier, Batcher]] = {}
        self._batchers_guard = threading.Lock()
        self._stop = threading.Event()
        self._housekeeping: threading.Thread | None = None
        # Celery enforces time limits in prefork children only; in-process pools have a watchdog instead. Stages
        # written as they begin however short: only prefork counts crashes against images (stages.py).
        self.watchdog: Watchdog | None = None
        self.always_written: frozenset[Stage] = ALWAYS_WRITTEN
        if settings.pool is not WorkerPool.PREFORK:
            self.watchdog = Watchdog(soft=settings.job_soft_time_limit, hard=settings.job_time_limit, stuck=self._stuck)
            self.always_written = frozenset()

    def start(self) -> None:
        """Load the models to warm, then announce this process and start its housekeeping."""
        if self.settings.database_migrate:
            schema.upgrade(self.archive.engine)
        # A model that cannot load does not keep the worker from serving the others: its breaker opens.
        self.registry.warm(self.settings.warm_models, failed=self.failed_to_load)
        self.models.apply()
        self.heartbeat()
        self.sources.start()
        self._housekeeping = threading.Thread(target=self._run_housekeeping, name="visionq-housekeeping", daemon=True)
        self._housekeeping.start()
        if self.watchdog is not None:
            self.watchdog.start()
        models = self.registry.loaded()
        log.info(
            "worker process ready: %s, models %s",
            self.worker_id,
            ", ".join(models) or "none loaded yet",
            extra={"worker_id": self.worker_id, "models": models},
        )

    def failed_to_load(self, spec: ModelSpec, exc: Exception) -> None:
        """`spec` could not be loaded: open its breaker, so that its jobs go to the fallback or fail at once
        (with why) until a probe after the cool-down loads it."""
        expected = isinstance(exc, ExportRefused | WeightsMismatch | RepositoryError)  # their message says it all
        log.error("could not load %s: %s", spec.ref, exc, exc_info=not expected)
        self.breakers.failed(spec.ref, f"{spec.ref} failed to load: {exc}", at_once=True)

    def watching(self, job_id: str) -> AbstractContextManager[None]:
        """Hold the calling thread's job to the time limits (prefork's are Celery's, so nothing to do there)."""
        return self.watchdog.watching(job_id) if self.watchdog is not None else nullcontext()

    def checkpoint(self) -> None:
        """Raise SoftTimeLimitExceeded if this thread's job is past the soft time limit (prefork's children get it
        from Celery's signal instead)."""
        if self.watchdog is not None:
            self.watchdog.checkpoint()

    def _stuck(self, job_id: str, limit: float) -> None:
        """The watchdog's last act before the process ends: fail the stuck job (its message, unacknowledged,
        comes back and finds it finished)."""
        try:
            self.tracker.dead_letter(job_id, TIME_LIMIT_EXCEEDED, over_time(limit))
        except RedisError:
            log.exception("could not fail job %s after its hard time limit; the sweeper will", job_id)

    def stop(self) -> None:
        self._stop.set()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.sources.stop()
        if self._housekeeping is not None:
            self._housekeeping.join(timeout=housekeeping_tick(self.settings) + self.settings.redis_timeout)
        self._drain_archive(settled=False)  # what the last jobs changed, before the process goes
        self.archive.close()
        try:
            heartbeats.forget(self.redis, self.worker_id, self.tracker.shards)
        except RedisError:
            log.warning("could not remove the heartbeat of %s", self.worker_id)

    def redis_back(self, within: float) -> bool:
        """Wait up to `within` seconds for Redis to answer again (a restart, a failover: a cluster client learns the
        new layout as it tries); whether it did."""
        deadline = time.monotonic() + within
        while True:
            try:
                self.tracker.answers()
                return True
            except RedisError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(REDIS_POLL)

    def read_image(self, record: JobRecord) -> bytes | None:
        """The job's image from the image store it was put in; None when it is gone, or kept in a store this
        worker does not use (a worker set up unlike its API)."""
        if self.images is None or record.image_store != self.images.name:
            return None
        return self.images.get(record.job_id)

    def drop_image(self, record: JobRecord) -> None:
        """Delete the image of a job that has ended (the Lua step that ended it deleted one kept in Redis)."""
        if self.images is not None and record.image_store == self.images.name:
            self.discard_image(record.job_id)

    def discard_image(self, job_id: str) -> None:
        """Delete a job's image from the image store, if it holds one."""
        if self.images is None:
            return
        try:
            self.images.delete(job_id)
        except VisionqError as exc:  # the image sweep removes it later
            log.warning("could not delete the image of job %s: %s", job_id, exc.detail)

    def batcher(self, classifier: Classifier) -> Batcher:
        """The batcher the process's jobs share for `classifier` (a new one if the model was loaded again)."""
        ref = classifier.spec.ref
        with self._batchers_guard:
            held = self._batchers.get(ref)
            if held is None or held[0] is not classifier:
                settings = self.settings
                held = (
                    classifier,
                    Batcher(classifier.predict, max_size=settings.batch_size, max_wait=settings.batch_max_wait),
                )
                self._batchers[ref] = held
            return held[1]

    def heartbeat(self) -> None:
        beat = Heartbeat(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queue=self.settings.queue,
            started_at=self.started_at,
            seen_at=isoformat(utcnow()),
            models=self.registry.loaded(),
            load_seconds=self.registry.load_seconds,
            exports=self._exports(),
            jobs_done=self.jobs_done,
            pool=self.settings.pool.value,
            # A prefork child, like a solo worker, runs one job at a time; a threads worker, its concurrency.
            concurrency=self.settings.concurrency if self.settings.pool is WorkerPool.THREADS else 1,
        )
        heartbeats.beat(self.redis, beat, interval=self.settings.heartbeat_interval, shards=self.tracker.shards)

    def _exports(self) -> dict[str, dict[str, Any]]:
        """How each model this process loaded runs: `runtime`, the `agreement` and `sample` of a built-in's
        export check (None for a model run as it is), and the `weights_sha256` and `runtime_version` of what ran."""
        exports: dict[str, dict[str, Any]] = {
            ref: {"runtime": v.runtime, "agreement": v.agreement, "sample": v.sample, "cpu_feature": v.cpu_feature}
            for ref, v in self.registry.exports.items()
        }
        for ref, identity in list(self.registry.identities.items()):  # a job's thread may load a model meanwhile
            entry = exports.setdefault(ref, {"runtime": identity.engine.value, "agreement": None, "sample": None})
            entry |= {"weights_sha256": identity.weights_sha256, "runtime_version": identity.runtime_version}
        return exports

    def _run_housekeeping(self) -> None:
        # One tick for every chore, each run when its interval is due (within half a tick: a wait may end a little
        # early, and the next pass would be a whole tick late). The tick is the archiver's interval or the
        # heartbeat's, the shorter: a long archive interval must not space the beats out until the worker looks
        # dead (three intervals without one: gone from /admin/workers, the readiness check degraded).
        settings = self.settings
        tick = housekeeping_tick(settings)
        last_beat = last_sweep = last_image_sweep = last_archive = time.monotonic()
        while not self._stop.wait(tick):
            now = time.monotonic() + tick / 2  # what is due within half a tick is due now
            try:
                # What a job would otherwise read on its way (a breaker, the replica count), read here first.
                self.breakers.refresh(ahead=tick)
                self.tracker.refresh_replicas(ahead=tick)
                if now - last_beat >= settings.heartbeat_interval:
                    self.models.apply()  # before the beat, which reports what is loaded
                    self.heartbeat()
                    last_beat = now
                if now - last_sweep >= settings.sweep_interval:
                    self.tracker.sweep()
                    self._requeue_lost()
                    last_sweep = now
                if now - last_image_sweep >= settings.image_sweep_interval:
                    self._sweep_images()
                    last_image_sweep = now
            except RedisError as exc:
                log.warning("housekeeping skipped, Redis unreachable: %s", exc)
            if now - last_archive >= settings.archive_interval:
                self._drain_archive()
                last_archive = now

    def _requeue_lost(self) -> None:
        """Queue again the live jobs whose message was lost (JobTracker.lost_messages); one worker at a time (a
        lock for one sweep interval). Only where the broker is the job-state Redis, whose queues can be read: a
        broker apart keeps its messages itself (RabbitMQ's durable queues, publisher confirms) and the outbox
        covers the way there."""
        settings = self.settings
        if not settings.requeue_lost_after or settings.broker_apart:
            return
        if not take_turn(self.redis, keys.requeue_lock(settings.queue), self.worker_id, settings.sweep_interval):
            return
        lost = self.tracker.lost_messages(
            settings.queue, waited=settings.requeue_lost_after, image_ttl=settings.image_ttl
        )
        for job_id, priority in lost:
            log.warning("job's message was lost; queued again", extra={"job_id": job_id})
            self.tracker.requeue(job_id, settings.queue, priority)

    def _sweep_images(self) -> None:
        """Remove the images no job holds any more (left by a crash, or a submit whose reply was lost) once they
        are older than any queued job's; one worker at a time (a lock for one image sweep interval)."""
        settings = self.settings
        if self.images is None or not take_turn(
            self.redis, keys.IMAGE_SWEEP_LOCK, self.worker_id, settings.image_sweep_interval
        ):
            return
        try:
            removed = self.images.sweep(time.time() - settings.image_ttl, keep=self.tracker.holding_images)
        except VisionqError as exc:
            log.warning("image sweep skipped: %s", exc.detail)
            return
        if removed:
            log.info("image sweep removed %d images no job holds", removed)

    def _drain_archive(self, *, settled: bool = True) -> None:
        # An outage is logged when it starts and when it ends, not on every tick in between.
        try:
            while self.archiver.drain(settled=settled) >= self.archiver.batch:
                pass
        except (RedisError, SQLAlchemyError) as exc:
            if not self._archive_failing:
                log.warning("archiving delayed until the archive and Redis are reachable again: %s", exc)
            self._archive_failing = True
            return
        if self._archive_failing:
            log.warning("archiving resumed")
        self._archive_failing = False


_current: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    """Make `context` this process's: once per process (a second one would run beside the first)."""
    global _current
    if _current is not None:
        raise RuntimeError("this worker process is set up already")
    _current = context


def current() -> WorkerContext:
    if _current is None:
        raise RuntimeError("the worker process was not set up: start it with `visionq worker`")
    return _current
