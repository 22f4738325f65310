"""Circuit breakers: resilience4j semantics, severe events, safety signals, permits, 8-thread
races, and the registry's bound, eviction, paging and metrics — driven by a manual clock (no
sleeps). The conformance to resilience4j is in test_guard_breaker_conformance.py."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from assay.errors import BadInput
from assay.guard.breakers import (
    HARMFUL,
    LABEL_STORE_FAILED,
    BreakerConfig,
    BreakerRegistry,
    CallOutcome,
    CircuitBreaker,
    IllegalTransition,
    ScopePolicy,
    State,
    WindowType,
    drop_rate_above,
)


def make(clock, **kw) -> tuple[CircuitBreaker, list]:
    events: list = []
    b = CircuitBreaker("surface:for_you", BreakerConfig(**kw), clock=clock, wall_clock=clock, listeners=[events.append])
    return b, events


def tripped(clock, **kw) -> tuple[CircuitBreaker, list]:
    """A breaker just opened by two failures (window of 2)."""
    b, events = make(clock, **{"window_size": 2, "minimum_calls": 2, **kw})
    b.on_error()
    b.on_error()
    assert b.state is State.OPEN
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


def test_count_window_slides_and_its_minimum_is_at_most_its_size(clock):
    b, _ = make(clock, window_size=4, minimum_calls=4, failure_rate_threshold=75)
    for ok in (False, False, True, True, True, True):  # the two failures slide out
        b.on_result(failed=not ok)
    assert b.state is State.CLOSED
    assert b.metrics().calls == 4 and b.metrics().failed == 0
    b, _ = make(clock, window_size=3, minimum_calls=50)
    for _ in range(3):
        b.on_error()
    assert b.state is State.OPEN  # the minimum of 50 is the window's 3


def test_slow_means_longer_than_the_threshold(clock):
    b, _ = make(clock, window_size=10, minimum_calls=4, slow_call_duration_s=0.02, slow_call_rate_threshold=50)
    b.on_success(0.001)
    b.on_success(0.02)  # exactly the threshold: not slow
    b.on_success(0.05)
    assert b.state is State.CLOSED
    b.on_success(0.021)  # 2 of 4 slow
    assert b.state is State.OPEN
    assert "slow-call rate 50.0%" in b.transitions[-1].reason


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


def test_open_wait_ends_strictly_after_it_then_probes_decide(clock):
    b, events = tripped(clock, wait_in_open_s=30, permitted_calls_in_half_open=2)
    clock.advance(30)
    assert not b.try_acquire_permission()  # exactly at the end of the wait: still open
    clock.advance(0.001)
    assert b.try_acquire_permission() and b.state is State.HALF_OPEN
    assert b.try_acquire_permission()
    assert not b.try_acquire_permission()  # only 2 probes
    b.on_success()
    assert b.state is State.HALF_OPEN
    b.on_success()
    assert b.state is State.CLOSED
    assert [(e.payload["from"], e.payload["to"]) for e in events] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert b.metrics().calls == 0  # a fresh window after closing


def test_half_open_decides_after_min_of_minimum_calls_and_permitted(clock):
    b, _ = tripped(clock, wait_in_open_s=5, permitted_calls_in_half_open=5, minimum_calls=2, failure_rate_threshold=50)
    clock.advance(6)
    assert b.try_acquire_permission()
    b.on_success()
    assert b.try_acquire_permission()
    b.on_error()  # 1 of 2 probes failed = 50%: decided after 2, not 5
    assert b.state is State.OPEN
    assert b.transitions[-1].reason.endswith("in half-open probes")


def test_results_while_open_are_counted_and_change_nothing(clock):
    b, _ = tripped(clock, wait_in_open_s=5, permitted_calls_in_half_open=1)
    clock.advance(100)
    for _ in range(5):
        b.on_success()  # late results of calls permitted before the trip
    assert b.state is State.OPEN and len(b.transitions) == 1
    assert b.metrics().calls == 2  # the window it tripped on (2 calls), counted in place
    assert b.try_acquire_permission() and b.state is State.HALF_OPEN


def test_half_open_cannot_stick_and_the_open_wait_starts_when_it_ran_out(clock):
    b, _ = tripped(clock, wait_in_open_s=5, permitted_calls_in_half_open=3, max_wait_in_half_open_s=20)
    clock.advance(6)
    assert b.try_acquire_permission()  # one probe taken, never reported
    entered = clock()
    clock.advance(100)
    assert b.state is State.OPEN and b.since == entered + 20
    assert b.try_acquire_permission()  # 80 s after the half-open timeout: the 5 s wait is long over
    assert [(t.to, t.at) for t in b.transitions][-2:] == [(State.OPEN, entered + 20), (State.HALF_OPEN, clock())]
    assert "did not decide" in b.transitions[-2].reason


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


def test_special_states_and_manual_transitions(clock):
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
    with pytest.raises(IllegalTransition, match="metrics_only to open"):
        b.trip()  # resilience4j has no METRICS_ONLY -> OPEN
    b.close()
    assert b.state is State.CLOSED
    with pytest.raises(IllegalTransition, match="closed to half_open"):
        b.half_open()
    b.on_error()
    b.close()  # CLOSED -> CLOSED: a fresh window, no event
    assert b.metrics().calls == 0
    b.trip()
    clock.advance(20)
    b.trip()  # OPEN -> OPEN: the wait starts again
    clock.advance(20)
    assert not b.try_acquire_permission()
    assert [e.payload["to"] for e in events] == ["forced_open", "disabled", "metrics_only", "closed", "open"]


@pytest.mark.parametrize("field, value, message", [
    ("failure_rate_threshold", 0, "failure_rate_threshold must be a percentage in \\(0, 100\\]"),
    ("failure_rate_threshold", 100.5, "failure_rate_threshold"),
    ("failure_rate_threshold", float("nan"), "failure_rate_threshold"),
    ("slow_call_rate_threshold", -1, "slow_call_rate_threshold"),
    ("slow_call_rate_threshold", True, "slow_call_rate_threshold"),
    ("slow_call_duration_s", 0, "slow_call_duration_s must be a duration > 0"),
    ("wait_in_open_s", 0.0, "wait_in_open_s must be a duration > 0"),
    ("wait_in_open_s", "30", "wait_in_open_s"),
    ("severe_window_s", 0, "severe_window_s"),
    ("max_wait_in_half_open_s", -1, "max_wait_in_half_open_s must be >= 0"),
    ("window_size", 0, "window_size must be a whole number >= 1"),
    ("window_size", 2.5, "window_size"),
    ("minimum_calls", 0, "minimum_calls"),
    ("permitted_calls_in_half_open", 0, "permitted_calls_in_half_open"),
    ("severe_threshold", -1, "severe_threshold"),
    ("window_type", "sliding", "breaker config: 'sliding' is not a valid WindowType"),
    ("initial_state", "ajar", "breaker config"),
    ("failure_predicate", "harmful", "failure_predicate must be callable"),
])
def test_bad_config_is_one_clear_error(field, value, message):
    with pytest.raises(BadInput, match=message) as e:
        BreakerConfig(**{field: value})
    assert "\n" not in e.value.message
    assert BreakerConfig(failure_rate_threshold=100, slow_call_rate_threshold=0.1, max_wait_in_half_open_s=0,
                         window_type="time", initial_state="metrics_only").window_type is WindowType.TIME


# -- severe events (item 3 of issue 26) ----------------------------------------------------------
def severe_breaker(clock, **kw) -> tuple[CircuitBreaker, list]:
    return make(clock, **{"window_size": 1000, "minimum_calls": 1000, "severe_threshold": 3, "severe_window_s": 600,
                          "failure_predicate": HARMFUL, "wait_in_open_s": 60, "permitted_calls_in_half_open": 2,
                          "max_wait_in_half_open_s": 0, **kw})


def test_absolute_count_trip_for_severe_events(clock):
    b, _ = severe_breaker(clock)
    for _ in range(500):
        b.record(CallOutcome("ok"))
    b.record(CallOutcome("harmful", severe=True))
    clock.advance(700)  # the first severe event leaves the window
    b.record(CallOutcome("harmful", severe=True))
    b.record(CallOutcome("harmful", severe=True))
    assert b.state is State.CLOSED and b.severe_events() == 2
    b.record(CallOutcome("harmful", severe=False))  # not severe: does not count toward the trip
    assert b.state is State.CLOSED
    b.record(CallOutcome("harmful", severe=True))
    assert b.state is State.OPEN and b.severe_events() == 0  # the trip answered them
    assert "3 severe events" in b.transitions[-1].reason


def test_severe_events_expire_by_time_while_open_and_forced_open(clock):
    b, _ = severe_breaker(clock)
    b.trip()
    b.record_signal(severe=True)
    b.record_signal(severe=True)
    b.record_signal(severe=True)  # three while OPEN: counted, no transition from OPEN
    assert b.state is State.OPEN and b.severe_events() == 3
    clock.advance(601)  # ... and they expire while it waits
    assert b.severe_events() == 0
    assert b.try_acquire_permission() and b.try_acquire_permission()
    b.record(CallOutcome("ok"))
    b.record(CallOutcome("ok"))
    assert b.state is State.CLOSED
    b.force_open()
    for _ in range(3):
        b.record_signal(severe=True)
    clock.advance(601)
    b.half_open()
    b.record(CallOutcome("ok"))
    b.record(CallOutcome("ok"))
    assert b.state is State.CLOSED


def test_severe_events_seen_while_open_reopen_at_the_first_probe_once(clock):
    """Three severe reports still inside their window when probing starts: the first probe result
    opens it again (and forgets them), the next round of probes closes it."""
    b, _ = severe_breaker(clock)
    b.trip()
    for _ in range(3):
        b.record_signal(severe=True)
    clock.advance(61)
    assert b.try_acquire_permission()
    b.record(CallOutcome("ok"))
    assert b.state is State.OPEN and b.severe_events() == 0
    clock.advance(61)
    assert b.try_acquire_permission() and b.try_acquire_permission()
    b.record(CallOutcome("ok"))
    b.record(CallOutcome("ok"))
    assert b.state is State.CLOSED


def test_a_severe_trip_in_half_open_clears_them_so_clean_probes_close_it(clock):
    """Issue 26: a source breaker re-opened on every clean probe for 24 h."""
    b, _ = severe_breaker(clock, severe_window_s=24 * 3600, permitted_calls_in_half_open=5)
    for _ in range(3):
        b.record(CallOutcome("harmful", severe=True))
    assert b.state is State.OPEN
    clock.advance(61)
    for _ in range(3):  # three probes come back severely harmful: a severe trip in half-open
        assert b.try_acquire_permission()
        b.record(CallOutcome("harmful", severe=True))
    assert b.state is State.OPEN and "3 severe events" in b.transitions[-1].reason
    clock.advance(61)
    for _ in range(5):
        assert b.try_acquire_permission()
        b.record(CallOutcome("ok"))
    assert b.state is State.CLOSED


def test_a_manual_close_forgets_severe_events(clock):
    """Issue 26: after a forced open, three severe reports and a manual close, the first clean
    call reopened it."""
    b, _ = severe_breaker(clock, severe_window_s=48 * 3600)
    b.force_open()
    for _ in range(3):
        b.record_signal(severe=True)
    clock.advance(24 * 3600)
    assert b.severe_events() == 3
    b.close()
    assert b.severe_events() == 0
    b.record(CallOutcome("ok"))
    assert b.state is State.CLOSED
    b.trip()
    for _ in range(3):
        b.record_signal(severe=True)
    b.reset()
    b.record(CallOutcome("ok"))
    assert b.state is State.CLOSED and b.severe_events() == 0


def test_severe_events_in_metrics_only_never_trip_and_disabled_ignores_them(clock):
    b, _ = severe_breaker(clock)
    b.metrics_only()
    for _ in range(5):
        b.record_signal(severe=True)
    assert b.state is State.METRICS_ONLY and b.severe_events() == 3  # counted up to the threshold
    for _ in range(10_000):
        b.record_signal(severe=True)
    assert len(b._severe) == 3  # a flood of reports keeps only what the trip needs
    b.disable()
    for _ in range(5):
        b.record_signal(severe=True)
    assert b.state is State.DISABLED and b.severe_events() == 0


# -- safety signals (item 1) ---------------------------------------------------------------------
def test_a_signal_is_a_failure_whatever_the_predicate(clock):
    b, _ = make(clock, window_size=4, minimum_calls=4, failure_predicate=LABEL_STORE_FAILED)
    b.record(CallOutcome("harmful"))  # through the predicate: a label-store breaker calls it a success
    assert b.metrics().failed == 0
    for _ in range(3):
        b.record_signal()
    assert b.metrics() == (4, 3, 0) and b.state is State.OPEN


def test_a_signal_never_closes_a_breaker(clock):
    """Issue 26: five harm reports after a label-store outage closed the breaker. A signal in OPEN
    changes nothing; in HALF_OPEN it opens again, even where its rate alone is below threshold."""
    b, _ = tripped(clock, wait_in_open_s=10, permitted_calls_in_half_open=2, failure_rate_threshold=100)
    clock.advance(11)
    for _ in range(5):
        b.record_signal()
    assert b.state is State.OPEN and len(b.transitions) == 1
    assert b.try_acquire_permission() and b.state is State.HALF_OPEN
    b.on_success()
    b.record_signal(reason="harm report on item-7")  # 1 failure of 2 = 50% < 100%: still not a close
    assert b.state is State.OPEN
    assert b.transitions[-1].reason == "harm report on item-7 during half-open probes"
    b.force_open()
    b.record_signal()
    assert b.state is State.FORCED_OPEN


# -- permits (item 2) ----------------------------------------------------------------------------
def test_a_permit_goes_back_only_to_its_own_half_open_period(clock):
    b, _ = tripped(clock, wait_in_open_s=1, permitted_calls_in_half_open=2, max_wait_in_half_open_s=5)
    clock.advance(2)
    first = b._acquire()
    assert first > 0 and b.half_open_permits() == 1
    b._release(first)
    assert b.half_open_permits() == 2
    old = b._acquire()
    clock.advance(6)  # that half-open period times out; the next one starts
    clock.advance(2)
    new = b._acquire()
    assert new > old and b.half_open_permits() == 1
    b._release(old)  # a permit of the earlier period is not returned to this one
    assert b.half_open_permits() == 1
    b._release(new)
    b._release(new)  # and never above the configured number
    assert b.half_open_permits() == 2
    assert b._acquire() > 0 and b._acquire() > 0 and b._acquire() == -1


# -- 8-thread races ------------------------------------------------------------------------------
@pytest.fixture
def tight_switching():
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as CPython allows
    yield
    sys.setswitchinterval(before)


def run_threads(n: int, target) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def body(k: int) -> None:
        barrier.wait()
        try:
            target(k)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@pytest.mark.parametrize("window_type", [WindowType.COUNT, WindowType.TIME])
def test_eight_threads_lose_no_update(tight_switching, clock, window_type):
    per_thread = 5000
    b = CircuitBreaker("x", BreakerConfig(window_type=window_type, window_size=8 * per_thread, minimum_calls=1,
                                          initial_state=State.METRICS_ONLY), clock=clock)
    forced = CircuitBreaker("y", BreakerConfig(initial_state=State.FORCED_OPEN), clock=clock)

    def work(k: int) -> None:
        for i in range(per_thread):
            b.on_result(failed=(i + k) % 3 == 0, duration_s=0.1 if i % 5 == 0 else 0.0)
            forced.try_acquire_permission()

    run_threads(8, work)
    expected_failed = sum((i + k) % 3 == 0 for k in range(8) for i in range(per_thread))
    assert tuple(b.metrics()) == (8 * per_thread, expected_failed, 8 * per_thread // 5)
    assert forced.not_permitted == 8 * per_thread


def half_open_races(clock, races: int) -> int:
    """``races`` times: a breaker opens, waits, and 8 threads race for its probes, each holding its
    permit a moment, then recording or giving it back. Returns the most probes of one half-open
    period ever held at once, which must never exceed the configured 3."""
    registry = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2, wait_in_open_s=1,
                                                                    permitted_calls_in_half_open=3, failure_rate_threshold=50))},
                               clock=clock)
    b = registry.get("surface:x")
    lock = threading.Lock()
    held: dict[int, int] = {}
    most = 0

    def work(k: int) -> None:
        nonlocal most
        for i in range(40):
            permits = registry.acquire(("surface:x",))
            if permits.refused is not None or not permits.half_open:
                permits.release()
                continue
            token = permits.held[0][1]
            with lock:
                held[token] = held.get(token, 0) + 1
                most = max(most, held[token])
            time.sleep(0)  # hold the probe while the others race
            with lock:
                held[token] -= 1
            if (i + k) % 3 == 0:
                permits.release()
            else:
                permits.record(CallOutcome("label_store_error" if (i + k) % 2 else "ok"))

    for _ in range(races):
        b.reset()
        b.on_error()
        b.on_error()
        clock.advance(2)
        run_threads(8, work)
    return most


def test_eight_threads_never_hold_more_half_open_permits_than_configured(tight_switching, clock):
    assert half_open_races(clock, 150) <= 3


@pytest.mark.slow
def test_eight_threads_never_hold_more_half_open_permits_than_configured_long(tight_switching, clock):
    assert half_open_races(clock, 1500) <= 3


# -- the registry (item 6) -----------------------------------------------------------------------
def test_registry_scopes_and_bad_policies(clock):
    events: list = []
    reg = BreakerRegistry({"source": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2))}, clock=clock, listeners=[events.append])
    assert reg.get("surface:x") is None  # no policy for that scope kind
    a, b = reg.get("source:ugc"), reg.get("source:catalog")
    assert a is reg.get("source:ugc") and a is not b
    a.on_error()
    a.on_error()
    assert reg.states() == {"source:catalog": "closed", "source:ugc": "open"}
    assert events[-1].subject == "source:ugc"
    with pytest.raises(BadInput, match="max_breakers must be a whole number >= 1"):
        ScopePolicy(BreakerConfig(), max_breakers=0)
    with pytest.raises(BadInput, match="idle_evict_s"):
        ScopePolicy(BreakerConfig(), idle_evict_s=0)
    with pytest.raises(BadInput, match="must be a ScopePolicy"):
        BreakerRegistry({"source": BreakerConfig()})  # type: ignore[dict-item]


def capped(clock, cap: int = 4, **kw) -> BreakerRegistry:
    return BreakerRegistry({"model": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2, **kw), max_breakers=cap,
                                                  idle_evict_s=3600)}, clock=clock)


def test_the_least_recently_used_go_first_and_open_ones_stay(clock):
    reg = capped(clock)
    for k in range(4):
        reg.get(f"model:m{k}").try_acquire_permission()
        clock.advance(1)
    reg.get("model:m0").on_error()
    reg.get("model:m0").on_error()  # open: remembers something, never evicted
    clock.advance(1)
    reg.get("model:m1").try_acquire_permission()  # m1 used again: m2 is now the least recent
    clock.advance(1)
    reg.get("model:new")
    assert set(reg.states()) == {"model:m0", "model:m1", "model:m3", "model:new"}
    assert reg.evictions[("model", "lru")] == 1
    assert reg.states()["model:m0"] == "open"


def test_a_full_kind_with_nothing_to_forget_fails_closed(clock):
    reg = capped(clock, cap=2)
    for k in range(2):
        reg.get(f"model:m{k}").force_open()
    extra = reg.get("model:flood")
    assert extra.state is State.FORCED_OPEN and not extra.try_acquire_permission()
    assert "model:flood" not in reg.states() and reg.overflows["model"] == 1
    permits = reg.acquire(("model:another",))
    assert permits.refused == "model:another" and permits.refused_state is State.FORCED_OPEN


def test_idle_breakers_are_forgotten_and_a_flood_stays_bounded(clock):
    reg = capped(clock, cap=100)
    reg.get("model:kept").trip()
    sev = BreakerRegistry({"source": ScopePolicy(BreakerConfig(severe_threshold=3, severe_window_s=5000), idle_evict_s=60)},
                          clock=clock)
    sev.get("source:s").record_signal(severe=True)  # a severe event in its window: remembered
    sev.get("source:t")
    for k in range(20_000):
        reg.get(f"model:m{k}").try_acquire_permission()
    assert len(reg.states()) <= 100 and "model:kept" in reg.states()
    assert reg.evictions[("model", "lru")] >= 20_000 - 100
    clock.advance(3601)
    left = len(reg.states())
    assert reg.sweep() == left - 1 and list(reg.states()) == ["model:kept"]
    clock.advance(61)  # 3,662 s after the severe event, inside its 5,000 s window
    assert sev.sweep() == 1 and list(sev.states()) == ["source:s"]
    clock.advance(2000)
    assert sev.sweep() == 1


def test_states_pages(clock):
    reg = BreakerRegistry({"source": ScopePolicy(BreakerConfig()), "model": ScopePolicy(BreakerConfig())}, clock=clock)
    names = [f"source:s{k:03d}" for k in range(250)]
    for n in names:
        reg.get(n)
    reg.get("model:m")
    seen, after = [], None
    while True:
        page = reg.page(kind="source", after=after, limit=100)
        assert page["total"] == 250 and len(page["breakers"]) <= 100
        seen += list(page["breakers"])
        after = page["next"]
        if after is None:
            break
    assert seen == names
    assert reg.states(limit=2) == {"model:m": "closed", "source:s000": "closed"}
    assert reg.states(after="source:s248") == {"source:s249": "closed"}
    with pytest.raises(BadInput, match="limit"):
        reg.page(limit=0)


def test_prometheus_metrics_count_breakers_evictions_and_overflows(clock):
    reg = capped(clock, cap=2)
    reg.get("model:a").force_open()
    reg.get("model:b")
    reg.get("model:c")  # evicts b
    reg.get("model:c").force_open()
    reg.get("model:d")  # nothing to evict: overflow
    prom = CollectorRegistry()
    reg.register_metrics(prom)
    text = generate_latest(prom).decode()
    assert 'assay_breakers{kind="model",state="forced_open"} 2.0' in text
    assert 'assay_breakers{kind="model",state="closed"} 0.0' in text
    assert 'assay_breaker_evictions_total{kind="model",reason="lru"} 1.0' in text
    assert 'assay_breaker_overflows_total{kind="model"} 1.0' in text


def test_configure_replaces_the_breaker_and_keeps_the_kinds_bound(clock):
    reg = capped(clock, cap=3)
    reg.get("model:a").trip()
    reg.configure("model:a", BreakerConfig(window_size=5, minimum_calls=5))
    assert reg.get("model:a").state is State.CLOSED and reg.get("model:a").config.window_size == 5
    for k in range(10):
        reg.get(f"model:x{k}")
    assert len(reg.states(kind="model")) == 3
