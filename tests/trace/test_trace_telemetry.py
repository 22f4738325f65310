"""Metrics and spans the guard uses: real prometheus-client registry, real OpenTelemetry SDK."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from trace_helpers import make_decisions

from assay.trace import TraceLog, telemetry


def test_metrics_are_exposed(tmp_path) -> None:
    registry = CollectorRegistry()
    m = telemetry.metrics(registry)
    assert telemetry.metrics(registry) is m
    decisions = make_decisions(30)
    m.record_decisions(decisions)
    m.set_breaker_state("for_you", "open")
    m.set_queue_depth(17)
    with TraceLog.open(tmp_path / "log") as log, m.time_write():
        m.observe_append(log.append(decisions))
    text = generate_latest(registry).decode()
    assert 'assay_decisions_total{action="drop",rule="teen-mature-drop",surface="search"} 5.0' in text
    assert 'assay_decisions_total{action="allow",rule="",surface="for_you"} 10.0' in text
    assert 'assay_breaker_state{scope="for_you",state="open"} 1.0' in text
    assert 'assay_breaker_state{scope="for_you",state="closed"} 0.0' in text
    assert "assay_trace_queue_depth 17.0" in text
    assert "assay_trace_write_seconds_count 2.0" in text
    assert "assay_trace_records_total 30.0" in text and "assay_trace_tree_size 30.0" in text


def test_guard_span_carries_request_id() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    telemetry._TRACER, saved = tracer, telemetry._TRACER
    try:
        with telemetry.guard_span("req-42", "for_you", candidates=50):
            pass
    finally:
        telemetry._TRACER = saved
    (span,) = exporter.get_finished_spans()
    assert span.name == "assay.guard.apply"
    assert span.attributes["assay.request_id"] == "req-42" and span.attributes["assay.candidates"] == 50
