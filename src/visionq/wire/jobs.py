"""A job as clients see it: the bodies of `GET /status`, `GET /result` and the WebSocket (API.md), and the
evidence of a crashed delivery. Pydantic only: the server and the SDK both import these."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from visionq.wire.states import JobStatus, Priority, Stage


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
    """Failed and expired jobs only (a cancelled job's is in its result body)."""
    deadline: str | None = None
    """When the job expires unless a worker has started it by then (absent when it has no deadline)."""
    promoted_to: Priority | None = None
    """The priority an aged pending job was promoted to (absent unless promoted)."""
    queue_position: int | None = None
    """Pending jobs only: the jobs that will start before this one."""
    estimated_start: str | None = None
    """Pending jobs only: when a worker should start it, from the queue's measured pace (absent while unknown)."""


#: Status-body fields left out when they have no value (API.md keeps `worker_id: null`).
OPTIONAL_STATUS_FIELDS = ("error", "deadline", "promoted_to", "queue_position", "estimated_start")


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
    cache: str | None = None
    """`hit` when the result was reused from an identical earlier job (no inference ran), `miss` when the model ran;
    absent from results archived before the cache existed."""


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


def dump_status(body: StatusBody) -> dict[str, Any]:
    """The status body as JSON-ready data, `error` (API.md) and the other optional fields only when they have a
    value."""
    absent = {name for name in OPTIONAL_STATUS_FIELDS if getattr(body, name) is None}
    return body.model_dump(mode="json", exclude_none=False, exclude=absent)
