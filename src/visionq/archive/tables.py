"""The archive's tables, as SQLAlchemy 2.0 mapped classes. Alembic migrations (migrations/versions) create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, MetaData, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored with its time zone on PostgreSQL and as UTC on SQLite; always read back aware, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the archive stores aware UTC timestamps only")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Constraint names fixed by convention, so that migrations name them the same on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ArchivedJob(Base):
    """One job: written when it is accepted, rewritten when it ends. Never the image itself, only its digest."""

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(200))
    priority: Mapped[str] = mapped_column(String(16))
    top_k: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(200))
    callback_url: Mapped[str | None] = mapped_column(Text)

    image_sha256: Mapped[str] = mapped_column(String(64))
    image_format: Mapped[str] = mapped_column(String(16))
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)

    predictions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    confidence_score: Mapped[float | None] = mapped_column(Float)
    processing_time: Mapped[float | None] = mapped_column(Float)
    queue_time: Mapped[float | None] = mapped_column(Float)
    total_time: Mapped[float | None] = mapped_column(Float)
    served_by: Mapped[str | None] = mapped_column(String(200))
    """The model version that made the predictions (the fallback's while the job's own was unavailable)."""
    degraded_reason: Mapped[str | None] = mapped_column(Text)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    """Images in the call of the model that classified the job (dynamic batching)."""
    batch_wait: Mapped[float | None] = mapped_column(Float)
    receipt: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """What ran, as digests (the result's `metadata.receipt`); NULL for jobs archived before receipts."""
    cache: Mapped[str | None] = mapped_column(String(8))
    """`hit` when the result was reused from an identical job's (`metadata.cache`), else `miss`."""
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        # GET /jobs: one owner's jobs, newest first, paged by (created_at, job_id).
        Index(None, "owner", "created_at", "job_id"),
        Index(None, "status"),
        Index(None, "model_version"),
    )


class ArchivedBatch(Base):
    """A batch, written once it has ended (its items' jobs have rows of their own)."""

    __tablename__ = "batches"

    batch_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    """`completed` or `cancelled`."""
    priority: Mapped[str] = mapped_column(String(16))
    total: Mapped[int] = mapped_column(Integer)
    counts: Mapped[dict[str, int]] = mapped_column(JSON)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """One object per item, in order: `index`, `name`, and `job_id` or the `error` that refused it."""
    callback_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index(None, "owner", "created_at"),)


class ApiKey(Base):
    """An API key: only its SHA-256 is kept; the key itself is shown once, when it is made."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    """The public part of the key (`vq_<key_id>_<secret>`): names it in lists, logs and job owners."""
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    """One administrative action: who did what to which thing, and when."""

    __tablename__ = "audit_log"

    entry_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    principal: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index(None, "at"),)
