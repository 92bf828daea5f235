"""The audit log of administrative actions, kept in the archive database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from visionq.archive.tables import AuditEntry
from visionq.jobs.records import utcnow


def record_action(
    engine: Engine,
    principal: str,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> None:
    entry = AuditEntry(
        at=utcnow(), principal=principal, action=action, target=target, details=details, request_id=request_id
    )
    with Session(engine) as session, session.begin():
        session.add(entry)


def read_actions(engine: Engine, *, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
    """The newest entries first; `before` (an entry id) pages back in time."""
    statement = select(AuditEntry).order_by(AuditEntry.entry_id.desc()).limit(limit)
    if before is not None:
        statement = statement.where(AuditEntry.entry_id < before)
    with Session(engine, expire_on_commit=False) as session:
        return list(session.scalars(statement))
