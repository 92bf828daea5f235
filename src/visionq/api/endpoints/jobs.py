"""The caller's jobs as a collection: GET /jobs (from the archive), GET /jobs/{id}/deliveries (its callback
attempts) and DELETE /jobs/{id} (cancel)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.dependencies import ArchiveDep, ImagesDep, JobStoreDep, PrincipalDep, VisibleJobDep
from visionq.api.problems import problem_responses, protected_responses
from visionq.api.security import require_admin
from visionq.archive.repository import MAX_PAGE, BadCursor, JobQuery
from visionq.archive.rows import error_from_row
from visionq.archive.tables import ArchivedJob
from visionq.jobs.records import JobRecord, isoformat
from visionq.wire.jobs import ImageInfo, Prediction, StatusBody, dump_status
from visionq.wire.schemas import DeliveriesBody, DeliveryAttempt, JobPageBody, JobSummary, Links
from visionq.wire.states import JobStatus, Priority

router = APIRouter(tags=["jobs"], responses=protected_responses())


@router.get("/jobs", response_model=JobPageBody, responses=problem_responses(errors.ValidationFailed))
async def list_jobs(
    store: JobStoreDep,
    archive: ArchiveDep,
    principal: PrincipalDep,
    status: Annotated[list[JobStatus] | None, Query(description="Only jobs in these statuses (repeatable).")] = None,
    model: Annotated[
        str | None, Query(max_length=200, description="A model name (any version) or `name@version`.")
    ] = None,
    created_after: Annotated[datetime | None, Query(description="RFC 3339; jobs created at or after it.")] = None,
    created_before: Annotated[datetime | None, Query(description="RFC 3339; jobs created before it.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Jobs per page.")] = 20,
    cursor: Annotated[str | None, Query(max_length=500, description="`next_cursor` of the previous page.")] = None,
    owner: Annotated[
        str | None, Query(max_length=200, description="Admins only: another principal's jobs (`key:<id>`).")
    ] = None,
) -> JobPageBody:
    """The caller's jobs, newest first, a page at a time. Jobs reach this list through the archive, within
    about a second of being accepted; the status of a job still running is read live."""
    for bound, name in ((created_after, "created_after"), (created_before, "created_before")):
        if bound is not None and bound.tzinfo is None:
            raise errors.ValidationFailed(f"`{name}` needs a time zone, as RFC 3339 has: `2026-11-27T10:00:00Z`")
    if owner is not None and owner != principal.id:
        require_admin(principal)
    query = JobQuery(
        owner=owner or principal.id,
        statuses=[value.value for value in status or ()],
        model=model,
        created_after=created_after,
        created_before=created_before,
        limit=limit,
        cursor=cursor,
    )
    try:
        page = await run_in_threadpool(archive.list_jobs, query)
    except BadCursor as exc:
        raise errors.ValidationFailed(str(exc)) from exc
    running = [job.job_id for job in page.jobs if not JobStatus(job.status).terminal]
    live = dict(zip(running, await asyncio.gather(*(store.get(job_id) for job_id in running)), strict=True))
    return JobPageBody(jobs=[_summary(job, live.get(job.job_id)) for job in page.jobs], next_cursor=page.next_cursor)


def _summary(row: ArchivedJob, live: JobRecord | None) -> JobSummary:
    """The archived row, with the live status and time of a job that is still running."""
    top = Prediction.model_validate(row.predictions[0]) if row.predictions else None
    return JobSummary(
        job_id=row.job_id,
        status=live.status if live is not None else JobStatus(row.status),
        model_version=row.model_version,
        priority=Priority(row.priority),
        created_at=isoformat(row.created_at),
        updated_at=live.updated_at if live is not None else isoformat(row.updated_at),
        completed_at=isoformat(row.completed_at) if row.completed_at else None,
        top_prediction=top,
        confidence_score=row.confidence_score,
        error=error_from_row(row),
        image=ImageInfo(width=row.image_width, height=row.image_height, format=row.image_format),
        links=Links(status=f"/status/{row.job_id}", result=f"/result/{row.job_id}", websocket=f"/ws/{row.job_id}"),
    )


@router.get("/jobs/{job_id}/deliveries", response_model=DeliveriesBody, responses=problem_responses(errors.JobNotFound))
async def list_deliveries(job_id: str, record: VisibleJobDep, store: JobStoreDep) -> DeliveriesBody:
    """Every attempt to deliver the job's callback, oldest first (empty until the job ends, or without a
    callback URL). Kept as long as the job's result."""
    attempts = [DeliveryAttempt.model_validate_json(entry) for entry in await store.get_deliveries(job_id)]
    return DeliveriesBody(job_id=job_id, callback_url=record.callback_url, deliveries=attempts)


@router.delete(
    "/jobs/{job_id}",
    response_model=StatusBody,
    responses=problem_responses(errors.JobNotFound, errors.Conflict),
)
async def cancel_job(job_id: str, record: VisibleJobDep, store: JobStoreDep, images: ImagesDep) -> JSONResponse:
    """Cancel a job: at once if queued, at its next stage if running; 409 if it already finished."""
    if not await store.cancel(job_id):
        record = await store.require(job_id)
        raise errors.Conflict(
            f"job {job_id} is already {record.status.value}; only queued or running jobs can be cancelled"
        )
    if images is not None and record.image_store == images.name:
        with contextlib.suppress(errors.VisionqError):  # else the image sweeper removes it
            await run_in_threadpool(images.delete, job_id)
    return JSONResponse(dump_status((await store.require(job_id)).status_body()))
