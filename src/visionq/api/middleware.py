"""Request id, security headers, rate-limit headers, HTTP metrics and the access log, as one pure ASGI
middleware (no per-request task or body copy). A WebSocket gets a request id, its own metrics (open now; ended,
by close code) and one access log line when it ends, in place of uvicorn's two when it opens (`visionq.logging`)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import Gauge
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from visionq.logging import log_context
from visionq.metrics import Metrics

log = logging.getLogger("visionq.access")

REQUEST_ID_HEADER = "X-Request-ID"
#: On every answer. The page and its assets come from this origin only; its thumbnails are blob: URLs.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
#: FastAPI's interactive docs load their scripts from a CDN: the policy above would blank them.
_DOCS_PATHS = ("/docs", "/redoc")
#: Routes that load balancers, orchestrators and Prometheus call every few seconds: their answered requests are
#: logged at DEBUG, so that the access log at INFO holds what clients did. A probe that fails stays at INFO.
PROBE_ROUTES = frozenset({"/health", "/health/ready", "/metrics"})
#: A client's request id is echoed only if it looks like an id, never arbitrary text in logs.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestMiddleware:
    """Gives every request an id (`X-Request-ID`, accepted or made) and counts it by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers.update(SECURITY_HEADERS)
                if not scope["path"].startswith(_DOCS_PATHS):
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                quota = scope["state"].get("quota")
                if quota is not None:
                    headers.update(quota.headers())
            await send(message)

        try:
            with log_context(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            labels = (scope["method"], route, str(status))
            self.metrics.http_requests.labels(*labels).inc()
            self.metrics.http_duration.labels(*labels).observe(elapsed)
            log.log(
                logging.DEBUG if route in PROBE_ROUTES and status < 400 else logging.INFO,
                "%s %s %d %.1fms",
                scope["method"],
                route,
                status,
                elapsed * 1000,
                extra=_access_fields(scope, request_id, scope["method"], route, status, elapsed),
            )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Runs a WebSocket, then logs it: the handshake's status (101, or 403 when refused before it was
        accepted) and the close code of whichever side closed first."""
        request_id = _request_id(scope)
        started = time.perf_counter()
        opened: Gauge | None = None  # the open-sockets gauge's child this socket counts in, once accepted
        close_code: int | None = None

        async def noting_send(message: Message) -> None:
            nonlocal opened, close_code
            if message["type"] == "websocket.accept":
                opened = self.metrics.websockets_open.labels(_route(scope))
                opened.inc()
            elif message["type"] == "websocket.close" and close_code is None:
                close_code = message.get("code", 1000)
            await send(message)

        async def noting_receive() -> Message:
            nonlocal close_code
            message = await receive()
            if message["type"] == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)
            return message

        try:
            with log_context(request_id=request_id):
                await self.app(scope, noting_receive, noting_send)
        finally:
            elapsed = time.perf_counter() - started
            route = _route(scope)
            status = 101 if opened is not None else 403
            if opened is not None:
                opened.dec()
            self.metrics.websockets.labels(route, str(status), str(close_code or "")).inc()
            log.info(
                "WS %s %d %s %.1fms",
                route,
                status,
                close_code if close_code is not None else "-",
                elapsed * 1000,
                extra=_access_fields(scope, request_id, "GET", route, status, elapsed) | {"close_code": close_code},
            )


def _access_fields(
    scope: Scope, request_id: str, method: str, route: str, status: int, elapsed: float
) -> dict[str, object]:
    """The fields of an access line, for a request or a WebSocket."""
    return {
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "duration": round(elapsed, 6),
        "principal": scope["state"].get("principal"),
        "job_id": scope["state"].get("job_id"),
    }


def _route(scope: Scope) -> str:
    """The template of the route that served the scope: a FastAPI route's, or the one a plain route (the job's
    WebSocket) names in the scope's state; "unmatched" for none."""
    route = getattr(scope.get("route"), "path", None) or scope["state"].get("route", "unmatched")
    return str(route)


def _request_id(scope: Scope) -> str:
    """The client's `X-Request-ID` if it looks like an id, else a new one; kept in the scope's state."""
    incoming = _header(scope, b"x-request-id")
    request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    scope.setdefault("state", {})["request_id"] = request_id
    return request_id


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
