"""The visionq Python SDK: `Client` (blocking) and `AsyncClient` (asyncio), on httpx and websockets.

    >>> from visionq.client import Client                           # doctest: +SKIP
    >>> with Client() as client:                                    # VISIONQ_URL, else http://127.0.0.1:8000
    ...     outcome = client.classify("cat.jpg")

Guide: docs/sdk.md. The wire models are the server's own (plain pydantic), re-exported here.
"""

from visionq.client.aio import AsyncBatch, AsyncClient
from visionq.client.common import ImageInput, JobRef, OnStatus, Outcome
from visionq.client.errors import (
    BrokerUnavailableError,
    ClientError,
    ConflictError,
    ConnectionFailed,
    ForbiddenError,
    ImageTooLargeError,
    InternalServerError,
    InvalidImageError,
    JobTimeout,
    ModelNotFoundError,
    NotFinished,
    NotFoundError,
    PayloadTooLargeError,
    ProblemError,
    QueueFullError,
    RateLimitedError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
    problem_class,
)
from visionq.client.sync import Batch, Client
from visionq.wire.jobs import FailureBody, JobError, Prediction, Receipt, ResultBody, ResultMetadata, StatusBody
from visionq.wire.schemas import BatchAccepted, BatchItem, BatchStatus, JobAccepted, ModelCard, ModelInfo, TransformInfo

__all__ = [
    "AsyncBatch",
    "AsyncClient",
    "Batch",
    "BatchAccepted",
    "BatchItem",
    "BatchStatus",
    "BrokerUnavailableError",
    "Client",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "FailureBody",
    "ForbiddenError",
    "ImageInput",
    "ImageTooLargeError",
    "InternalServerError",
    "InvalidImageError",
    "JobAccepted",
    "JobError",
    "JobRef",
    "JobTimeout",
    "ModelCard",
    "ModelInfo",
    "ModelNotFoundError",
    "NotFinished",
    "NotFoundError",
    "OnStatus",
    "Outcome",
    "PayloadTooLargeError",
    "Prediction",
    "ProblemError",
    "QueueFullError",
    "RateLimitedError",
    "Receipt",
    "ResultBody",
    "ResultMetadata",
    "StatusBody",
    "TransformInfo",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "problem_class",
]
