"""Archive: save and find archived jobs in SQLite or PostgreSQL, chosen by the database URL.

The archive is written by workers (the archiver drains the Redis outbox) and read by the API: `GET /jobs`,
and `GET /result/{id}` once Redis has let the result expire. Writes are upserts, so a row written twice
(two workers draining at once, a retry after a crash) ends the same.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from visionq.archive.tables import ArchivedBatch, ArchivedJob

#: Seconds a SQLite writer waits for another process's write lock before failing.
SQLITE_BUSY_TIMEOUT = 30
#: Seconds to wait for a PostgreSQL connection before the database counts as down.
CONNECT_TIMEOUT = 5
SUPPORTED_BACKENDS = frozenset({"sqlite", "postgresql"})
#: Largest page of `GET /jobs`.
MAX_PAGE = 100


class BadCursor(ValueError):
    """A `cursor` that this archive did not hand out."""


@dataclass(frozen=True)
class JobQuery:
    """What `GET /jobs` asks for: one owner's jobs, newest first, optionally filtered; `owner=None` is everyone's."""

    owner: str | None
    statuses: Sequence[str] = ()
    model: str | None = None
    """`name` (any version) or `name@version` (exactly that one)."""
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 20
    cursor: str | None = None


@dataclass(frozen=True)
class JobPage:
    jobs: list[ArchivedJob] = field(default_factory=list)
    next_cursor: str | None = None


class Archive:
    """The archive database. One per process; thread-safe (SQLAlchemy's pool hands each thread a connection).

    >>> archive = Archive("sqlite:///var/archive.sqlite3")    # doctest: +SKIP
    >>> archive.save([row])                                   # doctest: +SKIP
    >>> archive.find(row["job_id"]).status                    # doctest: +SKIP
    'completed'
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine_for(url)
        self._upserts: dict[tuple[str, ...], Any] = {}

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        """Raise sqlalchemy's OperationalError unless the database answers."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def save(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or update the rows (column → value, `job_id` and `updated_at` required) in one transaction.

        A row never replaces a newer one: two workers' archivers may read a job at different moments and
        write in the other order, and the older snapshot must not win."""
        if not rows:
            return
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            by_columns.setdefault(tuple(sorted(row)), []).append(row)
        with self.engine.begin() as connection:
            for columns, group in by_columns.items():
                # One statement per set of columns, sent with every row of the set (executemany): compiled once
                # and cached, where a statement carrying the rows' values would be compiled on every save.
                connection.execute(self._upsert(columns), group)

    def _upsert(self, columns: tuple[str, ...]) -> Any:
        statement = self._upserts.get(columns)
        if statement is None:
            insert = _insert(self.engine)(ArchivedJob)
            updated = {column: insert.excluded[column] for column in columns if column != "job_id"}
            newer = ArchivedJob.updated_at <= insert.excluded.updated_at
            statement = insert.on_conflict_do_update(index_elements=["job_id"], set_=updated, where=newer)
            self._upserts[columns] = statement
        return statement

    def find(self, job_id: str) -> ArchivedJob | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ArchivedJob, job_id)

    def find_many(self, job_ids: Sequence[str]) -> dict[str, ArchivedJob]:
        """The archived jobs among `job_ids`, by id (one query)."""
        if not job_ids:
            return {}
        with Session(self.engine, expire_on_commit=False) as session:
            rows = session.scalars(select(ArchivedJob).where(ArchivedJob.job_id.in_(list(job_ids))))
            return {row.job_id: row for row in rows}

    def save_batches(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace ended batches (column → value); a batch is written when it ends, so a second write
        (two archivers at once) writes the same."""
        with Session(self.engine) as session, session.begin():
            for row in rows:
                session.merge(ArchivedBatch(**row))

    def find_batch(self, batch_id: str) -> ArchivedBatch | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return session.get(ArchivedBatch, batch_id)

    def list_jobs(self, query: JobQuery) -> JobPage:
        limit = max(1, min(query.limit, MAX_PAGE))
        statement = select(ArchivedJob)
        if query.owner is not None:
            statement = statement.where(ArchivedJob.owner == query.owner)
        if query.statuses:
            statement = statement.where(ArchivedJob.status.in_(list(query.statuses)))
        if query.model is not None:
            if "@" in query.model:
                statement = statement.where(ArchivedJob.model_version == query.model)
            else:
                statement = statement.where(ArchivedJob.model_version.startswith(f"{query.model}@", autoescape=True))
        if query.created_after is not None:
            statement = statement.where(ArchivedJob.created_at >= query.created_after)
        if query.created_before is not None:
            statement = statement.where(ArchivedJob.created_at < query.created_before)
        if query.cursor is not None:
            created_at, job_id = decode_cursor(query.cursor)
            statement = statement.where(
                or_(
                    ArchivedJob.created_at < created_at,
                    (ArchivedJob.created_at == created_at) & (ArchivedJob.job_id < job_id),
                )
            )
        statement = statement.order_by(ArchivedJob.created_at.desc(), ArchivedJob.job_id.desc()).limit(limit + 1)
        with Session(self.engine, expire_on_commit=False) as session:
            jobs = list(session.scalars(statement))
        if len(jobs) <= limit:
            return JobPage(jobs)
        last = jobs[limit - 1]
        return JobPage(jobs[:limit], encode_cursor(last.created_at, last.job_id))


def create_engine_for(url: str) -> Engine:
    """An engine for `url`; SQLite files get a busy timeout and write-ahead logging, so that a worker's
    writes and the API's reads do not block each other."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"the archive runs on SQLite or PostgreSQL, not {backend!r} ({parsed!r})")
    if backend == "postgresql":
        return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _insert(engine: Engine) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO UPDATE (both SQLite and PostgreSQL spell it the same)."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


def encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([created_at.isoformat(), job_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created_at, job_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        moment = datetime.fromisoformat(created_at)
    except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError) as exc:
        raise BadCursor(f"{cursor!r} is not a cursor from a previous page") from exc
    if moment.tzinfo is None or not isinstance(job_id, str):
        raise BadCursor(f"{cursor!r} is not a cursor from a previous page")
    return moment, job_id
