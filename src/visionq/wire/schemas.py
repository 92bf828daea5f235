"""Request and response bodies of the HTTP API other than a job's own (those are in `wire/jobs.py`)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, Field, field_validator

from visionq.wire.jobs import Crash, ImageInfo, JobError, Prediction
from visionq.wire.states import JobStatus, Priority, Role

MIN_TOP_K = 1
MAX_TOP_K = 20
#: The furthest ahead a job's `deadline` may be.
MAX_DEADLINE_SECONDS = 7 * 86400


class ClassifyForm(BaseModel):
    """The non-file fields of `POST /classify` (multipart/form-data)."""

    model_version: str = Field(default="latest", max_length=200, description="`latest`, a name, or `name@version`.")
    priority: Priority = Priority.NORMAL
    callback_url: AnyHttpUrl | None = Field(default=None, description="Receives the final result (POST).")
    top_k: int = Field(default=5, ge=MIN_TOP_K, le=MAX_TOP_K, description="How many predictions to return.")
    fallback: bool | None = Field(
        default=None,
        description="May the fallback model serve the job while its own is unavailable? Default: the service's.",
    )
    max_wait: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="Seconds the job may wait in the queue; if no worker has started it by then, it fails with "
        "`deadline_exceeded` instead of running late. Default: the service's `VISIONQ_MAX_QUEUE_WAIT`, if any; "
        "the lower of the two applies.",
    )
    deadline: float | AwareDatetime | None = Field(
        default=None,
        description="Seconds from now, or an RFC 3339 time (with its offset), by which a worker must have started "
        "the job; if none has, it ends with status `expired` (error code `expired`) and is never run. At most "
        f"{MAX_DEADLINE_SECONDS // 86400} days ahead.",
    )

    @field_validator("deadline")
    @classmethod
    def _deadline_ahead(cls, value: float | datetime | None) -> float | datetime | None:
        if isinstance(value, datetime):
            ahead = (value - datetime.now(UTC)).total_seconds()
            if ahead <= 0:
                raise ValueError("the deadline has already passed")
        else:
            ahead = value or 0.0
            if value is not None and not (math.isfinite(ahead) and ahead > 0):
                raise ValueError("the deadline must be a positive number of seconds")
        if ahead > MAX_DEADLINE_SECONDS:
            raise ValueError(f"the deadline is more than {MAX_DEADLINE_SECONDS // 86400} days ahead")
        return value

    def deadline_at(self, now: datetime) -> datetime | None:
        """The deadline as a time: `deadline` seconds after `now`, or the time it names."""
        if self.deadline is None or isinstance(self.deadline, datetime):
            return self.deadline
        return now + timedelta(seconds=self.deadline)


class Links(BaseModel):
    status: str
    result: str
    websocket: str


class JobAccepted(BaseModel):
    """`202 Accepted` answer of `POST /classify`."""

    job_id: str
    status: JobStatus
    created_at: str
    estimated_completion: str | None
    model_version: str
    priority: Priority
    links: Links


class ModelInfo(BaseModel):
    name: str
    version: int
    aliases: list[str]
    input_size: int
    num_classes: int
    runtime: str
    """How workers run it: `onnx`, `torch` or `torchscript`."""
    precision: str = Field(
        default="fp32",
        description="`fp32` (exact), or `int8` for a built-in model's static int8 build: faster, less exact.",
    )
    agreement: float | None = Field(
        default=None,
        description="For a built-in model served from its ONNX export: the share of a fixed sample on which its "
        "top-1 class is PyTorch's (the export is refused under 0.99); for an int8 build, the share of photo crops "
        "and that sample on which it agrees with the exact model (refused under 0.8). Null until a worker has "
        "loaded it.",
    )
    loaded: bool
    """True when at least one live worker has the model loaded."""
    description: str = ""
    breaker: str = Field(
        default="closed", description="`closed`; `open` while the model is unavailable; `half_open` while probed."
    )


class TransformInfo(BaseModel):
    """A model's whole preprocessing, as its spec declares it (`visionq.imaging.transforms.Transform`)."""

    resize: Literal["center_crop", "squash", "letterbox"] = Field(
        description="`center_crop`: the centred square of `crop_fraction` of the shorter side, resized; `squash`: "
        "the whole image resized to the square; `letterbox`: the whole image fitted inside it, undistorted, on the "
        "mean colour."
    )
    crop_fraction: float = Field(
        description="`center_crop` only (1.0 otherwise): the square's side as a share of the image's shorter side."
    )
    interpolation: str = Field(
        description="Pillow's filter: `nearest`, `box`, `bilinear`, `hamming`, `bicubic` or `lanczos`."
    )
    mean: tuple[float, float, float] = Field(description="Subtracted per channel, R, G, B, on a 0..1 pixel scale.")
    std: tuple[float, float, float] = Field(description="Divided by per channel, R, G, B, on a 0..1 pixel scale.")
    input_size: int = Field(description="The side of the model's square input, in pixels.")
    channel_order: Literal["RGB", "BGR"] = Field(description="The channel order the model takes.")


class ModelCard(ModelInfo):
    """`GET /models/{ref}`: one model version's `/models` entry plus how it turns an image into its input, and
    what the live workers report of the model they run. Those reported figures are null until a live worker
    has loaded the model (and stay null where they do not apply)."""

    transform: TransformInfo
    preprocessing: str = Field(
        description="The whole transform as one canonical line (the result receipt's `preprocessing`): equal lines "
        "mean equal inputs for equal images."
    )
    preprocessing_sha256: str = Field(description="SHA-256 (hex) of `preprocessing`.")
    labels_sha256: str = Field(
        description="SHA-256 (hex) of the model's class names in class-id order, joined with newlines (the result "
        "receipt's `labels_sha256`); `num_classes` is how many there are."
    )
    weights_sha256: str | None = Field(
        default=None,
        description="SHA-256 (hex) of the weights file the workers run, as a live worker reports it; null until "
        "one has loaded the model.",
    )
    runtime_version: str | None = Field(
        default=None,
        description="The version of the runtime (`runtime`) a live worker runs the model with; null until one has "
        "loaded it.",
    )
    agreement_sample: int | None = Field(
        default=None,
        description="How many inputs `agreement` was measured on; null when `agreement` is.",
    )
    cpu_feature: str | None = Field(
        default=None,
        description="For an int8 build: the CPU feature its integer kernels use on the reporting worker "
        "(e.g. `avx512_vnni`); null otherwise, or until a live worker has loaded it.",
    )
    breaker_reason: str | None = Field(
        default=None, description="Why the circuit breaker opened (its last failure); null while it is closed."
    )


class Liveness(BaseModel):
    status: str = "ok"


class CheckState(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class JobSummary(BaseModel):
    """One job in `GET /jobs`."""

    job_id: str
    status: JobStatus
    model_version: str
    priority: Priority
    created_at: str
    updated_at: str
    completed_at: str | None
    top_prediction: Prediction | None = Field(description="The top-1 prediction of a completed job.")
    confidence_score: float | None
    error: JobError | None
    image: ImageInfo
    links: Links


class JobPageBody(BaseModel):
    """`GET /jobs`: a page of the caller's jobs, newest first."""

    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class DeliveryAttempt(BaseModel):
    attempt: int
    delivery_id: str = Field(description="The same for every attempt of one job's callback (X-Visionq-Delivery).")
    url: str
    at: str
    outcome: str = Field(description="`delivered`, `failed` (retried while attempts remain) or `refused`.")
    status_code: int | None
    error: str | None
    duration: float


class DeliveriesBody(BaseModel):
    """`GET /jobs/{job_id}/deliveries`: every attempt to deliver the job's callback, oldest first."""

    job_id: str
    callback_url: str | None
    deliveries: list[DeliveryAttempt]


class Readiness(BaseModel):
    status: CheckState
    checks: dict[str, str | int | dict[str, object]]


class TokenBody(BaseModel):
    """`POST /auth/token` and `POST /auth/refresh`."""

    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds the access token is valid.")


#: The longest `refresh_token` checked. Ours are 43 characters, but whatever a client may send in their place (an
#: access token, another provider's JWT: a few KB) is refused by the check, 401; longer is no token at all, 422.
MAX_REFRESH_TOKEN = 8192


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=MAX_REFRESH_TOKEN)


class KeyRequest(BaseModel):
    role: Role = Role.USER
    name: str = Field(default="", max_length=200)


class KeyBody(BaseModel):
    key_id: str
    name: str
    role: Role
    owner: str = Field(description="The principal id its jobs belong to: `key:<key_id>`.")
    created_at: str
    revoked_at: str | None


class NewKeyBody(KeyBody):
    key: str = Field(description="The key itself: shown this once, never again.")


class QueuesBody(BaseModel):
    queue_depth: dict[str, int] = Field(description="Jobs waiting, per priority.")
    processing: int
    dead_letters: int
    archive_backlog: int
    callbacks_due: int


class WorkerBody(BaseModel):
    worker_id: str
    hostname: str
    pid: int
    queue: str
    started_at: str
    seen_at: str
    models: list[str]
    jobs_done: int
    pool: str | None = Field(default=None, description="The Celery pool it runs jobs in: `solo`, `threads`, `prefork`.")
    concurrency: int | None = Field(
        default=None, description="The jobs this process runs at once (1 for each process of a prefork worker)."
    )
    current_jobs: list[str] = Field(description="Jobs this worker process is on now.")


class DeadLetterBody(BaseModel):
    job_id: str
    owner: str
    model_version: str
    attempts: int
    error: JobError | None
    created_at: str
    dead_lettered_at: str
    crashes: list[Crash] = Field(
        default_factory=list,
        description="Deliveries whose worker process died on the job: the evidence of a `poison_input`.",
    )


class AuditEntryBody(BaseModel):
    entry_id: int
    at: str
    principal: str
    action: str
    target: str | None
    details: dict[str, Any] | None
    request_id: str | None


class LatestRequest(BaseModel):
    model: str = Field(max_length=200, description="A model name (its highest version) or `name@version`.")


class AdminModelBody(ModelInfo):
    """`GET /admin/models`: a model, and what admins asked of it."""

    workers_loaded: int = Field(description="Live worker processes that have it loaded.")
    keep_loaded: bool = Field(description="Workers were asked to load it and keep it loaded.")


class BatchLinks(BaseModel):
    status: str
    results: str
    websocket: str


class BatchAccepted(BaseModel):
    """`202 Accepted` answer of `POST /batches`."""

    batch_id: str
    status: str
    created_at: str
    total: int
    links: BatchLinks


class BatchCounts(BaseModel):
    pending: int = 0
    processing: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0


class BatchStatus(BaseModel):
    """`GET /batches/{id}`, each `WS /ws/batches/{id}` message, and a batch's callback."""

    batch_id: str
    status: str = Field(description="`pending`, `running`, `completed` (every item ended) or `cancelled`.")
    total: int
    counts: BatchCounts
    progress: int = Field(ge=0, le=100, description="The share of items that ended, in percent.")
    estimated_completion: str | None = None
    created_at: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "cancelled")


class BatchItem(BaseModel):
    """One line of `GET /batches/{id}/results`."""

    index: int
    name: str
    job_id: str | None = None
    status: str
    predictions: list[Prediction] | None = None
    error: JobError | None = None


#: The columns of a batch's results as CSV (`GET /batches/{id}/results` with `Accept: text/csv`, and the CLI's file).
BATCH_CSV_COLUMNS = ("index", "name", "job_id", "status", "class_id", "class_name", "confidence", "error_code", "error")


def batch_csv_row(item: dict[str, Any]) -> tuple[object, ...]:
    """One item (a results line, as JSON data) as a CSV row: its top prediction, or its error."""
    top = (item.get("predictions") or [{}])[0]
    error = item.get("error") or {}
    return (
        item["index"],
        item["name"],
        item.get("job_id") or "",
        item["status"],
        top.get("class_id", ""),
        top.get("class_name", ""),
        top.get("confidence", ""),
        error.get("code", ""),
        error.get("message", ""),
    )
