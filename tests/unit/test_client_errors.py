"""The SDK's errors: one class per contract code, and error answers parsed into them (httpx.Response objects
built in memory, bodies made by the server's own problem handler)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from visionq import errors
from visionq.api.problems import from_error
from visionq.client import (
    ClientError,
    ConnectionFailed,
    InternalServerError,
    JobTimeout,
    NotFinished,
    ProblemError,
    RateLimitedError,
    ResultBody,
    StatusBody,
    ValidationError,
    problem_class,
)
from visionq.client.common import (
    connection_failed,
    parse_result,
    parse_retry_after,
    parse_status,
    problem_from_response,
    raise_for_problem,
)
from visionq.errors import VisionqError

SERVER_ERRORS = errors.all_error_classes()
REQUEST = httpx.Request("GET", "http://visionq.test/status/job-1")

STATUS = {
    "job_id": "job-1",
    "status": "processing",
    "progress": 50,
    "stage": "inference",
    "created_at": "2026-11-26T21:30:00.123Z",
    "updated_at": "2026-11-26T21:30:01.123Z",
    "worker_id": "vm:1",
    "attempts": 1,
    "model_version": "efficientnet-lite0@1",
    "priority": "normal",
}


def server_answer(exc: VisionqError) -> httpx.Response:
    """What the API sends for `exc`, as the client receives it."""
    answer = from_error(exc)
    return httpx.Response(answer.status_code, headers=dict(answer.headers), content=bytes(answer.body), request=REQUEST)


def answer(
    status: int, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=REQUEST)
    return httpx.Response(status, json=body, headers=headers, request=REQUEST)


def test_every_server_code_has_its_own_class() -> None:
    for server_class in SERVER_ERRORS:
        cls = problem_class(server_class.code)
        assert cls is not ProblemError, f"no SDK class for {server_class.code!r}"
        assert cls.for_code == server_class.code


def test_the_sdk_knows_no_code_the_server_lacks() -> None:
    # The SDK's own classes: other tests make subclasses of their own, which live on until collected.
    sdk_codes = {cls.for_code for cls in ProblemError.__subclasses__() if cls.__module__.startswith("visionq.")}
    assert sdk_codes == {cls.code for cls in SERVER_ERRORS}


def test_an_unknown_code_maps_to_the_base_class() -> None:
    assert problem_class("teapot") is ProblemError


def test_a_code_cannot_have_two_classes() -> None:
    with pytest.raises(TypeError, match="ConflictError already stands for the code 'conflict'"):

        class SecondConflict(ProblemError, code="conflict"):
            pass


def test_a_subclass_without_a_code_stands_for_none() -> None:
    class RetryableProblem(ProblemError):
        pass

    assert RetryableProblem.for_code is None
    assert problem_class("conflict") is not RetryableProblem


@pytest.mark.parametrize("server_class", SERVER_ERRORS, ids=lambda cls: cls.code)
def test_each_server_problem_becomes_its_class(server_class: type[VisionqError]) -> None:
    response = server_answer(server_class("what happened, and what to do"))

    problem = problem_from_response(response)

    assert type(problem) is problem_class(server_class.code)
    assert problem.code == server_class.code
    assert problem.status == int(server_class.status)
    assert problem.detail == "what happened, and what to do"
    assert problem.title == server_class.title
    assert isinstance(problem, ClientError)


def test_retry_after_is_read_from_the_header() -> None:
    problem = problem_from_response(server_answer(errors.RateLimited("slow down", retry_after=7)))

    assert isinstance(problem, RateLimitedError)
    assert problem.retry_after == 7.0


def test_503_answers_carry_retry_after_too() -> None:
    problem = problem_from_response(server_answer(errors.QueueFull("the queue is full")))
    assert problem.retry_after == 1.0


def test_validation_errors_keep_their_per_field_list() -> None:
    fields = [{"loc": ["top_k"], "msg": "must be at most 20", "type": "less_than_equal"}]
    problem = problem_from_response(server_answer(errors.ValidationFailed("top_k: too big", errors=fields)))

    assert isinstance(problem, ValidationError)
    assert problem.errors == fields


def test_a_problem_with_an_unknown_code_keeps_its_code() -> None:
    body = {"type": "urn:visionq:problem:teapot", "title": "Teapot", "status": 418, "detail": "short", "code": "teapot"}

    problem = problem_from_response(answer(418, body))

    assert type(problem) is ProblemError
    assert (problem.code, problem.status, problem.detail, problem.title) == ("teapot", 418, "short", "Teapot")


def test_an_error_that_is_not_a_problem_becomes_internal_error_with_its_status() -> None:
    problem = problem_from_response(answer(502, text="<html><body>502 Bad Gateway</body></html>"))

    assert type(problem) is ProblemError
    assert (problem.code, problem.status, problem.title) == ("internal_error", 502, "Bad Gateway")
    assert "without a problem body: <html><body>502 Bad Gateway" in problem.detail


@pytest.mark.parametrize("body", [{"detail": "no code"}, ["a", "list"], {"code": 404}], ids=["no-code", "list", "int"])
def test_json_that_is_not_a_problem_becomes_internal_error(body: Any) -> None:
    problem = problem_from_response(answer(404, body))

    assert type(problem) is ProblemError
    assert (problem.code, problem.status) == ("internal_error", 404)


def test_an_empty_error_body_says_so() -> None:
    problem = problem_from_response(answer(500, text=""))
    assert "(empty body)" in problem.detail


def test_the_message_names_detail_code_and_status() -> None:
    problem = problem_from_response(server_answer(errors.Conflict("job 1 is already completed")))
    assert str(problem) == "job 1 is already completed (conflict, HTTP 409)"


def test_success_raises_nothing() -> None:
    raise_for_problem(answer(200, STATUS))
    raise_for_problem(answer(202, STATUS))


def test_parse_status_raises_the_problem_of_an_error_answer() -> None:
    with pytest.raises(InternalServerError):
        parse_status(server_answer(errors.InternalError("the server failed")))


def test_a_success_body_the_client_cannot_read_is_an_internal_error() -> None:
    with pytest.raises(ProblemError) as unreadable:
        parse_status(answer(200, {"job_id": "job-1"}))

    assert (unreadable.value.code, unreadable.value.status) == ("internal_error", 200)
    assert "different visionq version" in unreadable.value.detail


def test_a_result_of_a_running_job_raises_not_finished_with_its_status() -> None:
    with pytest.raises(NotFinished) as running:
        parse_result(answer(202, STATUS))

    assert running.value.status == StatusBody.model_validate(STATUS)
    assert "still processing (inference, 50%)" in str(running.value)


def test_a_completed_result_is_a_result_body_and_a_cancelled_one_a_failure_body() -> None:
    completed = {
        "job_id": "job-1",
        "status": "completed",
        "predictions": [{"class_id": 285, "class_name": "Egyptian cat", "confidence": 0.8}],
        "confidence_score": 0.8,
        "processing_time": 0.05,
        "model_version": "efficientnet-lite0@1",
        "created_at": "2026-11-26T21:30:00.123Z",
        "completed_at": "2026-11-26T21:30:01.123Z",
        "metadata": {"image": {"width": 451, "height": 300, "format": "JPEG"}, "queue_time": 0.1, "total_time": 1.0},
    }
    cancelled = {"job_id": "job-1", "status": "cancelled", "error": {"code": "cancelled", "message": "by request"}}

    assert isinstance(parse_result(answer(200, completed)), ResultBody)
    failure = parse_result(answer(200, cancelled))
    assert not isinstance(failure, ResultBody)
    assert failure.status == "cancelled"
    assert failure.error is not None
    assert failure.error.message == "by request"


@pytest.mark.parametrize(("header", "seconds"), [(None, None), ("5", 5.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None)])
def test_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None
    assert 100 < seconds <= 120
    assert parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0


def test_a_refused_connection_becomes_connection_failed() -> None:
    failed = connection_failed("http://127.0.0.1:9", httpx.ConnectError("[Errno 111] Connection refused"))

    assert isinstance(failed, ConnectionFailed)
    assert isinstance(failed, ConnectionError)
    assert isinstance(failed, ClientError)
    assert str(failed).startswith("could not reach the visionq API at http://127.0.0.1:9: [Errno 111] Connection")
    assert "VISIONQ_URL" in str(failed)


def test_a_read_timeout_becomes_connection_failed_naming_the_timeout() -> None:
    failed = connection_failed("http://visionq.test", httpx.ReadTimeout("timed out"))
    assert failed.reason == "no answer within the client's timeout (ReadTimeout)"


def test_job_timeout_is_a_timeout_error_carrying_the_last_status() -> None:
    status = StatusBody.model_validate(STATUS)
    timed_out = JobTimeout("job-1", 2.5, status)

    assert isinstance(timed_out, TimeoutError)
    assert isinstance(timed_out, ClientError)
    assert timed_out.status is status
    assert str(timed_out).startswith("job job-1 did not finish within 2.5s; it is still processing (inference)")
    assert "no status arrived" in str(JobTimeout("job-1", 1, None))
