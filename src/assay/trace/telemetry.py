"""Prometheus metrics and OpenTelemetry spans for the serving path and the trace writer.

The guard calls these; the service exposes the metrics on ``/metrics``:

    from assay.trace import telemetry
    m = telemetry.metrics()                      # prometheus_client default registry, or pass one
    with telemetry.guard_span(request_id, surface) as span:
        ... decide ...
        m.record_decisions(decisions)            # assay_decisions_total{action,rule,surface}
    m.set_breaker_state("for_you", "open")       # assay_breaker_state{scope,state} (1 = current)
    m.set_queue_depth(n)                         # assay_trace_queue_depth
    with m.time_write(): log.append(batch)       # assay_trace_write_seconds histogram

Spans carry ``assay.request_id``, the same id every Decision record of that request carries,
so a trace in Jaeger/Tempo and ``assay trace why`` point at each other.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
from opentelemetry import trace as otel_trace
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from assay.records import Decision

BREAKER_STATES = ("closed", "half-open", "open")
_TRACER = otel_trace.get_tracer("assay.guard")


class TraceMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.decisions = Counter("assay_decisions_total", "Guard decisions by action, rule and surface",
                                 ["action", "rule", "surface"], registry=registry)
        self.breaker = Gauge("assay_breaker_state", "Circuit breaker state (1 for the current state)",
                             ["scope", "state"], registry=registry)
        self.queue_depth = Gauge("assay_trace_queue_depth", "Decisions waiting for the trace writer", registry=registry)
        self.write_seconds = Histogram("assay_trace_write_seconds", "Trace append latency (durable + checkpointed)",
                                       buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                       registry=registry)
        self.records = Counter("assay_trace_records_total", "Records appended to the trace", registry=registry)
        self.tree_size = Gauge("assay_trace_tree_size", "Size of the newest signed checkpoint", registry=registry)

    def record_decisions(self, decisions: Sequence[Decision] | pa.Table) -> None:
        """Count decisions; a decision with several rules counts once per rule, with none under rule=""."""
        tally: Tally[tuple[str, str, str]] = Tally()
        if isinstance(decisions, pa.Table):
            rows = zip(decisions.column("action").to_pylist(), decisions.column("rule_ids").to_pylist(),
                       decisions.column("surface").to_pylist(), strict=True)
        else:
            rows = ((d.action, d.rule_ids, d.surface) for d in decisions)
        for action, rules, surface in rows:
            for rule in rules or ("",):
                tally[(action, rule, surface)] += 1
        for (action, rule, surface), count in tally.items():
            self.decisions.labels(action, rule, surface).inc(count)

    def set_breaker_state(self, scope: str, state: str) -> None:
        if state not in BREAKER_STATES:
            raise ValueError(f"breaker state must be one of {BREAKER_STATES}, got {state!r}")
        for s in BREAKER_STATES:
            self.breaker.labels(scope, s).set(1 if s == state else 0)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    @contextlib.contextmanager
    def time_write(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.write_seconds.observe(time.perf_counter() - started)

    def observe_append(self, result: Any) -> None:
        """Record an ``AppendResult`` (count, latency, checkpoint size)."""
        self.records.inc(result.count)
        self.write_seconds.observe(result.seconds)
        self.tree_size.set(result.checkpoint_size)


_BY_REGISTRY: dict[int, TraceMetrics] = {}
_LOCK = threading.Lock()


def metrics(registry: CollectorRegistry | None = None) -> TraceMetrics:
    """The metrics bound to ``registry`` (default: prometheus_client's global one), made once."""
    registry = registry or REGISTRY
    with _LOCK:
        found = _BY_REGISTRY.get(id(registry))
        if found is None or found.registry is not registry:
            found = _BY_REGISTRY[id(registry)] = TraceMetrics(registry)
        return found


@contextlib.contextmanager
def guard_span(request_id: str, surface: str, **attributes: Any) -> Iterator[Any]:
    """An OpenTelemetry span around one guard request, linked to its decisions by request id."""
    with _TRACER.start_as_current_span("assay.guard.apply") as span:
        span.set_attribute("assay.request_id", request_id)
        span.set_attribute("assay.surface", surface)
        for key, value in attributes.items():
            span.set_attribute(f"assay.{key}", value)
        yield span


@contextlib.contextmanager
def trace_write_span(count: int) -> Iterator[Any]:
    with _TRACER.start_as_current_span("assay.trace.append") as span:
        span.set_attribute("assay.records", count)
        yield span
