"""OpenTelemetry tracing: one trace per job, from the upload through Redis and Celery to the worker's task
and its callback. Off unless VISIONQ_OTLP_ENDPOINT is set.

The Celery instrumentation carries the trace context in the task message's headers, so the worker's spans
join the trace of the request that queued the job.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from visionq import __version__
from visionq.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def start_tracing(settings: Settings, service: str) -> TracerProvider | None:
    """Set up tracing for this process once: spans of Redis commands, Celery tasks (published and run) and
    outgoing HTTP (callbacks), exported over OTLP/HTTP. Returns the provider, or None when tracing is off.
    The API adds its own requests with `FastAPIInstrumentor` (api/app.py). Call it after any fork: the
    exporter's thread does not survive one."""
    global _provider
    if _provider is not None or settings.otlp_endpoint is None:
        return _provider
    # Imported only here: the SDK, its exporter and the instrumentations are a tenth of a second of every
    # process's start, and most run with tracing off.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    endpoint = f"{settings.otlp_endpoint.rstrip('/')}/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    log.info("tracing to %s", endpoint)
    trace.set_tracer_provider(provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    if importlib.util.find_spec("celery") is not None:  # the API's install (`visionq[api]`) has no Celery
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _provider = provider
    return provider


def stop_tracing() -> None:
    """Send what is buffered (a worker process calls it on its way out)."""
    if _provider is not None:
        _provider.force_flush()


def _tracing() -> bool:
    """Whether spans are recorded in this process: ours (`start_tracing`), or a provider that someone else set
    (`opentelemetry-instrument`); while neither is, every span is a no-op and no context is ever propagated."""
    return _provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def publishing(task: str) -> Iterator[dict[str, str]]:
    """A producer span for a task message that visionq writes itself (`jobs/queue.py`), named as Celery's
    instrumentation names its own, and the message headers that carry its context: the worker's span of the
    task then hangs under it. The headers are empty while tracing is off."""
    if not _tracing():  # a no-op span and two propagators' worth of calls saved on every submit
        yield {}
        return
    tracer = trace.get_tracer("visionq")
    with tracer.start_as_current_span(f"apply_async/{task}", kind=trace.SpanKind.PRODUCER):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, or None when tracing is off or no span is active."""
    if not _tracing():
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def trace_context(traceparent: str | None) -> Iterator[None]:
    """Run the block as part of the trace `traceparent` names (a job's, for its callback)."""
    if traceparent is None:
        yield
        return
    token = otel_context.attach(propagate.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        otel_context.detach(token)
