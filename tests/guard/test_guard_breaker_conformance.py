"""assay's breakers against a reference model of resilience4j written from its documentation
(tests/guard/breaker_reference.py): resilience4j's own state-machine unit tests replayed on both,
thousands of random event sequences on an injected clock requiring the same state, permits,
metrics and transition times at every step, and one test for each difference docs/guard.md
lists as kept on purpose."""

from __future__ import annotations

import random

import pytest
from breaker_reference import Config, IllegalStateTransition, Model
from guard_helpers import ManualClock

from assay.guard.breakers import (
    BreakerConfig,
    CircuitBreaker,
    IllegalTransition,
    State,
)

MANUAL = {"open": "trip", "forced_open": "force_open", "disabled": "disable", "metrics_only": "metrics_only",
          "closed": "close", "half_open": "half_open"}


class Pair:
    """The same events applied to the model and to an assay breaker, compared after each one."""

    def __init__(self, cfg: Config, *, release_cap: bool = True):
        self.clock = ManualClock(1000.0)
        self.model = Model(cfg, self.clock(), release_cap=release_cap)
        self.events: list = []
        self.breaker = CircuitBreaker("r4j", BreakerConfig(
            failure_rate_threshold=cfg.failure_rate, slow_call_rate_threshold=cfg.slow_rate, slow_call_duration_s=cfg.slow_s,
            window_type=cfg.window, window_size=cfg.size, minimum_calls=cfg.min_calls, wait_in_open_s=cfg.wait_s,
            permitted_calls_in_half_open=cfg.permitted, max_wait_in_half_open_s=cfg.max_half_open_s,
            initial_state=State(cfg.initial)), clock=self.clock, wall_clock=self.clock, listeners=[self.events.append])
        self.trail: list[str] = []

    def advance(self, dt: float) -> None:
        self.trail.append(f"advance({dt})")
        self.clock.advance(dt)
        self.model.advance(dt)
        self.check()

    def acquire(self) -> bool:
        self.trail.append("acquire")
        got, want = self.breaker.try_acquire_permission(), self.model.acquire()
        assert got == want, self.why(f"acquire: assay {got}, model {want}")
        self.check()
        return got

    def release(self) -> None:
        self.trail.append("release")
        self.breaker.release_permission()
        self.model.release()
        self.check()

    def result(self, failed: bool, duration: float = 0.0) -> None:
        self.trail.append(f"{'error' if failed else 'success'}({duration})")
        self.breaker.on_result(failed=failed, duration_s=duration)
        self.model.result(failed, duration)
        self.check()

    def manual(self, to: str) -> None:
        self.trail.append(f"manual({to})")
        try:
            self.model.manual(to)
            expected = None
        except IllegalStateTransition:
            expected = IllegalTransition
        if expected:
            with pytest.raises(expected):
                getattr(self.breaker, MANUAL[to])()
        else:
            getattr(self.breaker, MANUAL[to])()
        self.check()

    def reset(self) -> None:
        self.trail.append("reset")
        self.breaker.reset()
        self.model.reset()
        self.check()

    def why(self, what: str) -> str:
        return f"{what}\n  config {self.model.cfg}\n  events {self.trail[-40:]}"

    def check(self) -> None:
        b, m = self.breaker, self.model
        assert b.state.value == m.state, self.why(f"state: assay {b.state.value}, model {m.state}")
        assert b.since == m.entered, self.why(f"entered at: assay {b.since}, model {m.entered}")
        assert b.half_open_permits() == m.half_open_permits(), self.why(
            f"permits: assay {b.half_open_permits()}, model {m.half_open_permits()}")
        assert tuple(b.metrics()) == m.counts(), self.why(f"metrics: assay {tuple(b.metrics())}, model {m.counts()}")

    def transitions(self) -> list[tuple[str, str, float]]:
        """What assay records once every pending change is applied (an acquire would apply it)."""
        return [(t.frm.value, t.to.value, t.at) for t in self.breaker.transitions]


# -- resilience4j's CircuitBreakerStateMachineTest, scenario by scenario --------------------------
def r4j_setup() -> Pair:
    """The state-machine test's set-up: 50% failures, 4 half-open calls, slow above 4 s at 50%,
    1 s maximum wait in half-open, a 20 s time window with at least 5 calls, 5 s open."""
    return Pair(Config(failure_rate=50, slow_rate=50, slow_s=4, window="time", size=20, min_calls=5, wait_s=5,
                       permitted=4, max_half_open_s=1))


def test_r4j_not_permitted_while_open_or_forced_open():
    for to in ("open", "forced_open"):
        p = r4j_setup()
        p.manual(to)
        assert not p.acquire()
        assert p.breaker.not_permitted == 1


def test_r4j_release_permission_and_only_four_calls_in_half_open():
    p = r4j_setup()
    p.manual("open")
    p.manual("half_open")
    assert [p.acquire() for _ in range(6)] == [True] * 4 + [False] * 2
    p.release()
    assert p.acquire()
    p.manual("open")
    p.manual("half_open")
    assert [p.acquire() for _ in range(6)] == [True] * 4 + [False] * 2


def test_r4j_open_after_failure_rate_threshold_in_a_time_window():
    p = r4j_setup()
    for failed in (False, False, False, True, True):
        p.result(failed)
        p.advance(1)
    assert p.breaker.state is State.CLOSED  # 2 of 5: 40%
    p.result(True)
    assert p.breaker.state is State.OPEN  # 3 of 6: 50%


def test_r4j_open_after_failure_rate_threshold():
    p = r4j_setup()
    for failed in (True, True, True, False):
        assert p.acquire()
        p.result(failed)
        assert p.breaker.state is State.CLOSED
    p.result(False)
    assert p.breaker.state is State.OPEN
    assert tuple(p.breaker.metrics()) == (5, 3, 0) and p.breaker.metrics().failure_rate == 60.0
    assert not p.acquire() and p.breaker.not_permitted == 1


def test_r4j_open_after_slow_call_rate_threshold():
    p = r4j_setup()
    for failed, duration in ((True, 5), (False, 5), (True, 0.1), (False, 0.1)):
        assert p.acquire()
        p.result(failed, duration)
    assert p.breaker.state is State.CLOSED
    p.result(False, 5)
    assert p.breaker.state is State.OPEN and p.breaker.metrics().slow == 3 and p.breaker.metrics().slow_call_rate == 60.0


def test_r4j_half_open_after_the_wait():
    p = r4j_setup()
    p.manual("open")
    assert not p.acquire()
    p.advance(3)
    assert p.breaker.state is State.OPEN and not p.acquire()
    p.advance(3)
    assert p.acquire() and p.breaker.state is State.HALF_OPEN
    assert tuple(p.breaker.metrics()) == (0, 0, 0)


@pytest.mark.parametrize("outcomes, state, counts", [
    ([(True, 0), (True, 0), (False, 0), (True, 0)], State.OPEN, (4, 3, 0)),  # 75% failures
    ([(False, 5), (False, 5), (False, 5), (False, 1)], State.OPEN, (4, 0, 3)),  # 75% slow
    ([(True, 0), (False, 0), (False, 0), (False, 0)], State.CLOSED, (0, 0, 0)),  # 25%: closed, fresh metrics
])
def test_r4j_half_open_decides(outcomes, state, counts):
    p = r4j_setup()
    p.manual("open")
    p.manual("half_open")
    for failed, duration in outcomes:
        assert p.acquire()
        p.result(failed, duration)
    assert p.breaker.state is state and tuple(p.breaker.metrics()) == counts
    if state is State.CLOSED:
        assert p.acquire()
        p.result(False)
        assert tuple(p.breaker.metrics()) == (1, 0, 0)


def test_r4j_reset_metrics_and_states():
    p = r4j_setup()
    p.result(False)
    p.result(True)
    assert tuple(p.breaker.metrics()) == (2, 1, 0)
    p.reset()
    assert tuple(p.breaker.metrics()) == (0, 0, 0)
    p.manual("open")
    p.reset()
    assert p.breaker.state is State.CLOSED


def test_r4j_disabled_records_nothing():
    p = r4j_setup()
    p.manual("disabled")
    for failed in (False, True, True, True, True):
        assert p.acquire()
        p.result(failed)
    assert tuple(p.breaker.metrics()) == (0, 0, 0) and p.breaker.state is State.DISABLED


def test_r4j_forced_open_ignores_the_wait():
    p = r4j_setup()
    p.manual("forced_open")
    assert not p.acquire()
    p.advance(6)
    assert not p.acquire() and p.breaker.state is State.FORCED_OPEN
    assert p.breaker.not_permitted == 2


def test_r4j_released_permits_and_then_closed():
    """The ignored-exception tests: a released permit is not a result."""
    p = r4j_setup()
    p.manual("open")
    p.manual("half_open")
    for _ in range(3):
        assert p.acquire()
        p.result(False)
    assert p.acquire()
    p.release()
    assert p.breaker.state is State.HALF_OPEN and tuple(p.breaker.metrics()) == (3, 0, 0)
    assert p.acquire()
    p.result(True)  # 1 of 4 failed
    assert p.breaker.state is State.CLOSED
    p = r4j_setup()
    p.manual("open")
    p.manual("half_open")
    for _ in range(4):
        assert p.acquire()
        p.release()
    for k in range(4):
        assert p.acquire()
        p.result(False)
        assert p.breaker.state is (State.CLOSED if k == 3 else State.HALF_OPEN)


def test_r4j_illegal_transitions_and_metrics_only():
    p = r4j_setup()
    p.manual("half_open")  # CLOSED -> HALF_OPEN is refused, the state stays
    assert p.breaker.state is State.CLOSED
    p.result(False)
    p.result(False)
    p.manual("metrics_only")
    assert tuple(p.breaker.metrics()) == (0, 0, 0)
    for failed in (True, True, True, False, False, True):
        assert p.acquire()
        p.result(failed)
    assert p.breaker.state is State.METRICS_ONLY and tuple(p.breaker.metrics()) == (6, 4, 0)
    p.manual("open")  # refused from METRICS_ONLY
    p.manual("half_open")
    assert p.breaker.state is State.METRICS_ONLY


def test_r4j_internal_transitions_publish_no_event():
    p = r4j_setup()
    for to in ("open", "open", "half_open", "half_open", "disabled", "disabled", "metrics_only", "metrics_only",
               "closed", "closed"):
        p.manual(to)
    assert [e.payload["to"] for e in p.events] == ["open", "half_open", "disabled", "metrics_only", "closed"]


def test_r4j_half_open_times_out_to_open():
    p = r4j_setup()
    p.manual("open")
    p.manual("half_open")
    p.advance(2)
    assert p.breaker.state is State.OPEN


@pytest.mark.parametrize("initial", ["closed", "open", "metrics_only"])
def test_r4j_initial_state(initial):
    p = Pair(Config(window="time", size=1, permitted=4, wait_s=2, initial=initial))
    assert p.breaker.state.value == initial
    p.manual("open" if initial == "closed" else "half_open")


# -- thousands of random sequences ----------------------------------------------------------------
def random_config(rng: random.Random) -> Config:
    return Config(
        failure_rate=rng.choice([10, 25, 33.5, 50, 60, 75, 100]), slow_rate=rng.choice([20, 50, 66.5, 100]),
        slow_s=rng.choice([0.5, 1.0, 2.0]), window=rng.choice(["count", "time"]), size=rng.randint(1, 12),
        min_calls=rng.randint(1, 12), wait_s=rng.choice([0.25, 1.0, 2.5, 5.0, 10.0]), permitted=rng.randint(1, 5),
        max_half_open_s=rng.choice([0.0, 0.5, 1.0, 3.0, 7.5]),
        initial=rng.choices(["closed", "open", "half_open", "metrics_only", "disabled", "forced_open"],
                            [12, 2, 2, 1, 1, 1])[0])


def drive(p: Pair, rng: random.Random, steps: int) -> None:
    cfg = p.model.cfg
    # clock steps are multiples of 1/8 s, exact in binary, and include the waits themselves so the
    # boundaries (exactly at the end of a wait, exactly at a whole second) are met often
    deltas = [0.0, 0.125, 0.25, 0.5, 1.0, 2.0, cfg.wait_s, cfg.max_half_open_s or 0.375, cfg.slow_s, 3.875]
    durations = [0.0, 0.125, cfg.slow_s, cfg.slow_s + 0.125, cfg.slow_s * 2]
    for _ in range(steps):
        op = rng.choices(["advance", "acquire", "success", "error", "release", "read", "manual", "reset"],
                         [10, 14, 10, 10, 3, 3, 1.5, 0.3])[0]
        if op == "advance":
            p.advance(rng.choice(deltas))
        elif op == "acquire":
            p.acquire()
        elif op in ("success", "error"):
            p.result(op == "error", rng.choice(durations))
        elif op == "release":
            p.release()
        elif op == "read":
            p.check()  # reading state, permits and metrics changes nothing: the next step still agrees
        elif op == "manual":
            p.manual(rng.choice(list(MANUAL)))
        else:
            p.reset()
    p.acquire()  # applies anything pending, then the whole history must agree
    assert p.transitions() == p.model.log[-256:], p.why("transitions differ")


@pytest.mark.parametrize("seed", range(4))
def test_random_sequences_agree_with_the_model(seed):
    """3,000 random sequences of 120 events (4 x 750), each with its own random configuration."""
    rng = random.Random(seed)
    for _ in range(750):
        p = Pair(random_config(rng))
        drive(p, rng, 120)


@pytest.mark.slow
def test_random_sequences_agree_with_the_model_long():
    rng = random.Random(20_261)
    for _ in range(20_000):
        p = Pair(random_config(rng))
        drive(p, rng, 400)


def test_reading_state_never_changes_it(clock):
    """The same events with and without reads in between give the same transitions at the same
    times; an OPEN breaker past its wait still reads OPEN until a call asks."""
    def run(read: bool) -> list:
        c = ManualClock()
        b = CircuitBreaker("x", BreakerConfig(window_size=2, minimum_calls=2, wait_in_open_s=5, permitted_calls_in_half_open=1,
                                              max_wait_in_half_open_s=3), clock=c, wall_clock=c)
        script = ["error", "error", 6, "acquire", 4, "acquire", 6, 0, "acquire", "success"]
        for step in script:
            if read:
                for _ in range(3):
                    (b.state, b.metrics(), b.half_open_permits(), b.since, b.severe_events())
            if isinstance(step, int | float):
                c.advance(step)
            elif step == "acquire":
                b.try_acquire_permission()
            else:
                b.on_result(failed=step == "error")
        return list(b.transitions)

    assert run(True) == run(False)
    b = CircuitBreaker("x", BreakerConfig(window_size=1, minimum_calls=1, wait_in_open_s=5), clock=clock, wall_clock=clock)
    b.on_error()
    clock.advance(100)
    assert [b.state for _ in range(5)] == [State.OPEN] * 5 and len(b.transitions) == 1
    assert b.try_acquire_permission() and b.state is State.HALF_OPEN


# -- the differences kept on purpose, each with its test (docs/guard.md lists them) --------------
def test_difference_a_released_permit_never_exceeds_the_configured_number():
    """resilience4j adds a permit on every release; assay stops at the configured number."""
    cfg = Config(window="count", size=4, min_calls=4, permitted=2, initial="half_open", max_half_open_s=0)
    ours = Pair(cfg)
    r4j = Model(cfg, 1000.0, release_cap=False)
    for _ in range(3):
        ours.release()
        r4j.release()
    assert ours.breaker.half_open_permits() == 2 and r4j.half_open_permits() == 5


def test_difference_a_half_open_timeout_is_applied_by_the_next_call_with_its_own_time(clock):
    """resilience4j's scheduler thread moves HALF_OPEN to OPEN when the maximum wait runs out;
    assay applies it at the next call with the time it ran out: the state (read) and the
    transition time agree, but the event is emitted when it is applied."""
    events: list = []
    b = CircuitBreaker("x", BreakerConfig(initial_state=State.HALF_OPEN, max_wait_in_half_open_s=2, wait_in_open_s=5),
                       clock=clock, wall_clock=clock, listeners=[events.append])
    start = clock()
    clock.advance(10)
    assert b.state is State.OPEN and b.since == start + 2 and events == []
    assert b.try_acquire_permission()  # 10 s after the start = 8 s into the open wait of 5 s
    assert [(e.payload["to"], e.ts) for e in events] == [("open", start + 2), ("half_open", start + 10)]


def test_difference_rates_are_exact_in_double_precision(clock):
    """resilience4j keeps thresholds and rates as 32-bit floats; assay in double precision. At a
    threshold of 33.3333335 %, 1 failure in 3 calls (33.33333...%) is below it, and assay stays
    closed; in float32 both round to 33.333332 and resilience4j would open."""
    import numpy as np

    threshold = 33.3333335
    assert np.float32(100) / np.float32(3) >= np.float32(threshold)  # what resilience4j compares
    b = CircuitBreaker("x", BreakerConfig(failure_rate_threshold=threshold, window_size=3, minimum_calls=3), clock=clock)
    for failed in (False, False, True):
        b.on_result(failed=failed)
    assert b.state is State.CLOSED
    b.on_result(failed=True)  # 2 of the last 3
    assert b.state is State.OPEN


def test_difference_not_permitted_counts_over_the_breakers_life(clock):
    """resilience4j counts refused calls in each state's metrics (reset with the state); assay
    keeps one count over the breaker's life."""
    b = CircuitBreaker("x", BreakerConfig(window_size=1, minimum_calls=1, wait_in_open_s=1, permitted_calls_in_half_open=1),
                       clock=clock)
    b.trip()
    assert not b.try_acquire_permission()
    clock.advance(2)
    assert b.try_acquire_permission() and not b.try_acquire_permission()
    assert b.not_permitted == 2  # one refused in OPEN, one in HALF_OPEN


def test_difference_open_after_a_forced_open_or_disabled_records_nothing(clock):
    """resilience4j's OPEN takes the metrics of the state before it; those of FORCED_OPEN and
    DISABLED have no room (a result would fail there); assay's record nothing."""
    for before in ("force_open", "disable"):
        b = CircuitBreaker("x", BreakerConfig(), clock=clock)
        getattr(b, before)()
        b.trip()
        b.on_error()
        assert b.state is State.OPEN and tuple(b.metrics()) == (0, 0, 0)


def test_difference_defaults():
    """assay's defaults are for a serving path (milliseconds, not a remote call's seconds)."""
    c = BreakerConfig()
    assert (c.slow_call_duration_s, c.minimum_calls, c.wait_in_open_s, c.permitted_calls_in_half_open,
            c.max_wait_in_half_open_s) == (0.05, 20, 30.0, 5, 60.0)
    r4j = Config()
    assert (r4j.slow_s, r4j.min_calls, r4j.wait_s, r4j.permitted, r4j.max_half_open_s) == (60.0, 100, 60.0, 10, 0.0)
