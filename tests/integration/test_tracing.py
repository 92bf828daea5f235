"""One trace per job: the API's request, its Redis commands, the Celery publish, and the worker's task.

The API and a worker run as their own processes with VISIONQ_OTLP_ENDPOINT pointing at a collector in this
test: a real OTLP/HTTP endpoint that keeps the spans it receives in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from factories import cat_variants
from integration.conftest import RedisFactory
from integration.stack import (
    FAST_RECOVERY,
    ApiProcess,
    CallbackWorkerProcess,
    WorkerProcess,
    submit,
    wait_for,
    wait_terminal,
)
from visionq.settings import Settings

#: Seconds the exporters may take to send their spans (they batch every 200 ms here).
EXPORT_TIMEOUT = 20.0


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


@dataclass
class Collector:
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def receive(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            Span(
                                attributes.get("service.name", "?"),
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                            )
                        )

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [span for span in self.spans if span.trace_id == trace_id]


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    state = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state.receive(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def traced_api(
    collector: tuple[Collector, str], new_redis: RedisFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # export every 200 ms instead of 5 s
    settings = Settings(
        **{**FAST_RECOVERY, "log_level": "WARNING"},
        redis_url=new_redis("tracing"),
        queue="visionq-test-tracing",
        callback_queue="visionq-test-tracing-callbacks",
        data_dir=tmp_path_factory.mktemp("tracing"),
        worker_pool="solo",
        otlp_endpoint=collector[1],
        callback_secret="tracing-callback-secret",
        callback_allow_private=True,
    )
    worker, deliverer, api = WorkerProcess(settings), CallbackWorkerProcess(settings), ApiProcess(settings)
    for process in (worker, deliverer, api):
        process.start()
    yield api.url
    for process in (api, deliverer, worker):
        process.stop()
    monkeypatch.undo()


@pytest.fixture
def receiver() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_one_trace_spans_the_upload_and_the_workers_task(traced_api: str, collector: tuple[Collector, str]) -> None:
    spans, _ = collector
    trace_id = _traced_job(traced_api, spans)
    wait_for(
        lambda: any(s.name == "run/visionq.classify_image" for s in spans.trace(trace_id)),
        EXPORT_TIMEOUT,
        "the worker's span of the task",
    )
    in_trace = spans.trace(trace_id)
    names = {(span.service, span.name) for span in in_trace}
    assert ("visionq-api", "apply_async/visionq.classify_image") in names, names
    assert ("visionq-worker", "run/visionq.classify_image") in names
    # The one-step submit (`scripts.SUBMIT`) is the API's Redis span of the job.
    assert any(service == "visionq-api" and name.split()[0] in {"EVALSHA", "EVAL"} for service, name in names)
    assert any(service == "visionq-worker" and name.startswith("EVALSHA") for service, name in names)
    by_id = {span.span_id: span for span in in_trace}
    task = next(span for span in in_trace if span.name == "run/visionq.classify_image")
    assert by_id[task.parent_id].name == "apply_async/visionq.classify_image", "the task hangs under its publish"


def test_the_callback_joins_the_trace_of_its_job(
    traced_api: str, collector: tuple[Collector, str], receiver: str
) -> None:
    spans, _ = collector
    trace_id = _traced_job(traced_api, spans, callback_url=receiver)

    wait_for(
        lambda: any(s.name == "run/visionq.deliver_callback" for s in spans.trace(trace_id)),
        EXPORT_TIMEOUT,
        "the callback's span in the job's trace",
    )
    callback = {(span.service, span.name) for span in spans.trace(trace_id) if span.service == "visionq-callbacks"}
    assert ("visionq-callbacks", "run/visionq.deliver_callback") in callback
    assert ("visionq-callbacks", "POST") in callback, "the delivery's HTTP request itself"


def _traced_job(url: str, spans: Collector, **fields: Any) -> str:
    """Submit the cat, wait for it, and return the trace id of its upload (the one upload made here)."""

    def uploads() -> list[Span]:
        with spans.lock:
            return [s for s in spans.spans if s.service == "visionq-api" and s.name == "POST /classify"]

    earlier = len(uploads())
    with httpx.Client(base_url=url, timeout=30) as api:
        job_id = submit(api, cat_variants()["jpeg"], "cat.jpg", **fields).json()["job_id"]
        assert wait_terminal(api, job_id)["status"] == "completed"

    def upload_trace() -> str | None:
        new = uploads()[earlier:]
        return new[0].trace_id if new else None

    trace_id: str = wait_for(upload_trace, EXPORT_TIMEOUT, "the API's span of the upload")
    return trace_id
