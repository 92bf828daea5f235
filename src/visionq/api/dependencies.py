"""The dependencies routes declare, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from visionq.api.state import AppState
from visionq.archive.repository import Archive
from visionq.inference.catalog import Catalog
from visionq.jobs.events import JobEvents
from visionq.jobs.records import ANONYMOUS
from visionq.jobs.store import JobStore
from visionq.settings import Settings


def get_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.visionq
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_store(state: StateDep) -> JobStore:
    return state.store


def get_catalog(state: StateDep) -> Catalog:
    return state.catalog


def get_events(state: StateDep) -> JobEvents:
    return state.events


def get_archive(state: StateDep) -> Archive:
    return state.archive


def get_owner() -> str:
    """The principal a request acts for. Authentication is off: every request is `anonymous`, and every
    job belongs to it."""
    return ANONYMOUS


SettingsDep = Annotated[Settings, Depends(get_settings)]
JobStoreDep = Annotated[JobStore, Depends(get_store)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
EventsDep = Annotated[JobEvents, Depends(get_events)]
ArchiveDep = Annotated[Archive, Depends(get_archive)]
OwnerDep = Annotated[str, Depends(get_owner)]
