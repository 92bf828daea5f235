"""POST /classify: validate an upload, store it, queue the job, answer at once."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.dependencies import PrincipalDep, StateDep
from visionq.api.problems import problem_responses, protected_responses
from visionq.api.schemas import ClassifyForm, JobAccepted, Links
from visionq.api.state import AppState
from visionq.api.uploads import FILE_FIELD, read_upload
from visionq.callbacks.targets import check_callback_url
from visionq.imaging.decode import check_image
from visionq.jobs.idempotency import RESERVATION_TTL, IdempotencyKeys, answer_entry, fingerprint
from visionq.jobs.records import JobRecord, isoformat, parse_time, utcnow
from visionq.jobs.states import JobStatus, Stage
from visionq.telemetry import current_traceparent
from visionq.worker.celery_app import CLASSIFY_TASK

log = logging.getLogger(__name__)

router = APIRouter(tags=["classification"], responses=protected_responses())

#: Attempts to hand a job to the broker before the request fails with 503 (the job is then failed too).
ENQUEUE_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.5}
#: Seconds an API process goes on settling a submit it refused with Redis away (`_settle_in_background`), and
#: between tries. Well within RESERVATION_TTL, so the reservation it frees is still its own request's.
SETTLE_FOR, SETTLE_EVERY = RESERVATION_TTL / 3, 0.5
_settling: set[asyncio.Task[None]] = set()


def _request_body_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {FILE_FIELD: {"type": "string", "format": "binary", "description": "The image."}}
    form_schema = ClassifyForm.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in form_schema["properties"].items():
        properties[name] = schema
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": [FILE_FIELD], "properties": properties}
                }
            },
        }
    }


@router.post(
    "/classify",
    status_code=202,
    response_model=JobAccepted,
    responses={
        200: {"model": JobAccepted, "description": "The original job of this `Idempotency-Key` (a replay)."},
        **problem_responses(
            errors.InvalidImage,
            errors.UnsupportedMediaType,
            errors.PayloadTooLarge,
            errors.ImageTooLarge,
            errors.ModelNotFound,
            errors.Conflict,
            errors.QueueFull,
            errors.BrokerUnavailable,
        ),
    },
    openapi_extra=_request_body_schema(),
)
async def classify(
    request: Request,
    response: Response,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="The same key from the same principal within 24 h returns the original job (200).",
        ),
    ] = None,
) -> JobAccepted | JSONResponse:
    """Submit an image for classification; answers 202 with the job id at once."""
    settings = state.settings
    upload = await read_upload(request, max_file_bytes=settings.max_upload_bytes)
    form = _parse_form(upload.fields)
    if upload.file is None:
        raise errors.ValidationFailed(f"the `{FILE_FIELD}` field with the image is missing")
    owner = principal.id
    # Computed once, off the event loop: the archive keeps it, and idempotency compares requests by it.
    digest = await run_in_threadpool(lambda: hashlib.sha256(upload.file or b"").hexdigest())
    if idempotency_key is None:
        record, wait = await _store_and_queue(request, state, owner, form, upload.file, digest)
        return await _confirm(response, state, record, wait)

    remembered = IdempotencyKeys(state.redis)
    fields = (
        form.model_version,
        form.priority.value,
        str(form.top_k),
        str(form.callback_url or ""),
        str(form.fallback),
        str(form.max_wait),
    )
    request_print = fingerprint(digest, *fields)
    original = await remembered.reserve(owner, idempotency_key, request_print)
    if original is not None:
        return JSONResponse(original, headers={"Location": original["links"]["status"], "Idempotent-Replayed": "true"})
    try:
        record, wait = await _store_and_queue(request, state, owner, form, upload.file, digest)
    except BaseException:
        try:
            await remembered.release(owner, idempotency_key)
        except RedisError:  # Redis away: free the key as soon as it is back, not when the reservation expires
            _settle_in_background(lambda: remembered.release(owner, idempotency_key))
        raise
    # Never released from here on: if the confirmation fails, it may have been done, and the key have its answer.
    return await _confirm(response, state, record, wait, remember=(owner, idempotency_key, request_print))


async def _store_and_queue(
    request: Request,
    state: AppState,
    owner: str,
    form: ClassifyForm,
    image: bytes,
    digest: str,
) -> tuple[JobRecord, float | None]:
    """Check the request, store the job and its image, hand it to the broker: the job, and its estimated wait."""
    settings = state.settings
    spec = state.catalog.resolve(form.model_version, latest=await state.latest.get())
    if form.callback_url is not None:
        if settings.callback_secret is None:
            raise errors.ValidationFailed(
                "callbacks are off on this service: it has no VISIONQ_CALLBACK_SECRET to sign them with"
            )
        check_callback_url(str(form.callback_url), allow_private=settings.callback_allow_private)
    await state.backpressure.check(lambda: state.store.estimate_wait(settings.queue, form.priority.broker_priority))
    # Checked, not decoded: the worker decodes it once, for the model. Off the event loop all the same.
    decoded = await run_in_threadpool(check_image, image, max_pixels=settings.max_pixels)

    now = isoformat(utcnow())
    record = JobRecord(
        job_id=str(uuid.uuid4()),
        status=JobStatus.PENDING,
        stage=Stage.QUEUED,
        created_at=now,
        updated_at=now,
        model_version=spec.ref,
        priority=form.priority,
        top_k=form.top_k,
        callback_url=str(form.callback_url) if form.callback_url else None,
        image_format=decoded.format,
        image_width=decoded.width,
        image_height=decoded.height,
        owner=owner,
        image_sha256=digest,
        request_id=request.state.request_id,
        traceparent=current_traceparent(),
        allow_fallback=settings.allow_fallback if form.fallback is None else form.fallback,
        max_wait=min((w for w in (form.max_wait, settings.max_queue_wait) if w), default=None),
    )
    request.state.job_id = record.job_id  # for the access log
    wait = await state.store.create(record, image, queue=settings.queue)
    await enqueue(state, record)
    return record, wait


async def _confirm(
    response: Response,
    state: AppState,
    record: JobRecord,
    wait: float | None,
    *,
    remember: tuple[str, str, str] | None = None,
) -> JobAccepted:
    """Confirm the queued job, so that it may run, and answer `202`. With `remember` (owner, Idempotency-Key,
    request fingerprint), the key gets the answer in the same step. Without a confirmation, 503: the job then
    never runs, so the client's retry makes the only one."""
    links = Links(
        status=f"/status/{record.job_id}", result=f"/result/{record.job_id}", websocket=f"/ws/{record.job_id}"
    )
    accepted = JobAccepted(
        job_id=record.job_id,
        status=record.status,
        created_at=record.created_at,
        estimated_completion=None
        if wait is None
        else isoformat(parse_time(record.created_at) + timedelta(seconds=wait)),
        model_version=record.model_version,
        priority=record.priority,
        links=links,
    )
    entry = None if remember is None else answer_entry(*remember, accepted.model_dump(mode="json"))
    reservation = None if entry is None else entry[0]
    try:
        confirmed = await state.store.confirm(record.job_id, state.settings.queue, remember=entry)
    except RedisError as exc:
        # Done or not, nobody can tell yet. Not done, the job never runs; done, it runs and the Idempotency-Key
        # (if any) has its answer: a retry with the key gets the job back either way. Once Redis is back, the
        # job is settled, so that the key's retry need not wait for its reservation to expire.
        _settle_in_background(lambda: state.store.settle_refused(record.job_id, reservation))
        raise errors.BrokerUnavailable(
            "the job store went away as the job was queued; try again with the same Idempotency-Key", retry_after=5
        ) from exc
    if not confirmed:  # too late: a worker that got its message gave it up; free the key for the retry
        _settle_in_background(lambda: state.store.settle_refused(record.job_id, reservation))
        raise errors.BrokerUnavailable("the job could not be confirmed in time; try again", retry_after=5)
    response.headers["Location"] = links.status
    return accepted


def _settle_in_background(attempt: Callable[[], Awaitable[None]]) -> None:
    """Try `attempt` again every `SETTLE_EVERY` seconds until Redis answers, for `SETTLE_FOR` seconds at most,
    without holding up the request's answer."""

    async def run() -> None:
        deadline = time.monotonic() + SETTLE_FOR
        while True:
            try:
                await attempt()
                return
            except RedisError:
                if time.monotonic() >= deadline:
                    log.warning("gave up settling a refused submit: Redis still unreachable")
                    return
                await asyncio.sleep(SETTLE_EVERY)

    task = asyncio.create_task(run())
    _settling.add(task)  # the event loop holds tasks weakly
    task.add_done_callback(_settling.discard)


def _parse_form(fields: dict[str, str]) -> ClassifyForm:
    try:
        return ClassifyForm.model_validate({k: v for k, v in fields.items() if v != ""})
    except ValidationError as exc:
        problems = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
        raise errors.ValidationFailed(f"the form is not valid: {summary}", errors=problems) from exc


async def enqueue(state: AppState, record: JobRecord) -> None:
    """Hand the job to the broker; if it cannot be, fail the job and answer 503."""
    try:
        await run_in_threadpool(
            state.celery.send_task,
            CLASSIFY_TASK,
            args=[record.job_id],
            queue=state.settings.queue,
            priority=record.priority.broker_priority,
            retry=True,
            retry_policy=ENQUEUE_RETRY_POLICY,
        )
    except (OperationalError, RedisError, OSError) as exc:
        # The job was stored but never queued: close it so nobody waits for it, then tell the client.
        with contextlib.suppress(RedisError):
            await state.store.fail(record.job_id, "broker_unavailable", "the job could not be queued")
        raise errors.BrokerUnavailable("the job queue is unreachable; try again shortly", retry_after=5) from exc
