"""The admin API under /admin/ (the admin role only): queues, workers, API keys, the dead-letter queue and
the audit log. Every change made here is written to the audit log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from visionq import errors
from visionq.api.dependencies import AdminDep, StateDep, get_admin
from visionq.api.endpoints.catalog import model_info, worker_models
from visionq.api.problems import problem_responses, protected_responses, store_unreachable
from visionq.api.state import AppState
from visionq.archive import audit
from visionq.auth import keys as api_keys
from visionq.auth.principals import Principal
from visionq.jobs import heartbeats
from visionq.jobs.breakers import breaker_states
from visionq.jobs.model_requests import kept_loaded, request_load, request_unload
from visionq.jobs.records import JobRecord, isoformat
from visionq.jobs.snapshot import read_cluster
from visionq.wire.jobs import StatusBody, dump_status
from visionq.wire.schemas import (
    AdminModelBody,
    AuditEntryBody,
    DeadLetterBody,
    KeyBody,
    KeyRequest,
    LatestRequest,
    NewKeyBody,
    QueuesBody,
    WorkerBody,
)

router = APIRouter(prefix="/admin", tags=["admin"], responses=protected_responses(), dependencies=[Depends(get_admin)])


async def _audit(
    state: AppState, request: Request, admin: Principal, action: str, target: str | None, **details: Any
) -> None:
    await run_in_threadpool(
        audit.record_action,
        state.archive.engine,
        admin.id,
        action,
        target,
        details or None,
        request.state.request_id,
    )


@router.get("/queues", response_model=QueuesBody)
async def queues(state: StateDep) -> QueuesBody:
    """Jobs waiting per priority, in progress, dead-lettered; archive and callback backlogs."""
    snapshot = await read_cluster(state.redis, state.settings.queue, state.store.shards)
    return QueuesBody(
        queue_depth=snapshot.queue_depth,
        processing=snapshot.active_jobs,
        dead_letters=snapshot.dead_letters,
        archive_backlog=snapshot.archive_backlog,
        callbacks_due=await state.store.callbacks_due(),
    )


@router.get("/workers", response_model=list[WorkerBody])
async def workers(state: StateDep) -> list[WorkerBody]:
    """Live worker processes (fresh heartbeats) and the jobs each is on now."""
    current = await state.store.jobs_in_hand()
    return [
        WorkerBody(
            **beat.model_dump(include=set(WorkerBody.model_fields) - {"current_jobs"}),
            current_jobs=current.get(beat.worker_id, []),
        )
        for beat in await heartbeats.live(state.redis)
    ]


def _key_body(info: api_keys.KeyInfo) -> KeyBody:
    return KeyBody(
        key_id=info.key_id,
        name=info.name,
        role=info.role,
        owner=f"key:{info.key_id}",
        created_at=isoformat(info.created_at),
        revoked_at=isoformat(info.revoked_at) if info.revoked_at else None,
    )


@router.get("/keys", response_model=list[KeyBody])
async def list_keys(state: StateDep) -> list[KeyBody]:
    """Every API key, revoked ones included; never the keys themselves."""
    return [_key_body(info) for info in await run_in_threadpool(api_keys.list_keys, state.archive.engine)]


@router.post("/keys", response_model=NewKeyBody, status_code=201)
async def create_key(body: KeyRequest, request: Request, state: StateDep, admin: AdminDep) -> NewKeyBody:
    """Make an API key. The answer holds the key itself, this once."""
    key, info = await run_in_threadpool(api_keys.create_key, state.archive.engine, body.role, body.name)
    await _audit(state, request, admin, "key.create", info.key_id, role=info.role.value, name=info.name)
    return NewKeyBody(key=key, **_key_body(info).model_dump())


@router.delete("/keys/{key_id}", response_model=KeyBody, responses=problem_responses(errors.JobNotFound))
async def revoke_key(key_id: str, request: Request, state: StateDep, admin: AdminDep) -> KeyBody:
    """Revoke a key: its next request, and those of the tokens made from it, are refused."""
    info = await run_in_threadpool(api_keys.revoke_key, state.archive.engine, key_id)
    if info is None:
        raise errors.JobNotFound(f"no API key {key_id!r}")
    await state.auth.credentials.forget(
        key_hash=info.key_hash, key_id=info.key_id, token_ttl=state.settings.access_token_ttl
    )
    await _audit(state, request, admin, "key.revoke", key_id)
    return _key_body(info)


@router.get("/dlq", response_model=list[DeadLetterBody])
async def dead_letters(state: StateDep) -> list[DeadLetterBody]:
    """Jobs that used up their attempts, ran out of time or were quarantined as poison, oldest first, with
    their last error and the evidence of the worker processes that died on them."""
    return [
        DeadLetterBody(
            job_id=record.job_id,
            owner=record.owner,
            model_version=record.model_version,
            attempts=record.attempts,
            error=record.error,
            created_at=record.created_at,
            dead_lettered_at=isoformat(datetime.fromtimestamp(at, UTC)),
            crashes=record.crash_log,
        )
        for record, at in await state.store.dead_letters()
    ]


@router.post(
    "/dlq/{job_id}/retry",
    response_model=StatusBody,
    status_code=202,
    responses=problem_responses(errors.JobNotFound, errors.Conflict, errors.BrokerUnavailable),
)
async def retry_dead_letter(job_id: str, request: Request, state: StateDep, admin: AdminDep) -> JSONResponse:
    """Queue a dead-lettered job again, from the start, with its attempts reset."""
    record = await state.store.require(job_id)
    if record.image_store != "redis" and not await _image_kept(state, job_id):
        raise errors.Conflict(f"the image of job {job_id} is gone; it cannot run again")
    try:
        revived = await state.store.revive(record, queue=state.settings.queue)
    except RedisError as exc:
        raise store_unreachable() from exc
    if revived == 0:
        raise errors.JobNotFound(f"job {job_id!r} is not in the dead-letter queue")
    if not isinstance(revived, JobRecord):
        raise errors.Conflict(f"the image of job {job_id} has expired; it cannot run again")
    await _audit(state, request, admin, "dlq.retry", job_id)
    # The job as the retry left it, not as read again: a worker may have started it since.
    return JSONResponse(dump_status(revived.status_body()), status_code=202)


async def _image_kept(state: AppState, job_id: str) -> bool:
    images = state.images
    return images is not None and await run_in_threadpool(images.get, job_id) is not None


@router.delete("/dlq/{job_id}", responses=problem_responses(errors.JobNotFound), status_code=204)
async def purge_dead_letter(job_id: str, request: Request, state: StateDep, admin: AdminDep) -> None:
    """Drop one job from the dead-letter queue (it stays failed)."""
    if not await state.store.purge_dead_letters([job_id]):
        raise errors.JobNotFound(f"job {job_id!r} is not in the dead-letter queue")
    await _audit(state, request, admin, "dlq.purge", job_id)


@router.delete("/dlq")
async def purge_dead_letters(request: Request, state: StateDep, admin: AdminDep) -> dict[str, int]:
    """Empty the dead-letter queue."""
    purged = await state.store.purge_dead_letters()
    await _audit(state, request, admin, "dlq.purge_all", None, purged=purged)
    return {"purged": purged}


@router.get("/models", response_model=list[AdminModelBody])
async def models(state: StateDep) -> list[AdminModelBody]:
    """Every model, how many live workers have it loaded, and whether they were asked to keep it so."""
    workers = await worker_models(state)
    keep = await kept_loaded(state.redis)
    latest = await state.latest.get()
    breakers = await breaker_states(state.redis)
    return [
        AdminModelBody(
            **model_info(spec, state, workers=workers, latest=latest, breakers=breakers).model_dump(),
            workers_loaded=workers.loaded_by.get(spec.ref, 0),
            keep_loaded=spec.ref in keep,
        )
        for spec in state.catalog.specs()
    ]


@router.post("/models/{model}/load", status_code=202, responses=problem_responses(errors.ModelNotFound))
async def load_model(model: str, request: Request, state: StateDep, admin: AdminDep) -> dict[str, str]:
    """Ask every worker to load the model and keep it loaded (done on their next heartbeat)."""
    ref = (await state.sources.resolve_async(model)).ref
    await request_load(state.redis, ref)
    await _audit(state, request, admin, "model.load", ref)
    return {"model_version": ref, "requested": "load"}


@router.post("/models/{model}/unload", status_code=202, responses=problem_responses(errors.ModelNotFound))
async def unload_model(model: str, request: Request, state: StateDep, admin: AdminDep) -> dict[str, str]:
    """Ask every worker to drop the model now, freeing its memory; a later job for it loads it again."""
    ref = (await state.sources.resolve_async(model)).ref
    await request_unload(state.redis, ref)
    await _audit(state, request, admin, "model.unload", ref)
    return {"model_version": ref, "requested": "unload"}


@router.put("/models/latest", responses=problem_responses(errors.ModelNotFound))
async def set_latest(body: LatestRequest, request: Request, state: StateDep, admin: AdminDep) -> dict[str, str]:
    """Make `latest` mean this model for every API process (within two seconds)."""
    ref = (await state.sources.resolve_async(body.model)).ref
    await state.latest.set(ref)
    await _audit(state, request, admin, "model.set_latest", ref)
    return {"latest": ref}


@router.delete("/models/latest")
async def reset_latest(request: Request, state: StateDep, admin: AdminDep) -> dict[str, str]:
    """Make `latest` mean VISIONQ_DEFAULT_MODEL again."""
    await state.latest.set(None)
    await _audit(state, request, admin, "model.reset_latest", None)
    return {"latest": state.catalog.default.ref}


@router.get("/audit", response_model=list[AuditEntryBody])
async def audit_log(
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(description="Entries older than this `entry_id`.")] = None,
) -> list[AuditEntryBody]:
    """Administrative actions, newest first."""
    entries = await run_in_threadpool(audit.read_actions, state.archive.engine, limit=limit, before=before)
    return [
        AuditEntryBody(
            entry_id=entry.entry_id,
            at=isoformat(entry.at),
            principal=entry.principal,
            action=entry.action,
            target=entry.target,
            details=entry.details,
            request_id=entry.request_id,
        )
        for entry in entries
    ]
