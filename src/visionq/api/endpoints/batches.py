"""Batches: many images in one request, each its own job, followed as one (`POST /batches`, API.md "Batches").

A batch's images come as `file` parts or as one zip or tar archive (api/archives.py). Each image becomes a job
of the batch's owner at the batch's priority (`low` unless the form says otherwise), made exactly as
`POST /classify` makes jobs; an image refused alone (not an image, too large) is a failed item with its problem,
and the rest go on. Counts are kept by the jobs' own steps (jobs/batches.py), so a batch's status is O(1).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from starlette import status as http
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.archives import Limits, is_archive, unpack
from visionq.api.dependencies import PrincipalDep, StateDep
from visionq.api.endpoints.classification import (
    CACHE_CONTROL,
    CACHE_CONTROL_PARAMETER,
    is_no_cache,
    parse_form,
    request_body_schema,
)
from visionq.api.problems import problem_responses, protected_responses
from visionq.api.state import AppState
from visionq.api.submission import Accepted, Part
from visionq.api.uploads import FILE_FIELD, read_upload
from visionq.archive.rows import archived_items, batch_body
from visionq.archive.tables import ArchivedBatch
from visionq.auth.principals import Principal
from visionq.jobs.batches import PAGE, BatchStore
from visionq.wire.schemas import BATCH_CSV_COLUMNS, BatchAccepted, BatchStatus, batch_csv_row
from visionq.wire.states import Priority

router = APIRouter(tags=["batches"], responses=protected_responses())

#: Seconds between the reads of a batch's counts for its WebSocket.
WS_BATCH_INTERVAL = 0.5
#: Close code of the WebSocket for an unknown batch, or another's (as for a job's).
WS_UNKNOWN_BATCH = 4404
#: Items one results page may hold.
MAX_PAGE = 10_000


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchAccepted,
    responses=problem_responses(
        errors.PayloadTooLarge, errors.UnsupportedMediaType, errors.ModelNotFound, errors.QueueFull
    ),
    openapi_extra={**request_body_schema(archive=True), "parameters": [CACHE_CONTROL_PARAMETER]},
)
async def create_batch(request: Request, state: StateDep, principal: PrincipalDep) -> JSONResponse:
    """Submit many images at once: `file` parts, or one zip or tar archive in `file`; the same optional fields and
    `Cache-Control` as `POST /classify` (`priority` default `low`). Answers 202 with the batch id at once."""
    settings = state.settings
    upload = await read_upload(
        request,
        max_file_bytes=max(settings.max_upload_bytes, settings.max_batch_bytes),
        max_files=settings.max_batch_items,
        max_total_bytes=settings.max_batch_bytes,
    )
    form = parse_form({"priority": Priority.LOW.value, **upload.fields})
    if not upload.files:
        raise errors.ValidationFailed(f"the batch's images are missing: send `{FILE_FIELD}` parts or an archive")
    if len(upload.files) == 1 and is_archive(upload.files[0].data):
        limits = Limits(settings.max_batch_items, settings.max_upload_bytes, settings.max_batch_bytes)
        parts = [Part(member.data, member.name) for member in unpack(upload.files[0].data, limits)]
    else:
        parts = [Part(file.data, file.filename) for file in upload.files]
    spec = await state.submitter.admit(form)  # the whole batch is refused before any job is made
    batch_id = state.batches.shards.new_id()  # its jobs are made in its shard (keys.Shards)
    created_at = await state.batches.create(
        batch_id,
        owner=principal.id,
        priority=form.priority.value,
        total=len(parts),
        callback_url=str(form.callback_url) if form.callback_url else None,
    )
    answers = await state.submitter.submit_many(
        owner=principal.id,
        form=form.model_copy(update={"callback_url": None}),  # one callback, the batch's, not one per item
        parts=parts,
        request_id=request.state.request_id,
        cached=not is_no_cache(request.headers.get(CACHE_CONTROL)),
        batch_id=batch_id,
        admitted=spec,
    )
    items: list[dict[str, Any]] = []
    for index, (part, answer) in enumerate(zip(parts, answers, strict=True)):
        item: dict[str, Any] = {"index": index, "name": part.filename or f"image-{index}"}
        if isinstance(answer, Accepted):
            item["job_id"] = answer.body.job_id
        else:
            item["error"] = {"code": answer.code, "message": answer.detail}
        items.append(item)
    await state.batches.open(batch_id, items)
    links = {
        "status": f"/batches/{batch_id}",
        "results": f"/batches/{batch_id}/results",
        "websocket": f"/ws/batches/{batch_id}",
    }
    body = {"batch_id": batch_id, "status": "pending", "created_at": created_at, "total": len(parts), "links": links}
    return JSONResponse(body, status_code=http.HTTP_202_ACCEPTED, headers={"Location": links["status"]})


async def _visible(batches: BatchStore, batch_id: str, principal: Principal) -> dict[str, str]:
    """The batch's hash; 404 for an unknown batch, or another principal's (its existence is not theirs to learn)."""
    fields = await batches.read(batch_id)
    if fields is None or not principal.may_see(fields.get("owner", "")):
        raise _unknown(batch_id)
    return fields


async def _archived(state: AppState, batch_id: str, principal: Principal) -> ArchivedBatch:
    """A batch Redis has let go, from the archive (where it is written once it ended); 404 as `_visible`."""
    row = await run_in_threadpool(state.archive.find_batch, batch_id)
    if row is None or not principal.may_see(row.owner):
        raise _unknown(batch_id)
    return row


def _unknown(batch_id: str) -> errors.JobNotFound:
    return errors.JobNotFound(f"no batch {batch_id!r}: the id is unknown or it has expired")


@router.get("/batches/{batch_id}", response_model=BatchStatus, responses=problem_responses(errors.JobNotFound))
async def get_batch(batch_id: str, state: StateDep, principal: PrincipalDep) -> JSONResponse:
    """A batch's status: counts by status, overall progress and an estimated completion. Once Redis has let it go,
    from the archive."""
    body = await _current(state, batch_id, principal)
    if body is None:
        raise _unknown(batch_id)
    return JSONResponse(body)


@router.delete("/batches/{batch_id}", response_model=BatchStatus, responses=problem_responses(errors.JobNotFound))
async def cancel_batch(batch_id: str, state: StateDep, principal: PrincipalDep) -> JSONResponse:
    """Cancel the items not yet started; those running finish. The batch ends `cancelled`. A batch that has ended
    is answered as it is."""
    if await state.batches.read(batch_id) is None:  # gone from Redis: it ended long ago
        body = await _current(state, batch_id, principal)
        if body is None:
            raise _unknown(batch_id)
        return JSONResponse(body)
    await _visible(state.batches, batch_id, principal)
    await state.batches.request_cancel(batch_id)
    for job_id in await state.batches.job_ids(batch_id):
        await state.store.cancel(job_id, only_pending=True)
    fields = await _visible(state.batches, batch_id, principal)
    return JSONResponse(await state.batches.body(fields))


@router.get(
    "/batches/{batch_id}/results",
    responses={
        200: {
            "description": "One line per item, `{index, name, job_id, status, predictions | error}`, as JSON Lines "
            "(`application/x-ndjson`) or, with `Accept: text/csv`, CSV (the top prediction). `Link: rel=next` "
            "names the next page when there is one.",
            "content": {"application/x-ndjson": {}, "text/csv": {}},
        },
        **problem_responses(errors.JobNotFound),
    },
)
async def batch_results(
    batch_id: str,
    state: StateDep,
    principal: PrincipalDep,
    cursor: Annotated[int, Query(ge=0, description="The index of the first item (a page's `Link` names it).")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Items in this page.")] = 1000,
    accept: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The batch's items, one line each, streamed in index order, a page at a time."""
    as_csv = "text/csv" in (accept or "")
    try:
        fields = await _visible(state.batches, batch_id, principal)
        total = int(fields.get("total", 0))
        items = _items(state.batches, batch_id, cursor, min(total, cursor + limit))
    except errors.JobNotFound:
        row = await _archived(state, batch_id, principal)
        total = row.total
        items = _archived_items(state, row, cursor, min(total, cursor + limit))
    headers = {}
    if cursor + limit < total:
        headers["Link"] = f'</batches/{batch_id}/results?cursor={cursor + limit}&limit={limit}>; rel="next"'
    lines = _csv_lines if as_csv else _json_lines
    media_type = "text/csv" if as_csv else "application/x-ndjson"
    return StreamingResponse(lines(items, header=cursor == 0), media_type=media_type, headers=headers)


async def _items(batches: BatchStore, batch_id: str, start: int, end: int) -> AsyncIterator[dict[str, Any]]:
    for first in range(start, end, PAGE):
        for item in await batches.items(batch_id, first, min(PAGE, end - first)):
            yield item


async def _archived_items(state: AppState, row: ArchivedBatch, start: int, end: int) -> AsyncIterator[dict[str, Any]]:
    for first in range(start, end, PAGE):
        last = min(end, first + PAGE)
        job_ids = [item["job_id"] for item in row.items[first:last] if item.get("job_id")]
        jobs = await run_in_threadpool(state.archive.find_many, job_ids)
        for item in archived_items(row, jobs, first, last):
            yield item


async def _json_lines(items: AsyncIterator[dict[str, Any]], *, header: bool) -> AsyncIterator[bytes]:
    async for item in items:
        yield orjson.dumps(item) + b"\n"


async def _csv_lines(items: AsyncIterator[dict[str, Any]], *, header: bool) -> AsyncIterator[bytes]:
    if header:
        yield _csv_row(BATCH_CSV_COLUMNS)
    async for item in items:
        yield _csv_row(batch_csv_row(item))


def _csv_row(values: tuple[object, ...]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode()


@router.websocket("/ws/batches/{batch_id}")
async def watch_batch(websocket: WebSocket, batch_id: str, state: StateDep) -> None:
    """Pushes the batch status body on connect and on every change, and closes with 1000 when the batch ends."""
    await websocket.accept()
    try:
        principal = await state.auth.principal(websocket)
    except errors.Unauthorized as refused:
        await websocket.close(code=4401, reason=refused.detail[:123])
        return
    websocket.scope.setdefault("state", {})["principal"] = principal.id  # for the access log
    last: dict[str, Any] | None = None
    try:
        while True:
            body = await _current(state, batch_id, principal)
            if body is None:
                await websocket.close(code=WS_UNKNOWN_BATCH, reason="unknown batch id")
                return
            changed = {k: v for k, v in body.items() if k != "estimated_completion"}
            if changed != last:
                await websocket.send_json(body)
                last = changed
            if body["status"] in ("completed", "cancelled"):
                await websocket.close(code=1000)
                return
            await asyncio.sleep(WS_BATCH_INTERVAL)
    except WebSocketDisconnect:
        return


async def _current(state: AppState, batch_id: str, principal: Principal) -> dict[str, Any] | None:
    """The batch's status body, from Redis or else the archive; None when unknown or another's."""
    fields = await state.batches.read(batch_id)
    if fields is not None:
        return await state.batches.body(fields) if principal.may_see(fields.get("owner", "")) else None
    row = await run_in_threadpool(state.archive.find_batch, batch_id)
    return batch_body(row) if row is not None and principal.may_see(row.owner) else None
