"""The visionq Python SDK: `Client` (blocking) and `AsyncClient` (asyncio), on httpx and websockets.

    >>> from visionq.client import Client                           # doctest: +SKIP
    >>> with Client() as client:                                    # VISIONQ_URL, else http://127.0.0.1:8000
    ...     outcome = client.classify("cat.jpg")

Guide: docs/sdk.md. The wire models are the server's own (plain pydantic), re-exported here.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from visionq.wire.schemas import (
        BatchAccepted,
        BatchItem,
        BatchStatus,
        JobAccepted,
        ModelCard,
        ModelInfo,
        TransformInfo,
    )

#: Where each name lives. They are imported on first use (PEP 562): the server's settings build on
#: `visionq.client.settings`, and a worker or API process need not load httpx and websockets to start.
_HOMES = {
    **dict.fromkeys(("AsyncBatch", "AsyncClient"), "visionq.client.aio"),
    **dict.fromkeys(("ImageInput", "JobRef", "OnStatus", "Outcome"), "visionq.client.common"),
    **dict.fromkeys(("Batch", "Client"), "visionq.client.sync"),
    **dict.fromkeys(
        ("FailureBody", "JobError", "Prediction", "Receipt", "ResultBody", "ResultMetadata", "StatusBody"),
        "visionq.wire.jobs",
    ),
    **dict.fromkeys(
        ("BatchAccepted", "BatchItem", "BatchStatus", "JobAccepted", "ModelCard", "ModelInfo", "TransformInfo"),
        "visionq.wire.schemas",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name, "visionq.client.errors" if name in __all__ else None)  # the rest: the error classes
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


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
