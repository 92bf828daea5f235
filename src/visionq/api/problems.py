"""RFC 9457 problem details: the one shape of every error the API returns.

One handler serves the whole `VisionqError` tree (Starlette looks handlers up along the MRO);
FastAPI's validation errors, Starlette's HTTP errors (unknown route, wrong method) and any
unexpected exception are translated here too, so no route ever builds an error body.
"""

from __future__ import annotations

import functools
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from visionq import errors
from visionq.errors import VisionqError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: The statuses whose answers always carry `Retry-After` (API.md).
RETRY_AFTER_STATUSES = frozenset({HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE})
#: Seconds a client is told to wait while Redis (the job store) is unreachable.
UNREACHABLE_RETRY_AFTER = 5
#: `Retry-After`, as the OpenAPI document declares it on those answers.
RETRY_AFTER_HEADER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}

#: Codes for Starlette's own HTTP errors, which happen before any route runs.
_HTTP_CODES: dict[int, str] = {
    404: "not_found",
    405: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class Problem(BaseModel):
    """An error, as RFC 9457 problem details with visionq's stable `code`."""

    type: str = Field(examples=["urn:visionq:problem:invalid_image"])
    title: str
    status: int
    detail: str
    code: str
    errors: list[dict[str, Any]] | None = Field(default=None, description="Per-field problems, for validation_error.")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    retry_after: int | None = None,
    errors_: list[dict[str, Any]] | None = None,
) -> ProblemResponse:
    body = Problem(type=f"urn:visionq:problem:{code}", title=title, status=status, detail=detail, code=code)
    if errors_:
        body.errors = errors_
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if status == HTTPStatus.UNAUTHORIZED:
        headers["WWW-Authenticate"] = 'Bearer realm="visionq"'  # RFC 9110 §11.6.1: a 401 names its scheme
    return ProblemResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers or None)


def from_error(exc: VisionqError) -> ProblemResponse:
    retry_after = exc.retry_after
    if retry_after is None and exc.status in RETRY_AFTER_STATUSES:
        retry_after = 1
    return problem_response(
        int(exc.status), exc.code, exc.title, exc.detail, retry_after=retry_after, errors_=exc.errors
    )


def problem_body(exc: VisionqError) -> dict[str, Any]:
    """The problem details of `exc`, as its response's body (an item of a several-image answer)."""
    body = Problem(
        type=f"urn:visionq:problem:{exc.code}", title=exc.title, status=int(exc.status), detail=exc.detail,
        code=exc.code, errors=exc.errors,
    )  # fmt: skip
    return body.model_dump(exclude_none=True)


async def _visionq_error(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, VisionqError)
    return from_error(exc)


async def _validation_error(_: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
        for error in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems)
    return from_error(errors.ValidationFailed(f"the request is not valid: {summary}", errors=problems))


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == HTTPStatus.BAD_REQUEST:
        # FastAPI's answer to a body it cannot parse (bad JSON): a validation problem like any other.
        return from_error(errors.ValidationFailed(f"the request body cannot be read: {exc.detail}"))
    status = HTTPStatus(exc.status_code)
    code = _HTTP_CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "validation_error")
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != status.phrase else _default_detail(status)
    retry_after = 1 if exc.status_code in RETRY_AFTER_STATUSES else None
    response = problem_response(exc.status_code, code, status.phrase, detail, retry_after=retry_after)
    if exc.headers:
        response.headers.update(exc.headers)
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        # RFC 9110 §15.5.6: every method the path takes. Starlette names only those of the first route that
        # matched the path, and one path here may have a route per method.
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document gives the request's path (HEAD with GET)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        if _path_pattern(template).fullmatch(request.url.path):
            methods |= {method.upper() for method in operations}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


@functools.cache
def _path_pattern(template: str) -> re.Pattern[str]:
    """`/jobs/{job_id}/deliveries` → a pattern matching `/jobs/<anything but />/deliveries`."""
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("[^/]+".join(re.escape(part) for part in parts))


async def _broker_error(_: Request, exc: Exception) -> ProblemResponse:
    log.warning("Redis unreachable: %s", exc)
    return from_error(store_unreachable())


def store_unreachable() -> errors.BrokerUnavailable:
    """The 503 of a request that found Redis unreachable."""
    return errors.BrokerUnavailable(
        "the job store is unreachable; try again shortly", retry_after=UNREACHABLE_RETRY_AFTER
    )


async def _unexpected_error(request: Request, exc: Exception) -> ProblemResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return from_error(errors.InternalError("the server failed to handle the request; it has been logged"))


def _default_detail(status: HTTPStatus) -> str:
    if status is HTTPStatus.NOT_FOUND:
        return "no such resource: check the path against /docs"
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        return "this method is not allowed on this path: check /docs"
    return status.description


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(VisionqError, _visionq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisError, _broker_error)
    app.add_exception_handler(Exception, _unexpected_error)


def problem_responses(*error_classes: type[VisionqError]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route: each status it may answer with, documented as a Problem (429 and 503
    with their `Retry-After`). Every route that answers problems reads Redis (its job state, or the rate limits
    and credentials that `get_principal` checks), so each may answer 503 `broker_unavailable` while Redis is away:
    that is listed here, once, rather than by each route (a route's own 503 entry would replace its router's)."""
    by_status: dict[int, list[type[VisionqError]]] = {}
    documented: tuple[type[VisionqError], ...] = (
        *error_classes,
        errors.ValidationFailed,
        errors.BrokerUnavailable,
        errors.InternalError,
    )
    for cls in documented:
        by_status.setdefault(int(cls.status), []).append(cls)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, classes in sorted(by_status.items()):
        response: dict[str, Any] = {
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "description": " or ".join(sorted({f"`{cls.code}`" for cls in classes})),
        }
        if status in RETRY_AFTER_STATUSES:
            response["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
        responses[status] = response
    return responses


def protected_responses() -> dict[int | str, dict[str, Any]]:
    """What every route behind authentication and the rate limits may also answer (for `APIRouter`)."""
    return problem_responses(errors.Unauthorized, errors.Forbidden, errors.RateLimited)
