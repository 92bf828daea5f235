"""The request middleware's account of WebSockets: the open gauge, the counter by outcome, the access line."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from visionq.api.middleware import RequestMiddleware
from visionq.metrics import Metrics

ROUTE = "/ws/{job_id}"


def _socket_scope() -> Scope:
    return {"type": "websocket", "path": "/ws/j1", "headers": [(b"x-request-id", b"trace-1")], "state": {}}


async def _run(middleware: RequestMiddleware, scope: Scope, client_leaves_with: int | None = None) -> list[Message]:
    """Runs one socket through `middleware`; the client says nothing, then leaves (with a close code) if asked."""
    sent: list[Message] = []

    async def receive() -> Message:
        if client_leaves_with is None:
            await asyncio.Event().wait()  # never: the app closes first
        return {"type": "websocket.disconnect", "code": client_leaves_with}

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_accepted_socket_counts_as_open_until_it_ends_then_by_its_close_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    seen_open: list[float | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"].update(route=ROUTE, job_id="j1", principal="anonymous")
        await send({"type": "websocket.accept"})
        seen_open.append(_value(metrics, "visionq_websockets_open", route=ROUTE))
        await send({"type": "websocket.close", "code": 4404})

    with caplog.at_level(logging.INFO, logger="visionq.access"):
        asyncio.run(_run(RequestMiddleware(app, metrics), _socket_scope()))

    assert seen_open == [1.0]
    assert _value(metrics, "visionq_websockets_open", route=ROUTE) == 0.0
    assert _value(metrics, "visionq_websockets_total", route=ROUTE, status="101", close_code="4404") == 1.0
    (record,) = [r for r in caplog.records if r.name == "visionq.access"]
    assert re.fullmatch(r"WS /ws/\{job_id\} 101 4404 \d+\.\dms", record.getMessage())
    line = vars(record)
    expected: dict[str, Any] = {"route": ROUTE, "status": 101, "close_code": 4404, "request_id": "trace-1"}
    assert {k: line[k] for k in expected} == expected
    assert (line["job_id"], line["principal"]) == ("j1", "anonymous")


def test_the_client_leaving_first_gives_its_close_code() -> None:
    metrics = Metrics()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["route"] = ROUTE
        await send({"type": "websocket.accept"})
        await receive()  # the client leaves

    asyncio.run(_run(RequestMiddleware(app, metrics), _socket_scope(), client_leaves_with=1001))

    assert _value(metrics, "visionq_websockets_total", route=ROUTE, status="101", close_code="1001") == 1.0
    assert _value(metrics, "visionq_websockets_open", route=ROUTE) == 0.0


def test_a_socket_refused_before_its_handshake_is_a_403_and_never_open() -> None:
    metrics = Metrics()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "websocket.close", "code": 1000})  # as Starlette's router for an unknown path

    asyncio.run(_run(RequestMiddleware(app, metrics), _socket_scope()))

    assert _value(metrics, "visionq_websockets_total", route="unmatched", status="403", close_code="1000") == 1.0
    assert _value(metrics, "visionq_websockets_open", route="unmatched") is None


@pytest.mark.parametrize(
    ("route", "status", "level"),
    [
        ("/health/ready", 200, logging.DEBUG),
        ("/metrics", 200, logging.DEBUG),
        ("/health/ready", 503, logging.INFO),
        ("/status/{job_id}", 200, logging.INFO),
    ],
)
def test_answered_probes_and_scrapes_are_access_lines_at_debug_the_rest_at_info(
    caplog: pytest.LogCaptureFixture, route: str, status: int, level: int
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["route"] = route
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "http", "method": "GET", "path": route, "headers": [], "state": {}}
    with caplog.at_level(logging.DEBUG, logger="visionq.access"):
        asyncio.run(RequestMiddleware(app, Metrics())(scope, receive, send))

    (record,) = [r for r in caplog.records if r.name == "visionq.access"]
    assert (record.levelno, record.getMessage().split(" ")[:3]) == (level, ["GET", route, str(status)])
