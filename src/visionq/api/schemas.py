"""Request and response bodies of the HTTP API that are not job records (those are in jobs/records.py)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import AnyHttpUrl, BaseModel, Field

from visionq.jobs.records import FailureBody, ResultBody, StatusBody
from visionq.jobs.states import JobStatus, Priority

__all__ = ["FailureBody", "ResultBody", "StatusBody"]

MIN_TOP_K = 1
MAX_TOP_K = 20


class ClassifyForm(BaseModel):
    """The non-file fields of `POST /classify` (multipart/form-data)."""

    model_version: str = Field(default="latest", max_length=200, description="`latest`, a name, or `name@version`.")
    priority: Priority = Priority.NORMAL
    callback_url: AnyHttpUrl | None = Field(default=None, description="Receives the final result (POST).")
    top_k: int = Field(default=5, ge=MIN_TOP_K, le=MAX_TOP_K, description="How many predictions to return.")


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
    loaded: bool
    """True when at least one live worker has the model loaded."""
    description: str = ""


class Liveness(BaseModel):
    status: str = "ok"


class CheckState(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    DOWN = "down"


class Readiness(BaseModel):
    status: CheckState
    checks: dict[str, str | int | dict[str, object]]
