"""What the trace helpers give with tracing off (the default) and with a provider set by someone else."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from visionq import telemetry


def test_with_tracing_off_a_published_message_carries_no_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_provider", None)  # whatever another test of this process set up
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    with telemetry.publishing("visionq.classify") as headers:
        assert headers == {}
        assert telemetry.current_traceparent() is None


def test_a_provider_set_by_someone_else_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    """`opentelemetry-instrument` sets the global provider without `start_tracing`: messages still carry the
    span's context, and the job's record its `traceparent`."""
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: TracerProvider())
    with telemetry.publishing("visionq.classify") as headers:
        traceparent = telemetry.current_traceparent()
        assert traceparent is not None
        assert headers["traceparent"] == traceparent
        assert traceparent.split("-")[1] == f"{trace.get_current_span().get_span_context().trace_id:032x}"
