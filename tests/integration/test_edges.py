"""The edges of every answer: request ids, security headers, CORS, and the access log's fields (of requests and
of WebSockets)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from factories import cat_variants
from integration.stack import ApiServer, submit, wait_for, wait_terminal
from visionq.jobs import keys
from visionq.settings import Settings

ORIGIN = "https://app.example.com"


def test_every_answer_carries_the_security_headers(api: httpx.Client) -> None:
    for answer in (api.get("/health"), api.get("/"), api.get("/status/unknown"), submit(api, b"not an image")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert "content-security-policy" not in api.get("/docs").headers, "the docs page loads its scripts from a CDN"


def test_a_request_id_is_echoed_when_sane_and_made_otherwise(api: httpx.Client) -> None:
    assert api.get("/health", headers={"X-Request-ID": "trace-42"}).headers["x-request-id"] == "trace-42"
    made = api.get("/health", headers={"X-Request-ID": "no spaces <or> markup please"}).headers["x-request-id"]
    assert len(made) == 32
    assert made.isalnum()


def test_the_request_id_of_an_upload_is_kept_with_its_job(api: httpx.Client, stack_redis: redis.Redis) -> None:
    files = {"file": ("cat.jpg", cat_variants()["jpeg"])}
    accepted = api.post("/classify", files=files, headers={"X-Request-ID": "upload-7"})
    job_id = accepted.json()["job_id"]

    assert accepted.headers["x-request-id"] == "upload-7"
    # The worker binds it to every log line of the job; the archive keeps it with the job's row.
    assert stack_redis.hget(keys.status(job_id), "request_id") == "upload-7"


@pytest.fixture(scope="module")
def cors_api(stack: tuple[Settings, object, ApiServer]) -> Iterator[httpx.Client]:
    server = ApiServer(stack[0].model_copy(update={"cors_origins": [ORIGIN]}))
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
    server.stop()


def test_cors_answers_the_configured_origin_only(cors_api: httpx.Client) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "X-API-Key"}
    allowed = cors_api.options("/classify", headers={"Origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()

    other = cors_api.options("/classify", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    simple = cors_api.get("/health", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


def test_without_configured_origins_there_is_no_cors(api: httpx.Client) -> None:
    answer = api.get("/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in answer.headers


def test_the_access_log_line_has_method_route_status_duration_principal_and_job(
    api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="visionq.access"):
        job_id = submit(api, cat_variants()["jpeg"], "cat.jpg").json()["job_id"]
        api.get(f"/status/{job_id}", headers={"X-Request-ID": "trace-status"})

        # The line is written once the answer has gone out: it may trail the client by a moment.
        wait_for(lambda: "/status/{job_id}" in _access(caplog), 5, "the access log line")

    records = _access(caplog)
    upload, status = records["/classify"], records["/status/{job_id}"]
    assert (upload["method"], upload["status"], upload["principal"], upload["job_id"]) == (
        "POST",
        202,
        "anonymous",
        job_id,
    )
    assert (status["request_id"], status["job_id"], status["status"]) == ("trace-status", job_id, 200)
    assert upload["duration"] > 0


def test_a_websocket_has_one_access_line_when_it_ends_with_its_close_code_and_job(
    api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = submit(api, cat_variants()["jpeg"], "cat.jpg").json()["job_id"]
    wait_terminal(api, job_id)
    base = str(api.base_url).replace("http://", "ws://")
    with caplog.at_level(logging.INFO, logger="visionq.access"):
        for path, request_id in ((f"/ws/{job_id}", "trace-ws"), ("/ws/unknown", None)):
            headers = {"X-Request-ID": request_id} if request_id else {}
            with connect(base + path, open_timeout=10, additional_headers=headers) as ws, suppress(ConnectionClosed):
                for _ in ws:  # to the server's close
                    pass
        wait_for(lambda: len(_sockets(caplog)) == 2, 5, "the WebSockets' access log lines")

    followed, unknown = _sockets(caplog)
    assert (followed["route"], followed["status"], followed["close_code"]) == ("/ws/{job_id}", 101, 1000)
    assert followed["job_id"] == job_id
    assert (followed["request_id"], followed["principal"], followed["method"]) == ("trace-ws", "anonymous", "GET")
    assert followed["duration"] > 0
    assert (unknown["status"], unknown["close_code"], unknown["job_id"]) == (101, 4404, "unknown")
    assert len(unknown["request_id"]) == 32


def _sockets(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access log's lines of WebSockets, in the order they ended."""
    return [vars(r) for r in caplog.records if r.name == "visionq.access" and r.getMessage().startswith("WS ")]


def _access(caplog: pytest.LogCaptureFixture) -> dict[str, dict[str, Any]]:
    """The access log's lines by route, each as its fields."""
    lines = [vars(record) for record in caplog.records if record.name == "visionq.access"]
    return {line["route"]: line for line in lines}
