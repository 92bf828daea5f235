"""A job as stored in Redis and as clients see it (the wire shapes of API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field, field_validator

from visionq.jobs.states import JobStatus, Priority, Stage

#: The owner of jobs submitted while authentication is off.
ANONYMOUS = "anonymous"


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds: `2026-11-26T21:30:00.123Z`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class JobError(BaseModel):
    code: str
    message: str


class Prediction(BaseModel):
    class_id: int
    class_name: str
    confidence: float = Field(ge=0.0, le=1.0)


class ImageInfo(BaseModel):
    width: int
    height: int
    format: str


class StatusBody(BaseModel):
    """`GET /status/{job_id}`, and each WebSocket update."""

    job_id: str
    status: JobStatus
    progress: int = Field(ge=0, le=100)
    stage: Stage
    created_at: str
    updated_at: str
    worker_id: str | None = None
    attempts: int = 0
    model_version: str
    priority: Priority
    error: JobError | None = None


class Receipt(BaseModel):
    """What a completed job ran, as digests: enough to re-run it elsewhere and check the answer (`visionq verify`).

    Each `*_sha256` is a lowercase hex SHA-256."""

    image_sha256: str
    """Of the uploaded bytes."""
    weights_sha256: str
    """Of the weights file that ran: the ONNX export or int8 build of a built-in on ONNX Runtime, its PyTorch
    state dict on PyTorch, a user model's own file."""
    runtime: str
    """`onnxruntime` or `torch`."""
    runtime_version: str
    precision: str
    """`fp32` or `int8`."""
    preprocessing: str
    """The whole transform, decoding included, as one canonical line (`Transform.canonical()`)."""
    preprocessing_sha256: str
    labels_sha256: str
    """Of the class names, index order, joined with a newline."""


class ResultMetadata(BaseModel):
    image: ImageInfo
    queue_time: float
    """Seconds from acceptance to the worker picking the job up (last delivery)."""
    total_time: float
    """Seconds from acceptance to the result being stored."""
    served_by: str | None = None
    """The model version that made the predictions: the job's own, or the fallback while it was unavailable."""
    degraded_reason: str | None = None
    """Why the fallback served the job instead of its own model; absent when its own model did."""
    batch_size: int | None = None
    """Images in the call of the model that classified this one (dynamic batching); 1 when it ran alone."""
    batch_wait: float | None = None
    """Seconds that call waited for other jobs' images still being decoded; 0 when none were on their way."""
    receipt: Receipt | None = None
    """What ran, as digests; absent from results archived before receipts existed."""


class ResultBody(BaseModel):
    """`GET /result/{job_id}` of a completed job."""

    job_id: str
    status: JobStatus = JobStatus.COMPLETED
    predictions: list[Prediction]
    confidence_score: float
    processing_time: float
    model_version: str
    created_at: str
    completed_at: str
    metadata: ResultMetadata


class FailureBody(BaseModel):
    """`GET /result/{job_id}` of a failed or cancelled job."""

    job_id: str
    status: JobStatus
    error: JobError | None


class Crash(BaseModel):
    """Evidence of a delivery whose pool process died on a job (kept in `crash_log`, by the CRASHED script)."""

    attempt: int
    stage: Stage
    """How far the dead delivery got: `preprocessing` (decoding the image) or `inference`."""
    worker_id: str | None = None
    started_at: str | None = None
    noticed_at: str
    """When its parent process saw it die."""
    reason: str | None = None
    """How it died, as its parent saw it (`signal 9 (SIGKILL)`, an exit code)."""


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
    queued: str | None = None
    """The queue its message was put on (the lost-message sweep of that queue's workers looks after it)."""
    image_store: str = "redis"
    """Where its image waits for the worker: `redis` (the job's own key), `directory` or `s3`."""
    crashes: int = 0
    """Deliveries whose worker process died while reading or running the image."""
    crash_log: list[Crash] = Field(default_factory=list)

    @field_validator("crash_log", mode="before")
    @classmethod
    def _parse_crash_log(cls, value: object) -> object:
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    @classmethod
    def from_redis(cls, fields: dict[str, str]) -> JobRecord:
        return cls.model_validate({k: v for k, v in fields.items() if v != ""})

    def to_redis(self) -> dict[str, str]:
        fields = self.model_dump(mode="json", exclude={"crash_log"})
        return {k: str(v) for k, v in fields.items() if v is not None}

    def is_older_than(self, known: JobRecord) -> bool:
        """Whether this state of the job came before `known`, which a watcher already has: an update published
        while the watcher was reading the job arrives after the read. A terminal state is never old; otherwise
        it is old when written earlier and no further along (a new attempt starts again from 0, written later)."""
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

    def status_body(self) -> StatusBody:
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
            error=self.error,
        )

    def failure_body(self) -> FailureBody:
        return FailureBody(job_id=self.job_id, status=self.status, error=self.error)

    @property
    def image(self) -> ImageInfo:
        return ImageInfo(width=self.image_width, height=self.image_height, format=self.image_format)


def dump_status(body: StatusBody) -> dict[str, Any]:
    """The status body as JSON-ready data, `error` only when there is one (API.md)."""
    return body.model_dump(mode="json", exclude_none=False, exclude={"error"} if body.error is None else set())
