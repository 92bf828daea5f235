"""The dependencies routes declare, as `Annotated` aliases.

Every one is `async def`, even those that only look something up: FastAPI runs a plain `def` dependency in its
thread pool, and that hop costs more CPU than anything these do.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection

from visionq.api.ratelimit import Quota
from visionq.api.security import check_owner, require_admin
from visionq.api.state import AppState
from visionq.archive.repository import Archive
from visionq.auth.principals import Principal
from visionq.images import ImageStore
from visionq.inference.catalog import Catalog
from visionq.jobs.events import JobEvents
from visionq.jobs.records import JobRecord
from visionq.jobs.store import JobStore
from visionq.settings import Settings


async def get_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.visionq
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_store(state: StateDep) -> JobStore:
    return state.store


async def get_catalog(state: StateDep) -> Catalog:
    return state.catalog


async def get_events(state: StateDep) -> JobEvents:
    return state.events


async def get_archive(state: StateDep) -> Archive:
    return state.archive


async def get_principal(connection: HTTPConnection, state: StateDep) -> Principal:
    """Who the request acts for (401 without valid credentials when authentication is required), within
    its rate limits (429): the client address's first, so that failed logins count too, then the key's."""
    scope_state = connection.scope.setdefault("state", {})
    _within(scope_state, await state.rate_limiter.check_address(connection))
    principal = await state.auth.principal(connection)
    scope_state["principal"] = principal.id  # for the access log
    _within(scope_state, await state.rate_limiter.check_principal(principal))
    return principal


def _within(scope_state: dict[str, Any], quota: Quota | None) -> None:
    """Keep the tightest quota for the response's RateLimit-* headers (the middleware adds them); raise
    RateLimited if this one is exceeded."""
    if quota is None:
        return
    kept: Quota | None = scope_state.get("quota")
    if kept is None or quota.remaining <= kept.remaining:
        scope_state["quota"] = quota
    if quota.exceeded is not None:
        raise quota.refusal()


async def get_images(state: StateDep) -> ImageStore | None:
    return state.images


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    require_admin(principal)
    return principal


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobStoreDep = Annotated[JobStore, Depends(get_store)]
#: The image store, or None when images stay in the job's Redis.
ImagesDep = Annotated[ImageStore | None, Depends(get_images)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
EventsDep = Annotated[JobEvents, Depends(get_events)]
ArchiveDep = Annotated[Archive, Depends(get_archive)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(get_admin)]


async def get_visible_job(
    job_id: str, connection: HTTPConnection, store: JobStoreDep, principal: PrincipalDep
) -> JobRecord:
    """The job the path names, if it exists and the caller may see it; 404 otherwise (also for another's)."""
    connection.scope["state"]["job_id"] = job_id  # for the access log
    record = await store.require(job_id)
    check_owner(principal, record.owner, job_id)
    return record


VisibleJobDep = Annotated[JobRecord, Depends(get_visible_job)]
