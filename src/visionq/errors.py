"""The errors visionq raises, each with the stable code of the public contract (API.md).

    VisionqError
    ├── InvalidImage            400 invalid_image
    ├── UnsupportedMediaType    415 unsupported_media_type
    ├── PayloadTooLarge         413 payload_too_large
    ├── ImageTooLarge           413 image_too_large
    ├── ValidationFailed        422 validation_error
    ├── ModelNotFound           422 model_not_found
    ├── JobNotFound             404 not_found
    ├── Unauthorized            401 unauthorized
    ├── Forbidden               403 forbidden
    ├── Conflict                409 conflict
    ├── RateLimited             429 rate_limited
    ├── QueueFull               503 queue_full
    ├── BrokerUnavailable       503 broker_unavailable
    └── InternalError           500 internal_error

The API turns any of them into an RFC 9457 problem; the worker records `code` and `detail`
on the failed job. This module imports nothing from the web stack so that every layer can use it.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar


class VisionqError(Exception):
    """Base class: `code`, `status` and `title` are fixed per subclass, `detail` per instance."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR
    title: ClassVar[str] = "Internal error"
    #: Whether a worker should try the job again (a fault of the moment, not of the input).
    transient: ClassVar[bool] = False

    def __init__(self, detail: str, *, retry_after: int | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after
        self.errors = errors


class InvalidImage(VisionqError):
    code = "invalid_image"
    status = HTTPStatus.BAD_REQUEST
    title = "Invalid image"


class UnsupportedMediaType(VisionqError):
    code = "unsupported_media_type"
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    title = "Unsupported media type"


class PayloadTooLarge(VisionqError):
    code = "payload_too_large"
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    title = "Payload too large"


class ImageTooLarge(VisionqError):
    code = "image_too_large"
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    title = "Image too large"


class ValidationFailed(VisionqError):
    code = "validation_error"
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    title = "Validation error"


class ModelNotFound(VisionqError):
    code = "model_not_found"
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    title = "Model not found"


class JobNotFound(VisionqError):
    code = "not_found"
    status = HTTPStatus.NOT_FOUND
    title = "Not found"


class Unauthorized(VisionqError):
    code = "unauthorized"
    status = HTTPStatus.UNAUTHORIZED
    title = "Unauthorized"


class Forbidden(VisionqError):
    code = "forbidden"
    status = HTTPStatus.FORBIDDEN
    title = "Forbidden"


class Conflict(VisionqError):
    code = "conflict"
    status = HTTPStatus.CONFLICT
    title = "Conflict"


class RateLimited(VisionqError):
    code = "rate_limited"
    status = HTTPStatus.TOO_MANY_REQUESTS
    title = "Too many requests"


class QueueFull(VisionqError):
    code = "queue_full"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    title = "Queue full"


class BrokerUnavailable(VisionqError):
    code = "broker_unavailable"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    title = "Broker unavailable"
    transient = True


class InternalError(VisionqError):
    code = "internal_error"
    status = HTTPStatus.INTERNAL_SERVER_ERROR
    title = "Internal error"


def all_error_classes() -> list[type[VisionqError]]:
    """Every concrete error, for the completeness test and the OpenAPI document."""
    return list(VisionqError.__subclasses__())
