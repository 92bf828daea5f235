"""Following a job: GET /status/{id}, GET /result/{id} (from the archive once Redis has let it go), and the
WebSocket /ws/{id}."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette import status as http
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.dependencies import (
    ArchiveDep,
    EventsDep,
    JobStoreDep,
    PrincipalDep,
    StateDep,
    VisibleJobDep,
    get_state,
)
from visionq.api.problems import problem_responses, protected_responses
from visionq.api.security import check_owner
from visionq.api.waiting import PREFERENCE_APPLIED_DOC, PreferWaitDep, preference_applied, wait_for_end
from visionq.archive.repository import Archive
from visionq.archive.rows import outcome_from_row
from visionq.auth.principals import Principal
from visionq.jobs.events import Updates
from visionq.jobs.records import JobRecord, Place
from visionq.jobs.store import JobStore
from visionq.settings import AuthMode
from visionq.wire.jobs import FailureBody, ResultBody, StatusBody, dump_status
from visionq.wire.states import JobStatus

log = logging.getLogger(__name__)

router = APIRouter(tags=["jobs"], responses=protected_responses())

#: The job's WebSocket: a plain Starlette route (watch_job), which names it to the access log itself.
WS_ROUTE = "/ws/{job_id}"
#: Close code for an unknown job id on the WebSocket (API.md), and for another principal's job.
WS_UNKNOWN_JOB = 4404
#: Close code for missing or invalid credentials (4000 + the HTTP status, like 4404).
WS_UNAUTHORIZED = 4401
#: Longest close reason the WebSocket protocol carries (123 bytes); ours are ASCII.
WS_REASON_MAX = 123
#: Seconds a WebSocket waits for a pushed update before re-reading the job, in case one was missed.
WS_RESYNC_INTERVAL = 5.0


#: Seconds between the queue positions a WebSocket pushes for a pending job (API.md: at most once a second).
WS_PLACE_INTERVAL = 1.0
#: How long a client or CDN may keep a terminal job's answer: it never changes.
IMMUTABLE_FOR = 86400


@router.get("/status/{job_id}", response_model=StatusBody, responses=problem_responses(errors.JobNotFound))
async def get_status(record: VisibleJobDep, store: JobStoreDep) -> JSONResponse:
    """Where a job is: status, stage and progress; for a pending job, its queue position and estimated start."""
    return JSONResponse(await _status(store, record))


async def _status(store: JobStore, record: JobRecord) -> dict[str, Any]:
    """The status body, with a pending job's place in the queue (one more round trip, for pending jobs only)."""
    place = await store.place(record.job_id) if record.status is JobStatus.PENDING else None
    return dump_status(record.status_body(place))


@router.get(
    "/result/{job_id}",
    response_model=ResultBody | FailureBody,
    responses={
        200: {"headers": PREFERENCE_APPLIED_DOC},
        202: {
            "model": StatusBody,
            "description": "The job is still pending or processing (after the wait asked for, if any).",
            "headers": PREFERENCE_APPLIED_DOC,
        },
        304: {"description": "The terminal answer the client holds (`If-None-Match` with its `ETag`) is current."},
        **problem_responses(errors.JobNotFound),
    },
)
async def get_result(
    job_id: str,
    store: JobStoreDep,
    archive: ArchiveDep,
    principal: PrincipalDep,
    events: EventsDep,
    wait: PreferWaitDep,
    state: StateDep,
    if_none_match: Annotated[
        str | None,
        Header(alias="If-None-Match", description="The `ETag` of a terminal answer held: 304 while it is current."),
    ] = None,
) -> Response:
    """The predictions of a completed job; 202 with the status while it runs. `Prefer: wait=N` holds the request
    until the job ends or N seconds pass. Once Redis has let a result expire, it comes from the archive. A
    terminal answer never changes: it carries an `ETag` and may be cached (`Cache-Control`)."""
    record = await store.get(job_id)
    if record is not None:
        check_owner(principal, record.owner, job_id)
    result: bytes | None = None
    if record is not None and wait and not record.status.terminal:
        record, result = await wait_for_end(events, store, job_id, wait)
    if record is None:
        response = await _archived_result(archive, job_id, principal)
    else:
        response = await _job_answer(store, record, result)
    if response.status_code == http.HTTP_200_OK:
        response = _cacheable(response, if_none_match, shared=state.settings.auth is AuthMode.OFF)
    else:
        response.headers["Cache-Control"] = "no-store"
    response.headers.update(preference_applied(wait))
    return response


def _cacheable(response: Response, if_none_match: str | None, *, shared: bool) -> Response:
    """A terminal answer with its validator (a digest of the body: the Redis and archive copies of one result
    may differ in form) and caching headers; 304 when the client already holds it. `shared`: caches between the
    client and the service (a CDN) may keep it too, since no credentials are needed to read it."""
    etag = f'"{hashlib.sha256(response.body).hexdigest()[:32]}"'
    scope = "public" if shared else "private"
    headers = {"ETag": etag, "Cache-Control": f"{scope}, max-age={IMMUTABLE_FOR}, immutable"}
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(status_code=http.HTTP_304_NOT_MODIFIED, headers=headers)
    response.headers.update(headers)
    return response


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: `*`, or any listed tag equal to `etag` under weak comparison."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _job_answer(store: JobStore, record: JobRecord, result: bytes | None) -> Response:
    """GET /result's answer for a job Redis holds; `result` is its result JSON when already at hand."""
    if record.status is JobStatus.COMPLETED:
        body = result if result is not None else await store.get_result(record.job_id)
        if body is None:
            raise errors.JobNotFound(f"the result of job {record.job_id!r} has expired")
        return Response(body, media_type="application/json")
    if record.status.terminal:
        return JSONResponse(record.failure_body().model_dump(mode="json"))
    return JSONResponse(await _status(store, record), status_code=http.HTTP_202_ACCEPTED)


async def _archived_result(archive: Archive, job_id: str, principal: Principal) -> Response:
    row = await run_in_threadpool(archive.find, job_id)
    if row is not None:
        check_owner(principal, row.owner, job_id)
    outcome = outcome_from_row(row) if row is not None else None
    if outcome is None:  # unknown, or archived while pending and never finished in time to be kept
        raise errors.JobNotFound(f"no job {job_id!r}: the id is unknown or its result has expired")
    return JSONResponse(outcome.model_dump(mode="json"))


async def watch_job(websocket: WebSocket) -> None:
    """Pushes the status body on connect and on every change, then the result once, then closes."""
    # A plain Starlette route that looks up what it needs by hand: FastAPI's resolution of dependencies and path
    # parameters costs more than the look-ups, and a socket is opened for most jobs.
    job_id: str = websocket.path_params["job_id"]
    state = await get_state(websocket)
    store, events = state.store, state.events
    logged = websocket.scope.setdefault("state", {})  # for the access log: a plain route names no template
    logged["route"], logged["job_id"] = WS_ROUTE, job_id
    await websocket.accept()
    try:
        principal = await state.auth.principal(websocket)
    except errors.Unauthorized as refused:
        await websocket.close(code=WS_UNAUTHORIZED, reason=refused.detail[:WS_REASON_MAX])
        return
    logged["principal"] = principal.id
    # Watch before the first read, so no update between the read and the subscription is lost.
    async with events.watch(job_id) as updates:
        record, place = await store.get_placed(job_id)
        if record is None or not principal.may_see(record.owner):
            await websocket.close(code=WS_UNKNOWN_JOB, reason="unknown job id")
            return
        # The stream waits on updates, not on the client: a listener ends it as soon as the client leaves
        # (or the server shuts down), instead of when the job next changes.
        streaming = asyncio.create_task(_stream(websocket, store, record, updates, place))
        listening = asyncio.create_task(_until_disconnected(websocket))
        try:
            await asyncio.wait({streaming, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, listening):
                task.cancel()
            with contextlib.suppress(WebSocketDisconnect, asyncio.CancelledError):
                await streaming


router.add_websocket_route(WS_ROUTE, watch_job)


async def _until_disconnected(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends until it disconnects."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


async def _stream(
    websocket: WebSocket, store: JobStore, record: JobRecord, updates: Updates, place: Place | None
) -> None:
    """`place`: the place in the queue read with `record` (None when it is not waiting)."""
    last_sent: dict[str, Any] | None = None
    result: bytes | None = None
    read_at = time.monotonic()
    while True:
        if record.status is JobStatus.PENDING and place is None:
            # Pending but out of the queue: it was just taken, cancelled or expired, and the update saying so is on
            # its way or was missed. The job itself says which.
            record, read_at = await store.get(record.job_id) or record, time.monotonic()
            if record.status is JobStatus.PENDING:
                place = await store.place(record.job_id)
        body = dump_status(record.status_body(place))
        if body != last_sent:
            await websocket.send_json(body)
            last_sent = body
        if record.status.terminal:
            await _send_outcome(websocket, store, record, result)
            await websocket.close(code=1000)
            return
        record, result, read = await _next_state(store, record, updates, since_read=time.monotonic() - read_at)
        if read:
            read_at = time.monotonic()
        place = await store.place(record.job_id) if record.status is JobStatus.PENDING else None


async def _next_state(
    store: JobStore, record: JobRecord, updates: Updates, *, since_read: float
) -> tuple[JobRecord, bytes | None, bool]:
    """The job's next state, with the result JSON when the update carried it, and whether the job was read: the
    next update pushed, or a fresh read when none came for a while (one may have been missed) or the events layer
    says some were. A pending job's place in the queue moves on without updates: for it the wait is short, and the
    job is read again only every WS_RESYNC_INTERVAL (its place is read by the caller)."""
    # asyncio.timeout, not wait_for: on Python 3.11, wait_for can swallow the handler's cancellation when an
    # update arrives at the same moment, and the stream would outlive its socket.
    pending = record.status is JobStatus.PENDING
    try:
        async with asyncio.timeout(WS_PLACE_INTERVAL if pending else WS_RESYNC_INTERVAL):
            while True:
                update = await updates.get()
                if update is None:
                    break
                try:
                    applied = update.apply(record)
                except ValidationError:
                    log.warning("an update of job %s could not be applied; reading the job again", record.job_id)
                    break
                if not applied.is_older_than(record):  # else queued while the stream read the job: passed
                    return applied, update.result, False
    except TimeoutError:
        if pending and since_read + WS_PLACE_INTERVAL < WS_RESYNC_INTERVAL:
            return record, None, False
    return await store.get(record.job_id) or record, None, True


async def _send_outcome(websocket: WebSocket, store: JobStore, record: JobRecord, result: bytes | None) -> None:
    """The last message: the result body of a completed job (from its final update when that carried it), else
    the failure body."""
    if record.status is JobStatus.COMPLETED and result is None:
        result = await store.get_result(record.job_id)
    if record.status is JobStatus.COMPLETED and result is not None:
        await websocket.send_text(result.decode())
    else:
        await websocket.send_json(record.failure_body().model_dump(mode="json"))
