"""What the SDK raises. Every error the API answers with becomes a `ProblemError` subclass named for its code.

    ClientError
    ├── ProblemError                    the API refused the request (RFC 9457 problem+json, or any error status)
    │   ├── InvalidImageError           400 invalid_image
    │   ├── UnsupportedMediaTypeError   415 unsupported_media_type
    │   ├── PayloadTooLargeError        413 payload_too_large
    │   ├── ImageTooLargeError          413 image_too_large
    │   ├── ValidationError             422 validation_error
    │   ├── ModelNotFoundError          422 model_not_found
    │   ├── NotFoundError               404 not_found
    │   ├── UnauthorizedError           401 unauthorized
    │   ├── ForbiddenError              403 forbidden
    │   ├── ConflictError               409 conflict
    │   ├── RateLimitedError            429 rate_limited
    │   ├── QueueFullError              503 queue_full
    │   ├── BrokerUnavailableError      503 broker_unavailable
    │   └── InternalServerError         500 internal_error
    ├── ConnectionFailed                the API could not be reached or did not answer in time (also a ConnectionError)
    ├── NotFinished                     `result()` of a job still pending or processing; carries its StatusBody
    └── JobTimeout                      `wait()` gave up before the job finished (also a TimeoutError)

A problem whose code this SDK does not know, and an error answer that is not a problem at all (a proxy's
HTML 502, say), are plain `ProblemError`s; the latter get the code `internal_error` and the HTTP status.
"""

from __future__ import annotations

from typing import Any, ClassVar

from visionq.wire.jobs import StatusBody

__all__ = [
    "BrokerUnavailableError",
    "ClientError",
    "ConflictError",
    "ConnectionFailed",
    "ForbiddenError",
    "ImageTooLargeError",
    "InternalServerError",
    "InvalidImageError",
    "JobTimeout",
    "ModelNotFoundError",
    "NotFinished",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProblemError",
    "QueueFullError",
    "RateLimitedError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "ValidationError",
    "problem_class",
]


class ClientError(Exception):
    """Base class of everything the SDK raises on purpose: `except visionq.client.ClientError` catches them all."""


class ProblemError(ClientError):
    """The API answered with an error. `code` is the stable machine-readable code of API.md.

    >>> try:                                                        # doctest: +SKIP
    ...     client.submit(b"not an image")
    ... except ProblemError as exc:
    ...     print(exc.code, exc.status, exc.detail)
    unsupported_media_type 415 the file's content is not a supported image type; ...

    `retry_after` is the `Retry-After` header in seconds (429 and 503 answers carry it), `errors` the
    per-field list of a `validation_error`.
    """

    #: The code a subclass stands for; the base class stands for codes this SDK does not know.
    for_code: ClassVar[str | None] = None

    def __init__(
        self,
        code: str,
        status: int,
        detail: str,
        title: str = "",
        *,
        retry_after: float | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{detail} ({code}, HTTP {status})")
        self.code = code
        self.status = status
        self.detail = detail
        self.title = title
        self.retry_after = retry_after
        self.errors = errors

    def __init_subclass__(cls, *, code: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is None:
            return
        if code in _BY_CODE:
            raise TypeError(f"{_BY_CODE[code].__name__} already stands for the code {code!r}")
        cls.for_code = code
        _BY_CODE[code] = cls


_BY_CODE: dict[str, type[ProblemError]] = {}


def problem_class(code: str) -> type[ProblemError]:
    """The exception class for a problem `code`: `problem_class("conflict") is ConflictError`.
    Codes this SDK does not know map to `ProblemError` itself."""
    return _BY_CODE.get(code, ProblemError)


class InvalidImageError(ProblemError, code="invalid_image"):
    """400: the upload is empty, truncated or cannot be decoded."""


class UnsupportedMediaTypeError(ProblemError, code="unsupported_media_type"):
    """415: the bytes are not JPEG, PNG, WebP, GIF, BMP or TIFF."""


class PayloadTooLargeError(ProblemError, code="payload_too_large"):
    """413: the file is over the server's upload limit (`VISIONQ_MAX_UPLOAD_BYTES`)."""


class ImageTooLargeError(ProblemError, code="image_too_large"):
    """413: the image has more pixels than the server accepts (`VISIONQ_MAX_PIXELS`)."""


class ValidationError(ProblemError, code="validation_error"):
    """422: a form field or parameter is not valid; `errors` lists each one."""


class ModelNotFoundError(ProblemError, code="model_not_found"):
    """422: the server has no model by that name or version; `detail` lists the available ones."""


class NotFoundError(ProblemError, code="not_found"):
    """404: no such job (unknown id, or its result has expired)."""


class UnauthorizedError(ProblemError, code="unauthorized"):
    """401: no credentials, or the API key or token is not valid."""


class ForbiddenError(ProblemError, code="forbidden"):
    """403: the credentials are valid but not allowed to do this."""


class ConflictError(ProblemError, code="conflict"):
    """409: the request does not fit the job's state (cancelling a finished job)."""


class RateLimitedError(ProblemError, code="rate_limited"):
    """429: too many requests; try again after `retry_after` seconds."""


class QueueFullError(ProblemError, code="queue_full"):
    """503: the job queue is full; try again after `retry_after` seconds."""


class BrokerUnavailableError(ProblemError, code="broker_unavailable"):
    """503: the server cannot reach its job store or queue; try again after `retry_after` seconds."""


class InternalServerError(ProblemError, code="internal_error"):
    """500: the server failed; it has logged the cause."""


class ConnectionFailed(ClientError, ConnectionError):
    """The API could not be reached, or did not answer within the client's `timeout`.

    It is also a `ConnectionError`; the httpx exception is its `__cause__`.
    """

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"could not reach the visionq API at {url}: {reason}. Is the service running there? "
            "Pass the address as Client(url=...) or set VISIONQ_URL."
        )
        self.url = url
        self.reason = reason


class NotFinished(ClientError):
    """`result()` of a job that is still pending or processing; `status` is its current StatusBody.

    >>> try:                                                        # doctest: +SKIP
    ...     body = client.result(job)
    ... except NotFinished as running:
    ...     print(running.status.stage, running.status.progress)
    inference 50
    """

    def __init__(self, status: StatusBody) -> None:
        super().__init__(
            f"job {status.job_id} is still {status.status.value} ({status.stage.value}, {status.progress}%); "
            "call wait() to block until it finishes"
        )
        self.status = status


class JobTimeout(ClientError, TimeoutError):
    """`wait()` or `classify()` gave up after its `timeout`; the job itself goes on. Also a `TimeoutError`.

    `status` is the last StatusBody seen, or None when none arrived.
    """

    def __init__(self, job_id: str, timeout: float, status: StatusBody | None) -> None:
        where = f"it is still {status.status.value} ({status.stage.value})" if status else "no status arrived"
        super().__init__(
            f"job {job_id} did not finish within {timeout:g}s; {where}. "
            "Call wait() again to keep waiting, or cancel() it."
        )
        self.job_id = job_id
        self.timeout = timeout
        self.status = status
