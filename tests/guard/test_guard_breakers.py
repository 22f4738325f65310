"""Circuit breakers: resilience4j semantics, driven by a manual clock (no sleeps)."""

from __future__ import annotations

import pytest

from assay.errors import BadInput
from assay.guard.breakers import (
    HARMFUL,
    LABEL_STORE_FAILED,
    BreakerConfig,
    BreakerRegistry,
    CallOutcome,
    CircuitBreaker,
    ScopePolicy,
    State,
    WindowType,
    drop_rate_above,
)


def make(clock, **kw) -> tuple[CircuitBreaker, list]:
    events: list = []
    b = CircuitBreaker("surface:for_you", BreakerConfig(**kw), clock=clock, wall_clock=clock, listeners=[events.append])
    return b, events


def test_count_window_needs_minimum_calls_then_trips_on_failure_rate(clock):
    b, events = make(clock, window_size=10, minimum_calls=5, failure_rate_threshold=50)
    for _ in range(4):
        assert b.try_acquire_permission()
        b.on_error()
    assert b.state is State.CLOSED  # 100% failures but only 4 calls
    b.on_success()
    assert b.state is State.OPEN  # 4/5 = 80% >= 50%
    assert not b.try_acquire_permission()
    assert b.not_permitted == 1
    ev = events[-1]
    assert ev.kind == "breaker_transition" and ev.subject == "surface:for_you"
    assert ev.payload["from"] == "closed" and ev.payload["to"] == "open"
    assert ev.payload["calls"] == 5 and ev.payload["failure_rate"] == 80.0


def test_count_window_slides(clock):
    b, _ = make(clock, window_size=4, minimum_calls=4, failure_rate_threshold=75)
    for ok in (False, False, True, True, True, True):  # the two failures slide out
        b.on_result(failed=not ok)
    assert b.state is State.CLOSED
    assert b.metrics().calls == 4 and b.metrics().failed == 0


def test_slow_call_rate_trips(clock):
    b, _ = make(clock, window_size=10, minimum_calls=4, slow_call_duration_s=0.02, slow_call_rate_threshold=50)
    b.on_success(0.001)
    b.on_success(0.001)
    b.on_success(0.05)
    assert b.state is State.CLOSED
    b.on_success(0.03)  # 2 of 4 slow
    assert b.state is State.OPEN
    assert "slow-call rate 50.0%" in b.transitions[-1][2]


def test_time_window_forgets_old_calls(clock):
    b, _ = make(clock, window_type=WindowType.TIME, window_size=10, minimum_calls=3, failure_rate_threshold=60)
    b.on_error()
    b.on_error()
    clock.advance(11)  # both failures leave the 10 s window
    b.on_success()
    b.on_error()
    b.on_success()
    assert b.state is State.CLOSED  # 1/3 in the window
    assert b.metrics().calls == 3
    b.on_error()
    b.on_error()  # 3/5 = 60%
    assert b.state is State.OPEN


def test_open_half_open_probes_close(clock):
    b, events = make(clock, window_size=4, minimum_calls=2, wait_in_open_s=30, permitted_calls_in_half_open=2)
    b.on_error()
    b.on_error()
    assert b.state is State.OPEN
    clock.advance(29)
    assert not b.try_acquire_permission()
    clock.advance(1)
    assert b.state is State.HALF_OPEN
    assert b.try_acquire_permission() and b.try_acquire_permission()
    assert not b.try_acquire_permission()  # only 2 probes
    b.on_success()
    assert b.state is State.HALF_OPEN
    b.on_success()
    assert b.state is State.CLOSED
    assert [(e.payload["from"], e.payload["to"]) for e in events] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert b.metrics().calls == 0  # a fresh window after closing


def test_half_open_failing_probes_reopen(clock):
    b, _ = make(clock, window_size=4, minimum_calls=2, wait_in_open_s=5, permitted_calls_in_half_open=2, failure_rate_threshold=50)
    b.on_error()
    b.on_error()
    clock.advance(5)
    assert b.try_acquire_permission()
    b.on_success()
    assert b.try_acquire_permission()
    b.on_error()  # 1 of 2 probes failed = 50%
    assert b.state is State.OPEN


def test_half_open_cannot_stick(clock):
    b, _ = make(clock, window_size=4, minimum_calls=2, wait_in_open_s=5, permitted_calls_in_half_open=3, max_wait_in_half_open_s=20)
    b.on_error()
    b.on_error()
    clock.advance(5)
    assert b.try_acquire_permission()  # one probe taken, never reported
    clock.advance(20)
    assert b.state is State.OPEN
    assert "did not complete" in b.transitions[-1][2]


def test_absolute_count_trip_for_severe_events(clock):
    b, _ = make(clock, window_size=1000, minimum_calls=1000, severe_threshold=3, severe_window_s=600,
                failure_predicate=HARMFUL)
    for _ in range(500):
        b.record(CallOutcome("ok"))
    b.record(CallOutcome("harmful", severe=True))
    clock.advance(700)  # the first severe event leaves the window
    b.record(CallOutcome("harmful", severe=True))
    b.record(CallOutcome("harmful", severe=True))
    assert b.state is State.CLOSED
    b.record(CallOutcome("harmful", severe=False))  # not severe: does not count toward the trip
    assert b.state is State.CLOSED
    b.record(CallOutcome("harmful", severe=True))
    assert b.state is State.OPEN
    assert "3 severe events" in b.transitions[-1][2]


def test_predicates_decide_what_fails(clock):
    b, _ = make(clock, window_size=4, minimum_calls=2, failure_predicate=LABEL_STORE_FAILED)
    b.record(CallOutcome("harmful"))
    b.record(CallOutcome("drop_rate", value=0.99))
    assert b.state is State.CLOSED
    b.record(CallOutcome("label_store_timeout"))
    b.record(CallOutcome("label_store_error"))
    assert b.state is State.OPEN
    surge = drop_rate_above(0.5)
    assert surge(CallOutcome("drop_rate", value=0.6)) and not surge(CallOutcome("drop_rate", value=0.4))


def test_special_states(clock):
    b, events = make(clock, window_size=2, minimum_calls=2)
    b.force_open()
    assert b.state is State.FORCED_OPEN and not b.try_acquire_permission()
    clock.advance(10_000)
    assert b.state is State.FORCED_OPEN  # a kill switch does not time out
    b.disable()
    for _ in range(5):
        b.on_error()
    assert b.state is State.DISABLED and b.try_acquire_permission() and b.metrics().calls == 0
    b.metrics_only()
    for _ in range(5):
        b.on_error()
    assert b.state is State.METRICS_ONLY and b.try_acquire_permission()
    assert b.metrics().failed == 2  # recorded, never transitions
    b.close()
    assert b.state is State.CLOSED
    assert [e.payload["to"] for e in events] == ["forced_open", "disabled", "metrics_only", "closed"]


def test_registry_scopes_and_bad_config(clock):
    events: list = []
    reg = BreakerRegistry({"source": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2))}, clock=clock, listeners=[events.append])
    assert reg.get("surface:x") is None  # no policy for that scope kind
    a, b = reg.get("source:ugc"), reg.get("source:catalog")
    assert a is reg.get("source:ugc") and a is not b
    a.on_error()
    a.on_error()
    assert reg.states() == {"source:catalog": "closed", "source:ugc": "open"}
    assert events[-1].subject == "source:ugc"
    with pytest.raises(BadInput, match="failure_rate_threshold"):
        BreakerConfig(failure_rate_threshold=0)
    with pytest.raises(BadInput, match=">= 1"):
        BreakerConfig(minimum_calls=0)
