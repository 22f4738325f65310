"""Circuit breakers with resilience4j semantics, for the guard's serving path.

Why hand-written: the Python circuit-breaker libraries (pybreaker, circuitbreaker, aiobreaker)
implement only consecutive-failure counting; none has resilience4j's sliding windows (count- and
time-based), minimum number of calls, slow-call rate, permitted calls and maximum wait in
half-open, or the DISABLED / FORCED_OPEN / METRICS_ONLY states. Those are what make a breaker
safe to put in front of a labeler or a candidate source, so they are implemented here, following
the resilience4j documentation (https://resilience4j.readme.io/docs/circuitbreaker):

- CLOSED: calls are permitted and recorded in a sliding window. Once at least ``minimum_calls``
  are in the window, a failure rate or slow-call rate at or above its threshold opens the breaker.
- OPEN: calls are rejected. After ``wait_in_open_s`` the next permission check moves it to
  HALF_OPEN (resilience4j's default, lazy transition).
- HALF_OPEN: up to ``permitted_calls_in_half_open`` probe calls are permitted; when they have all
  been recorded, the rates over those probes decide OPEN or CLOSED. If the probes do not complete
  within ``max_wait_in_half_open_s`` the breaker opens again, so it can never stick in half-open.
- DISABLED: always permits, records nothing. FORCED_OPEN: always rejects (the kill switch).
  METRICS_ONLY: always permits, records metrics and emits events, never transitions.

On top, an absolute-count trip for rare severe harms: ``severe_threshold`` severe events within
``severe_window_s`` open the breaker whatever the rates are (one child-safety incident must not be
averaged away by a million good calls).

What counts as a failure is a predicate over call outcomes (:data:`LABEL_STORE_FAILED`,
:func:`drop_rate_above`, :data:`HARMFUL`). Breakers are named by scope (``surface:for_you``,
``source:trending``, ``model:ranker-v7``) in a :class:`BreakerRegistry`. Every state transition
is emitted as an :class:`assay.records.Event` of kind ``breaker_transition``. Time comes from an
injectable clock so tests are deterministic.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from assay.errors import BadInput
from assay.records import Event


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"
    METRICS_ONLY = "metrics_only"


class WindowType(StrEnum):
    COUNT = "count"
    TIME = "time"


class CallOutcome(NamedTuple):
    """One observation the breaker judges with its failure predicate (a named tuple: immutable,
    and built several times per request, where a frozen dataclass costs several times as much).

    ``kind`` is what happened: ``ok``, ``label_store_error``, ``label_store_timeout``, ``harmful``
    (a served candidate later found harmful), ``drop_rate`` (a batch's drop rate, in ``value``).
    """

    kind: str = "ok"
    duration_s: float = 0.0
    value: float = 0.0
    severe: bool = False
    detail: str = ""


Predicate = Callable[[CallOutcome], bool]


def _label_store_failed(o: CallOutcome) -> bool:
    return o.kind in ("label_store_error", "label_store_timeout")


def _harmful(o: CallOutcome) -> bool:
    return o.kind == "harmful"


LABEL_STORE_FAILED: Predicate = _label_store_failed
HARMFUL: Predicate = _harmful


def drop_rate_above(threshold: float) -> Predicate:
    """A batch whose drop rate exceeds ``threshold`` counts as a failure (a rule's drop surge)."""

    def predicate(o: CallOutcome) -> bool:
        return o.kind == "drop_rate" and o.value > threshold

    predicate.__name__ = f"drop_rate_above_{threshold}"
    return predicate


def any_of(*predicates: Predicate) -> Predicate:
    def predicate(o: CallOutcome) -> bool:
        return any(p(o) for p in predicates)

    return predicate


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate_threshold: float = 50.0  # percent
    slow_call_rate_threshold: float = 100.0  # percent
    slow_call_duration_s: float = 0.05
    window_type: WindowType = WindowType.COUNT
    window_size: int = 100  # calls (COUNT) or seconds (TIME)
    minimum_calls: int = 20
    wait_in_open_s: float = 30.0
    permitted_calls_in_half_open: int = 5
    max_wait_in_half_open_s: float = 60.0  # 0 = wait forever (resilience4j default; not ours)
    severe_threshold: int = 0  # 0 = no absolute-count trip
    severe_window_s: float = 3600.0
    failure_predicate: Predicate = LABEL_STORE_FAILED
    initial_state: State = State.CLOSED

    def __post_init__(self) -> None:
        if not 0 < self.failure_rate_threshold <= 100:
            raise BadInput(f"failure_rate_threshold must be in (0, 100], got {self.failure_rate_threshold}")
        if not 0 < self.slow_call_rate_threshold <= 100:
            raise BadInput(f"slow_call_rate_threshold must be in (0, 100], got {self.slow_call_rate_threshold}")
        if self.window_size < 1 or self.minimum_calls < 1 or self.permitted_calls_in_half_open < 1:
            raise BadInput("window_size, minimum_calls and permitted_calls_in_half_open must be >= 1")
        if self.wait_in_open_s < 0 or self.max_wait_in_half_open_s < 0 or self.severe_threshold < 0:
            raise BadInput("waits and severe_threshold must be >= 0")


class Snapshot(NamedTuple):
    """Metrics over the current window (what the trip decision saw). A named tuple: one is made
    for every recorded call, and a frozen dataclass costs several times as much to build."""

    calls: int
    failed: int
    slow: int

    @property
    def failure_rate(self) -> float:
        return 100.0 * self.failed / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return 100.0 * self.slow / self.calls if self.calls else 0.0


class _CountWindow:
    """The last ``size`` calls, as a ring buffer with running totals (O(1) per call)."""

    def __init__(self, size: int):
        self.size = size
        self.buf: deque[tuple[bool, bool]] = deque()
        self.failed = 0
        self.slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> Snapshot:
        if len(self.buf) == self.size:
            f, s = self.buf.popleft()
            self.failed -= f
            self.slow -= s
        self.buf.append((failed, slow))
        self.failed += failed
        self.slow += slow
        return self.snapshot(now)

    def snapshot(self, now: float) -> Snapshot:
        return Snapshot(len(self.buf), self.failed, self.slow)


class _TimeWindow:
    """Calls of the last ``size`` seconds, aggregated per epoch second (as resilience4j does)."""

    def __init__(self, size: int):
        self.size = size
        self.buckets: deque[list[float]] = deque()  # [second, calls, failed, slow]
        self.calls = self.failed = self.slow = 0

    def _evict(self, now: float) -> None:
        horizon = int(now) - self.size
        while self.buckets and self.buckets[0][0] <= horizon:
            _, c, f, s = self.buckets.popleft()
            self.calls -= int(c)
            self.failed -= int(f)
            self.slow -= int(s)

    def record(self, failed: bool, slow: bool, now: float) -> Snapshot:
        self._evict(now)
        sec = int(now)
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0, 0, 0])
        b = self.buckets[-1]
        b[1] += 1
        b[2] += failed
        b[3] += slow
        self.calls += 1
        self.failed += failed
        self.slow += slow
        return Snapshot(self.calls, self.failed, self.slow)

    def snapshot(self, now: float) -> Snapshot:
        self._evict(now)
        return Snapshot(self.calls, self.failed, self.slow)


Listener = Callable[[Event], None]


class CircuitBreaker:
    """One breaker. Thread-safe; every method takes the current time from ``clock``."""

    def __init__(self, name: str, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, listeners: list[Listener] | None = None):
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._listeners: list[Listener] = list(listeners or [])
        self._state = self.config.initial_state
        self._since = clock()
        self._window = self._new_window()
        # calls in the window before the rates can open it (config is frozen: computed once)
        self._need = min(self.config.minimum_calls, self.config.window_size) if self.config.window_type is WindowType.COUNT \
            else self.config.minimum_calls
        self._half_open_window: _CountWindow | None = None
        self._half_open_permits = 0
        self._severe: deque[float] = deque()
        self.not_permitted = 0
        self.transitions: list[tuple[State, State, str]] = []

    def _new_window(self) -> _CountWindow | _TimeWindow:
        if self.config.window_type is WindowType.COUNT:
            return _CountWindow(self.config.window_size)
        return _TimeWindow(self.config.window_size)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        with self._lock:
            self._advance_time()
            return self._state

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _advance_time(self) -> None:
        now = self._clock()
        if self._state is State.OPEN and now - self._since >= self.config.wait_in_open_s:
            self._transition(State.HALF_OPEN, f"waited {self.config.wait_in_open_s}s in open")
        elif (self._state is State.HALF_OPEN and self.config.max_wait_in_half_open_s > 0
              and now - self._since >= self.config.max_wait_in_half_open_s):
            self._transition(State.OPEN, f"probes did not complete within {self.config.max_wait_in_half_open_s}s in half-open")

    def _transition(self, to: State, reason: str, snapshot: Snapshot | None = None) -> None:
        frm = self._state
        if frm is to:
            return
        self._state = to
        self._since = self._clock()
        if to is State.HALF_OPEN:
            self._half_open_window = _CountWindow(self.config.permitted_calls_in_half_open)
            self._half_open_permits = self.config.permitted_calls_in_half_open
        else:
            self._half_open_window = None
            self._half_open_permits = 0
        if to in (State.CLOSED, State.METRICS_ONLY, State.DISABLED):
            self._window = self._new_window()
        self.transitions.append((frm, to, reason))
        payload: dict[str, Any] = {"from": frm.value, "to": to.value, "reason": reason}
        if snapshot is not None:
            payload.update(calls=snapshot.calls, failed=snapshot.failed, slow=snapshot.slow,
                           failure_rate=round(snapshot.failure_rate, 3), slow_call_rate=round(snapshot.slow_call_rate, 3))
        event = Event(kind="breaker_transition", ts=self._wall(), subject=self.name, payload=payload)
        for listener in self._listeners:
            with contextlib.suppress(Exception):  # a broken listener must not break serving
                listener(event)

    # -- calls ---------------------------------------------------------------------------------
    def try_acquire_permission(self) -> bool:
        """May a call go through now? In half-open this consumes one probe permit."""
        with self._lock:
            self._advance_time()
            st = self._state
            if st in (State.CLOSED, State.DISABLED, State.METRICS_ONLY):
                return True
            if st is State.HALF_OPEN and self._half_open_permits > 0:
                self._half_open_permits -= 1
                return True
            self.not_permitted += 1
            return False

    def record(self, outcome: CallOutcome) -> None:
        """Judge ``outcome`` with the failure predicate and record it."""
        failed = bool(self.config.failure_predicate(outcome))
        self.on_result(failed=failed, duration_s=outcome.duration_s, severe=outcome.severe and failed)

    def on_success(self, duration_s: float = 0.0) -> None:
        self.on_result(failed=False, duration_s=duration_s)

    def on_error(self, duration_s: float = 0.0, *, severe: bool = False) -> None:
        self.on_result(failed=True, duration_s=duration_s, severe=severe)

    def on_result(self, *, failed: bool, duration_s: float = 0.0, severe: bool = False) -> None:
        with self._lock:
            self._advance_time()
            st = self._state
            if st is State.DISABLED:
                return
            now = self._clock()
            slow = duration_s >= self.config.slow_call_duration_s
            if severe and self.config.severe_threshold:
                self._severe.append(now)
                while self._severe and self._severe[0] <= now - self.config.severe_window_s:
                    self._severe.popleft()
            if st is State.HALF_OPEN:
                assert self._half_open_window is not None
                snap = self._half_open_window.record(failed, slow, now)
                if self._severe_tripped():
                    self._transition(State.OPEN, f"{len(self._severe)} severe events within {self.config.severe_window_s}s", snap)
                elif snap.calls >= self.config.permitted_calls_in_half_open:
                    if self._over_threshold(snap):
                        self._transition(State.OPEN, self._why(snap) + " in half-open probes", snap)
                    else:
                        self._transition(State.CLOSED, f"{snap.calls} half-open probes below thresholds", snap)
                return
            if st in (State.OPEN, State.FORCED_OPEN):
                return  # late results of calls permitted before the trip
            snap = self._window.record(failed, slow, now)
            if st is State.METRICS_ONLY:
                return
            if self._severe_tripped():
                self._severe.clear()
                self._transition(State.OPEN, f"{self.config.severe_threshold} severe events within {self.config.severe_window_s}s", snap)
                return
            if snap.calls >= self._need and self._over_threshold(snap):
                self._transition(State.OPEN, self._why(snap), snap)

    def _severe_tripped(self) -> bool:
        return bool(self.config.severe_threshold) and len(self._severe) >= self.config.severe_threshold

    def _over_threshold(self, snap: Snapshot) -> bool:
        return (snap.failure_rate >= self.config.failure_rate_threshold
                or snap.slow_call_rate >= self.config.slow_call_rate_threshold)

    def _why(self, snap: Snapshot) -> str:
        if snap.failure_rate >= self.config.failure_rate_threshold:
            return f"failure rate {snap.failure_rate:.1f}% >= {self.config.failure_rate_threshold}% over {snap.calls} calls"
        return f"slow-call rate {snap.slow_call_rate:.1f}% >= {self.config.slow_call_rate_threshold}% over {snap.calls} calls"

    def metrics(self) -> Snapshot:
        with self._lock:
            if self._state is State.HALF_OPEN and self._half_open_window is not None:
                return self._half_open_window.snapshot(self._clock())
            return self._window.snapshot(self._clock())

    # -- manual transitions (operators, mitigations) --------------------------------------------
    def force_open(self, reason: str = "forced open (kill switch)") -> None:
        with self._lock:
            self._transition(State.FORCED_OPEN, reason)

    def disable(self, reason: str = "disabled") -> None:
        with self._lock:
            self._transition(State.DISABLED, reason)

    def metrics_only(self, reason: str = "metrics only") -> None:
        with self._lock:
            self._transition(State.METRICS_ONLY, reason)

    def close(self, reason: str = "closed by operator") -> None:
        with self._lock:
            self._transition(State.CLOSED, reason)

    def trip(self, reason: str = "tripped") -> None:
        """Open now (a monitor's ``trip_breaker(...)`` mitigation); it will probe after the wait."""
        with self._lock:
            self._transition(State.OPEN, reason)

    def reset(self) -> None:
        with self._lock:
            self._transition(State.CLOSED, "reset")
            self._window = self._new_window()
            self._severe.clear()


@dataclass(frozen=True)
class Fallback:
    """What the guard serves while a breaker is open.

    - ``cached_slate``: the last slate served for this surface while everything was closed.
    - ``stricter_rules``: decide with the rules of ``surface`` (e.g. ``for_you_strict``) instead.
    - ``safe_source``: replace the candidates with ``candidates(request)`` — a vetted source — and
      decide them with the rules as usual.
    - ``drop``: serve nothing from this scope (the default for a source scope: its candidates go).
    """

    kind: str = "cached_slate"
    surface: str | None = None
    candidates: Callable[[dict], Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("cached_slate", "stricter_rules", "safe_source", "drop"):
            raise BadInput(f"unknown fallback kind {self.kind!r}; one of cached_slate, stricter_rules, safe_source, drop")
        if self.kind == "stricter_rules" and not self.surface:
            raise BadInput("a stricter_rules fallback names the surface whose rules to use")
        if self.kind == "safe_source" and self.candidates is None:
            raise BadInput("a safe_source fallback needs a candidates(request) callable")


@dataclass
class ScopePolicy:
    """How breakers of one scope kind are configured and what replaces them when open."""

    config: BreakerConfig
    fallback: Fallback = field(default_factory=Fallback)


class BreakerRegistry:
    """Breakers by scope name (``surface:for_you``, ``source:trending``, ``model:ranker-v7``),
    created on first use from the policy of their scope kind (the part before the colon)."""

    def __init__(self, policies: dict[str, ScopePolicy] | None = None, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, listeners: list[Listener] | None = None):
        self.policies = dict(policies or {})
        self.clock = clock
        self.wall_clock = wall_clock
        self.listeners: list[Listener] = list(listeners or [])
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)  # existing breakers relay through _relay already

    def policy(self, scope: str) -> ScopePolicy | None:
        return self.policies.get(scope) or self.policies.get(scope.split(":", 1)[0])

    def get(self, scope: str) -> CircuitBreaker | None:
        """The breaker for ``scope``, or None when no policy covers that scope kind."""
        b = self._breakers.get(scope)
        if b is not None:
            return b
        policy = self.policy(scope)
        if policy is None:
            return None
        with self._lock:
            b = self._breakers.get(scope)
            if b is None:
                b = CircuitBreaker(scope, policy.config, clock=self.clock, wall_clock=self.wall_clock,
                                   listeners=[self._relay])
                self._breakers[scope] = b
            return b

    def _relay(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    def states(self) -> dict[str, str]:
        return {name: b.state.value for name, b in sorted(self._breakers.items())}

    def configure(self, scope: str, config: BreakerConfig, fallback: Fallback | None = None) -> None:
        existing = self.policies.get(scope)
        self.policies[scope] = ScopePolicy(config, fallback or (existing.fallback if existing else Fallback()))
        with self._lock:
            self._breakers.pop(scope, None)


def with_predicate(config: BreakerConfig, predicate: Predicate) -> BreakerConfig:
    return replace(config, failure_predicate=predicate)


def default_registry(*, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> BreakerRegistry:
    """The breakers a guard runs with unless told otherwise.

    - ``surface:*``: label-store errors and timeouts (count window of 50 requests, at least 20,
      50% failures or 80% slow reads open it; 10 s open, 5 probes); fallback: the subject's cached
      safe slate.
    - ``source:*``: candidates later found harmful — 3 severe reports within 10 minutes open it
      whatever the rate, as does a drop-rate surge (more than 80% of a source's candidates dropped
      in half of 50 batches); fallback: that source's candidates leave the slate.
    """
    return BreakerRegistry(
        {
            "surface": ScopePolicy(
                BreakerConfig(failure_predicate=LABEL_STORE_FAILED, window_size=50, minimum_calls=20,
                              slow_call_rate_threshold=80.0, slow_call_duration_s=0.02, wait_in_open_s=10.0,
                              permitted_calls_in_half_open=5, max_wait_in_half_open_s=30.0),
                Fallback("cached_slate"),
            ),
            "source": ScopePolicy(
                BreakerConfig(failure_predicate=any_of(HARMFUL, drop_rate_above(0.8)), window_size=50, minimum_calls=20,
                              severe_threshold=3, severe_window_s=600.0, wait_in_open_s=60.0,
                              permitted_calls_in_half_open=5, max_wait_in_half_open_s=120.0),
                Fallback("drop"),
            ),
        },
        clock=clock, wall_clock=wall_clock,
    )
