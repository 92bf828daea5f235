"""A job as stored in Redis (`job:{id}:status`), and the bodies clients see made from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson
from pydantic import BaseModel, Field, field_validator

from visionq.wire.jobs import Crash, FailureBody, ImageInfo, JobError, StatusBody
from visionq.wire.states import JobStatus, Priority, Stage


class Place(NamedTuple):
    """Where a pending job stands in the queue."""

    position: int
    """Jobs that will start before it."""
    starts_in: float | None
    """Estimated seconds until a worker starts it, from the queue's measured pace; None while unknown."""


#: The owner of jobs submitted while authentication is off.
ANONYMOUS = "anonymous"
#: The statuses whose status body carries `error` (API.md: "only when failed"): an expired job failed to start in
#: time (error code `expired`); a cancelled one was stopped on request, and only its result body says so.
ERROR_STATUSES = frozenset({JobStatus.FAILED, JobStatus.EXPIRED})


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-11-26T21:30:00.123Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class JobRecord(BaseModel):
    """Everything `job:{id}:status` holds. Redis stores each field as a string; this parses them."""

    job_id: str
    status: JobStatus
    stage: Stage
    progress: int = 0
    created_at: str
    updated_at: str
    started_at: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    model_version: str
    priority: Priority
    top_k: int
    callback_url: str | None = None
    image_format: str
    image_width: int
    image_height: int
    error_code: str | None = None
    error_message: str | None = None
    owner: str = ANONYMOUS
    """The principal that submitted the job; `anonymous` while authentication is off."""
    image_sha256: str | None = None
    request_id: str | None = None
    """The `X-Request-ID` of the submission, to follow the job through the logs."""
    allow_fallback: bool = True
    """Whether the fallback model may serve the job while its own is unavailable."""
    traceparent: str | None = None
    """The W3C trace context of the submission (when tracing is on), so that the callback joins its trace."""
    max_wait: float | None = None
    """Seconds the job may wait in the queue before a worker starts it (`deadline_exceeded` after that)."""
    deadline: str | None = None
    """When the job expires (status `expired`, never run) unless a worker has started it by then."""
    queue_priority: Priority | None = None
    """The priority it was promoted to after waiting long at its own (`VISIONQ_PRIORITY_AGING`)."""
    promoted_at: str | None = None
    cache_key: str | None = None
    """Its result cache entry (jobs/cache.py), when the cache may serve it."""
    batch_id: str | None = None
    """The batch the job is an item of (jobs/batches.py)."""
    follows: str | None = None
    """The identical job whose result it waits for (single flight), while that one runs."""
    queued: str | None = None
    """The queue its message was put on (the lost-message sweep of that queue's workers looks after it)."""
    message: str | None = None
    """The id of the one queue message that may run it (jobs/queue.py): a copy with another id is dropped unrun."""
    image_store: str = "redis"
    """Where its image waits for the worker: `redis` (the job's own key), `directory` or `s3`."""
    crashes: int = 0
    """Deliveries whose worker process died while reading or running the image."""
    crash_log: list[Crash] = Field(default_factory=list)
    revision: int = 0
    """How many updates of the job have been published (scripts._PUBLISH): orders them for a watcher."""

    @field_validator("crash_log", mode="before")
    @classmethod
    def _parse_crash_log(cls, value: object) -> object:
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> JobRecord:
        return cls.model_validate({k: v for k, v in fields.items() if v != ""})

    def completed(self, at: str) -> JobRecord:
        """The job as its completion step (`scripts.COMPLETE`, at `at`) leaves it, for the worker that completed it."""
        return self.model_copy(
            update={"status": JobStatus.COMPLETED, "stage": Stage.COMPLETED, "progress": 100, "updated_at": at}
        )

    def to_redis(self) -> dict[str, str]:
        fields = self.model_dump(mode="json", exclude={"crash_log"})
        return {k: str(v) for k, v in fields.items() if v is not None}

    def is_older_than(self, known: JobRecord) -> bool:
        """Whether this state of the job came before `known`, which a watcher already has: an update published
        while the watcher was reading the job arrives after the read. The revision says it; a state without one
        (published by a worker of an earlier version) is old when it is not terminal, was written earlier and is
        no further along (a new attempt starts again from 0, written later)."""
        if self.revision:
            return self.revision <= known.revision
        return (
            not self.status.terminal
            and parse_time(self.updated_at) < parse_time(known.updated_at)
            and (self.attempts, self.progress) <= (known.attempts, known.progress)
        )

    @property
    def error(self) -> JobError | None:
        if self.error_code is None:
            return None
        return JobError(code=self.error_code, message=self.error_message or "")

    def status_body(self, place: Place | None = None) -> StatusBody:
        """The status body; with `place`, a pending job's queue position and estimated start."""
        estimated_start = None
        if place is not None and place.starts_in is not None:
            estimated_start = isoformat(utcnow() + timedelta(seconds=place.starts_in))
        return StatusBody(
            job_id=self.job_id,
            status=self.status,
            progress=self.progress,
            stage=self.stage,
            created_at=self.created_at,
            updated_at=self.updated_at,
            worker_id=self.worker_id,
            attempts=self.attempts,
            model_version=self.model_version,
            priority=self.priority,
            error=self.error if self.status in ERROR_STATUSES else None,
            deadline=self.deadline,
            promoted_to=self.queue_priority,
            queue_position=place.position if place is not None else None,
            estimated_start=estimated_start,
        )

    def failure_body(self) -> FailureBody:
        return FailureBody(job_id=self.job_id, status=self.status, error=self.error)

    @property
    def image(self) -> ImageInfo:
        return ImageInfo(width=self.image_width, height=self.image_height, format=self.image_format)
