"""Celery tasks: thin wrappers that take a job id and hand the work to `pipeline.py`.

Failure policy, in one place:
- the job is gone or already finished → nothing to do (a duplicate or late delivery);
- the job's image is gone (expired, or its store lost it) → it fails with `image_missing`;
- a `VisionqError` that is not transient (bad image, unknown model) → the job fails at once with its code;
- Redis away mid-job (a restart, a failover), whatever step it was, even one failing the job → not the job's
  fault: the worker waits for Redis (a third of `stale_job_after` at most), then the job runs again at once, one
  delivery per outage rather than one per quick retry, so that an outage does not use up a job's attempts;
- anything else (a runtime error) → retried with exponential back-off, and once the
  job has used `max_attempts` deliveries it fails and lands in the dead-letter queue, kept for an admin
  to retry once the fault is mended;
- the worker dies mid-job → the unacknowledged message is redelivered (acks_late), counted as an attempt;
  once `poison_after` pool processes died while decoding or running the image, the next delivery fails it
  as `poison_input` and dead-letters it with the evidence (quarantined) instead of taking down more;
- the job waited in the queue past its `max_wait` → it fails with `deadline_exceeded`, unrun;
- the job runs past its soft time limit → it fails with `time_limit_exceeded` and is dead-lettered;
  past the hard limit its process is ended and the job failed the same way: a prefork child is killed and
  replaced by its parent (`pool.py`, which also counts the crashes that make an input poison), a `threads` or
  `solo` worker is ended by its watchdog for its supervisor to replace (`watchdog.py`).
"""

from __future__ import annotations

import logging
import time

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from redis import RedisError

from visionq.errors import VisionqError
from visionq.inference.receipts import build_receipt
from visionq.inference.spec import ModelSpec
from visionq.jobs import cache
from visionq.jobs.records import JobRecord, isoformat, parse_time, utcnow
from visionq.jobs.steps import Steps
from visionq.jobs.tracker import LEADER_DONE, LEADER_RUNNING, PAST_DEADLINE, STALE_MESSAGE, JobTracker, Taken
from visionq.logging import log_context
from visionq.wire.jobs import Receipt, ResultBody, ResultMetadata
from visionq.worker import context, deliveries
from visionq.worker.celery_app import CLASSIFY_TASK
from visionq.worker.deliveries import DELIVER_TASK
from visionq.worker.pipeline import Classification, run_classification
from visionq.worker.pool import ClassifyTask
from visionq.worker.stages import JobNoLongerLive, StageReport
from visionq.worker.watchdog import TIME_LIMIT_EXCEEDED, over_time

log = logging.getLogger(__name__)

#: Seconds a follower of a running identical job waits before its worker looks at it again (jobs/cache.py).
FOLLOW_AGAIN_AFTER = 2.0


@shared_task(
    bind=True,
    base=ClassifyTask,
    name=CLASSIFY_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,
)
def classify_image(self: Task, job_id: str, message: str | None = None) -> None:  # type: ignore[type-arg]
    ctx = context.current()
    picked_up = time.perf_counter()
    try:
        taken = _admit(self, ctx, job_id, message)
    except RedisError as exc:
        raise _after_outage(self, ctx, job_id, exc) from exc
    if taken is None:
        return
    attempts, record = taken.claim.attempts, taken.record
    assert record is not None  # _admit returns only jobs it could read
    dead_lettered = False  # a dead-lettered job keeps its image, for an admin's retry
    try:
        try:
            with (
                log_context(job_id=job_id, attempt=attempts, request_id=record.request_id, owner=record.owner),
                ctx.watching(job_id),
            ):
                _run(ctx, record, taken.image if taken.image is not None else ctx.read_image(record), picked_up)
        except RedisError:
            raise
        except Exception as exc:
            dead_lettered = _handle_failure(self, ctx, job_id, attempts, exc)
    except RedisError as exc:  # from the run, or from the step that would have failed or retried the job
        raise _after_outage(self, ctx, job_id, exc) from exc
    finally:
        ctx.jobs_done += 1
    if not dead_lettered:
        ctx.drop_image(record)


def _after_outage(
    task: Task,  # type: ignore[type-arg]
    ctx: context.WorkerContext,
    job_id: str,
    exc: RedisError,
) -> Exception:
    """Redis went away mid-job: wait for it here, then the job's delivery again at once (its message is not
    acknowledged until then); if it stays away, again after the back-off."""
    log.warning("Redis went away mid-job; waiting for it: %s", exc, extra={"job_id": job_id})
    back = ctx.redis_back(within=ctx.settings.stale_job_after / 3)
    return task.retry(exc=exc, countdown=0 if back else ctx.settings.retry_backoff)


def _handle_failure(
    task: Task,  # type: ignore[type-arg]
    ctx: context.WorkerContext,
    job_id: str,
    attempts: int,
    exc: Exception,
) -> bool:
    """What becomes of a job whose run raised `exc` (not a Redis error: see classify_image): whether it was
    dead-lettered. Raises Retry to run it again."""
    settings = ctx.settings
    if isinstance(exc, JobNoLongerLive):
        log.info("job was cancelled or finished elsewhere; stopped", extra={"job_id": job_id})
        return False
    if isinstance(exc, SoftTimeLimitExceeded):
        log.error("job ran past its soft time limit; dead-lettered", extra={"job_id": job_id})
        return ctx.tracker.dead_letter(job_id, TIME_LIMIT_EXCEEDED, over_time(settings.job_soft_time_limit))
    if isinstance(exc, VisionqError) and not exc.transient:
        ctx.tracker.fail(job_id, exc.code, exc.detail)
        return False
    if attempts < settings.max_attempts:
        if not isinstance(exc, VisionqError):
            log.warning("job failed, retrying", extra={"job_id": job_id, "attempt": attempts}, exc_info=exc)
        raise task.retry(exc=exc, countdown=_backoff(settings.retry_backoff, attempts)) from exc
    if isinstance(exc, VisionqError):
        return ctx.tracker.dead_letter(job_id, exc.code, exc.detail)
    log.error("job used up its attempts; dead-lettered", extra={"job_id": job_id}, exc_info=exc)
    return ctx.tracker.dead_letter(job_id, "internal_error", f"classification failed after {attempts} attempts")


def _admit(
    task: Task,  # type: ignore[type-arg]
    ctx: context.WorkerContext,
    job_id: str,
    message: str | None,
) -> Taken | None:
    """Claim the job and read it: None when it is not to be run (no longer live, a stale copy of its message,
    poison, out of attempts: the last two are dead-lettered here)."""
    taken = ctx.tracker.take(job_id, message)
    attempts, crashes = taken.claim
    if attempts == LEADER_RUNNING:
        # Single flight: an identical job is running; this one is completed from its result when it ends (or,
        # if it fails, runs on its own), so look again in a while without taking it.
        raise task.retry(countdown=FOLLOW_AGAIN_AFTER)
    if attempts == LEADER_DONE and taken.record is not None and taken.leader_result is not None:
        if ctx.tracker.complete_from(taken.record, taken.leader_result):
            log.info("job completed from an identical job's result", extra={"job_id": job_id})
            ctx.drop_image(taken.record)
    elif attempts == PAST_DEADLINE:
        if ctx.tracker.expire(job_id):
            log.info("job's deadline passed before it started; expired", extra={"job_id": job_id})
            ctx.discard_image(job_id)
    elif attempts in (0, STALE_MESSAGE) or taken.record is None:
        # Ended or gone; or this message is a copy the job was published again after (jobs/queue.py).
        why = "a later message of the job supersedes this one" if attempts == STALE_MESSAGE else "no longer live"
        log.info("job not run: %s", why, extra={"job_id": job_id})
    elif 0 < ctx.settings.poison_after <= crashes:
        _quarantine(ctx.tracker, job_id, crashes)
    elif attempts > ctx.settings.max_attempts:
        ctx.tracker.dead_letter(job_id, "internal_error", f"gave up after {ctx.settings.max_attempts} deliveries")
    else:
        return taken
    return None


def _quarantine(tracker: JobTracker, job_id: str, crashes: int) -> None:
    """Fail a job whose image took down `crashes` worker processes, and keep it in the dead-letter queue
    with the evidence (`crash_log`: attempt, stage, worker, when) rather than let it take down more."""
    evidence = tracker.crash_log(job_id)
    stages = sorted({str(entry.get("stage")) for entry in evidence})
    log.error("poison input quarantined", extra={"job_id": job_id, "crashes": crashes, "stages": stages})
    tracker.dead_letter(
        job_id,
        "poison_input",
        f"the worker process died {crashes} times while processing this image (during {', '.join(stages)}); "
        "it was quarantined in the dead-letter queue",
    )


def _run(ctx: context.WorkerContext, record: JobRecord, image: bytes | None, picked_up: float) -> None:
    job_id = record.job_id
    if image is None:
        ctx.tracker.fail(job_id, "image_missing", "the job's image was gone before it could be processed")
        return
    if _overdue(ctx, record):
        return
    choice = _choose_model(ctx, record)
    if choice is None:
        return
    spec, degraded = choice
    try:
        classifier = ctx.registry.get(spec)
    except Exception as exc:
        ctx.failed_to_load(spec, exc)
        raise  # retried: the next attempt finds the breaker open and takes the fallback, if it may
    started_at = utcnow()
    report = StageReport(
        ctx.tracker,
        job_id,
        spec.ref,
        ctx.stage_lengths,
        window=ctx.settings.stage_window,
        always=ctx.always_written,
        checkpoint=ctx.checkpoint,
    )
    labels = ctx.catalog.labels(spec)
    try:
        outcome = run_classification(
            image,
            classifier=classifier,
            labels=labels,
            top=record.top_k,
            max_pixels=ctx.settings.max_pixels,
            report=report,
            draft=ctx.settings.jpeg_draft,
            batcher=ctx.batcher(classifier),
        )
    except (JobNoLongerLive, VisionqError, RedisError):
        raise  # cancelled, the input's fault, or Redis away (the job's stage could not be saved): not the model's
    except Exception as exc:
        ctx.breakers.failed(spec.ref, f"{spec.ref} failed a job: {type(exc).__name__}: {exc}")
        raise
    # Of the model that served the job; the image's digest is the one the API took of the same upload.
    receipt = build_receipt(image, spec, ctx.registry.identity(spec), labels, image_sha256=record.image_sha256)
    result = _result(
        record, outcome, started_at.timestamp(), picked_up, served_by=spec.ref, degraded=degraded, receipt=receipt
    )

    def and_record(steps: Steps) -> None:  # in the round trip that stores the result
        ctx.breakers.succeeded(spec.ref, steps=steps)
        ctx.tracker.record_confidence(spec.ref, result.confidence_score, steps=steps)
        if outcome.led_batch:  # one record per call of the model, with its images
            ctx.tracker.record_inference(spec.ref, outcome.inference_seconds, images=outcome.batch_size, steps=steps)

    completed_at = ctx.tracker.complete(
        result, stages=report.unwritten(), also=and_record, reusable=degraded is None, followed=ctx.drop_image
    )
    if completed_at is None:
        log.info("job finished elsewhere first; result discarded", extra={"job_id": job_id})
        return
    ctx.archiver.completed_here(record.completed(completed_at), result)
    log.info(
        "job completed",
        extra={
            "model_version": spec.ref,
            "processing_time": result.processing_time,
            "top_class": outcome.predictions[0].class_id,
            "degraded_reason": degraded,
        },
    )


def _overdue(ctx: context.WorkerContext, record: JobRecord) -> bool:
    """Fail the job with `deadline_exceeded` if it waited in the queue past its `max_wait` (first delivery)."""
    if not record.max_wait or record.attempts != 1:
        return False
    waited = time.time() - parse_time(record.created_at).timestamp()
    if waited <= record.max_wait:
        return False
    ctx.tracker.fail(
        record.job_id,
        "deadline_exceeded",
        f"the job waited {waited:.1f} s in the queue, longer than its {record.max_wait:g} s; it was not run",
    )
    return True


def _choose_model(ctx: context.WorkerContext, record: JobRecord) -> tuple[ModelSpec, str | None] | None:
    """The model to run the job with, and why it is not the job's own (None when it is); None, after failing
    the job with `model_unavailable`, when its model's breaker is open and no fallback may serve it."""
    spec = ctx.sources.resolve(record.model_version)  # a version published since the last listing is listed
    if ctx.breakers.allow(spec.ref):
        return spec, None
    why = ctx.breakers.reason(spec.ref) or "its circuit breaker is open"
    fallback = ctx.fallback
    if record.allow_fallback and fallback is not None and fallback != spec and ctx.breakers.allow(fallback.ref):
        return fallback, f"{spec.ref} is unavailable ({why}); served by the fallback model {fallback.ref}"
    ctx.tracker.fail(
        record.job_id,
        "model_unavailable",
        f"{spec.ref} is unavailable ({why}) and no fallback may serve this job; try again later"
        + ("" if record.allow_fallback else ", or allow the fallback model (fallback=true)"),
    )
    return None


def _result(
    record: JobRecord,
    outcome: Classification,
    started: float,
    picked_up: float,
    *,
    served_by: str,
    degraded: str | None,
    receipt: Receipt,
) -> ResultBody:
    completed = utcnow()
    created = parse_time(record.created_at).timestamp()
    return ResultBody(
        job_id=record.job_id,
        predictions=outcome.predictions,
        confidence_score=outcome.predictions[0].confidence,
        processing_time=round(time.perf_counter() - picked_up, 6),
        model_version=served_by,
        created_at=record.created_at,
        completed_at=isoformat(completed),
        metadata=ResultMetadata(
            image=outcome.image,
            queue_time=round(max(0.0, started - created), 6),
            total_time=round(completed.timestamp() - created, 6),
            served_by=served_by,
            degraded_reason=degraded,
            batch_size=outcome.batch_size,
            batch_wait=round(outcome.batch_wait, 6),
            receipt=receipt,
            cache=cache.MISS,
        ),
    )


def _backoff(base: float, attempt: int) -> float:
    return float(base * 2 ** (attempt - 1))


@shared_task(name=DELIVER_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_callback(job_id: str) -> None:
    """One delivery attempt of a finished job's callback; a failed attempt is rescheduled by the worker
    (in Redis, not as a Celery retry), until `callback_max_attempts`."""
    deliveries.current().attempt(job_id)
