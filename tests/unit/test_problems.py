"""RFC 9457 problem details: exact bodies, and the handlers seen through a tiny in-process app."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import redis.exceptions
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x asks for `httpx2` under its TestClient; the project installs `httpx`, which still works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

from visionq import errors
from visionq.api.problems import PROBLEM_MEDIA_TYPE, Problem, from_error, install_problem_handlers, problem_responses
from visionq.errors import VisionqError

SECRET = "secret /etc/visionq/internal.key"
ALL_ERRORS = errors.all_error_classes()


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/raise/{code}")
    async def raise_code(code: str) -> None:
        cls = next(cls for cls in ALL_ERRORS if cls.code == code)
        raise cls(f"detail of {code}")

    @app.get("/items")
    async def items(limit: int) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError(SECRET)

    @app.get("/redis-down")
    async def redis_down() -> None:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app(), raise_server_exceptions=False)


def _body(content: bytes | memoryview) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(bytes(content))
    return body


def test_from_error_gives_the_exact_problem_body() -> None:
    response = from_error(errors.PayloadTooLarge("the image is over 10 MiB; send a smaller file"))
    assert response.status_code == 413
    assert response.media_type == PROBLEM_MEDIA_TYPE
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert _body(response.body) == {
        "type": "urn:visionq:problem:payload_too_large",
        "title": "Payload too large",
        "status": 413,
        "detail": "the image is over 10 MiB; send a smaller file",
        "code": "payload_too_large",
    }


def test_from_error_adds_the_validation_errors_extension() -> None:
    problems = [{"loc": ["top_k"], "msg": "too big", "type": "less_than_equal"}]
    response = from_error(errors.ValidationFailed("the form is not valid", errors=problems))
    assert _body(response.body)["errors"] == problems


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.code)
def test_from_error_carries_retry_after_exactly_on_429_and_503(cls: type[VisionqError]) -> None:
    response = from_error(cls("something happened"))
    body = _body(response.body)
    assert body["type"] == f"urn:visionq:problem:{cls.code}"
    assert (body["status"], body["code"], body["title"]) == (int(cls.status), cls.code, cls.title)
    if cls.status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    else:
        assert "retry-after" not in response.headers


def test_from_error_keeps_an_explicit_retry_after() -> None:
    assert from_error(errors.QueueFull("the queue is full", retry_after=30)).headers["retry-after"] == "30"


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.code)
def test_a_route_raising_any_visionq_error_answers_its_problem(client: TestClient, cls: type[VisionqError]) -> None:
    response = client.get(f"/raise/{cls.code}")
    assert response.status_code == cls.status
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json() == {
        "type": f"urn:visionq:problem:{cls.code}",
        "title": cls.title,
        "status": int(cls.status),
        "detail": f"detail of {cls.code}",
        "code": cls.code,
    }
    assert ("retry-after" in response.headers) == (cls.status in (429, 503))


def test_a_query_parameter_of_the_wrong_type_is_a_validation_error(client: TestClient) -> None:
    response = client.get("/items", params={"limit": "many"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["type"] == "urn:visionq:problem:validation_error"
    assert [error["loc"] for error in body["errors"]] == [["query", "limit"]]
    assert "limit" in body["detail"]


def test_an_unknown_route_is_not_found(client: TestClient) -> None:
    response = client.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert (body["code"], body["status"], body["type"]) == ("not_found", 404, "urn:visionq:problem:not_found")
    assert body["detail"]


def test_a_wrong_method_is_405_validation_error(client: TestClient) -> None:
    response = client.delete("/items")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["code"] == "validation_error"
    assert response.json()["status"] == 405


def test_an_unexpected_exception_is_500_without_its_traceback_message_or_path(client: TestClient) -> None:
    response = client.get("/crash")
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["code"] == "internal_error"
    assert "Traceback" not in response.text
    assert "secret" not in response.text
    assert "/etc/visionq" not in response.text
    assert "RuntimeError" not in response.text


def test_redis_unreachable_is_503_broker_unavailable_with_retry_after(client: TestClient) -> None:
    response = client.get("/redis-down")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.json()["code"] == "broker_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert "6379" not in response.text


def test_problem_responses_documents_each_status_with_the_problem_schema() -> None:
    responses = problem_responses(errors.InvalidImage, errors.PayloadTooLarge, errors.ImageTooLarge)
    assert set(responses) == {400, 413, 422, 500, 503}
    for entry in responses.values():
        assert entry["model"] is Problem
        assert entry["content"][PROBLEM_MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "`payload_too_large`" in responses[413]["description"]
    assert "`image_too_large`" in responses[413]["description"]
    assert responses[422]["description"] == "`validation_error`"
    assert responses[500]["description"] == "`internal_error`"
    assert responses[503]["description"] == "`broker_unavailable`", "every route with problems reads Redis"


def test_problem_responses_declare_retry_after_exactly_on_429_and_503() -> None:
    responses = problem_responses(errors.RateLimited, errors.QueueFull, errors.InvalidImage)
    with_header = {status for status, entry in responses.items() if "Retry-After" in entry.get("headers", {})}
    assert with_header == {429, 503}
    assert responses[503]["description"] == "`broker_unavailable` or `queue_full`"
