"""Circuit breakers with resilience4j semantics, for the guard's serving path.

Why hand-written: the Python circuit-breaker libraries (pybreaker, circuitbreaker, aiobreaker)
implement only consecutive-failure counting; none has resilience4j's sliding windows (count- and
time-based), minimum number of calls, slow-call rate, permitted calls and maximum wait in
half-open, or the DISABLED / FORCED_OPEN / METRICS_ONLY states. Those are what make a breaker
safe to put in front of a labeler or a candidate source, so they are implemented here, following
the resilience4j documentation (https://resilience4j.readme.io/docs/circuitbreaker):

- CLOSED: calls are permitted and recorded in a sliding window. Once at least ``minimum_calls``
  are in the window (for a count window, at most its size), a failure rate or slow-call rate at
  or above its threshold opens the breaker. A call is slow when it takes *longer* than
  ``slow_call_duration_s``.
- OPEN: calls are rejected. The first permission check *after* ``wait_in_open_s`` has passed moves
  it to HALF_OPEN (resilience4j's default, lazy transition). Results of calls permitted before
  the trip still arrive; they are counted in the metrics and never change the state.
- HALF_OPEN: up to ``permitted_calls_in_half_open`` probe calls are permitted; once
  min(minimum calls, permitted calls) probe results are in, their rates decide OPEN or CLOSED.
  After ``max_wait_in_half_open_s`` without a decision it opens again, at that moment (0: wait
  forever, resilience4j's default), so it can never stick in half-open.
- DISABLED: always permits, records nothing. FORCED_OPEN: always rejects (the kill switch).
  METRICS_ONLY: always permits, records metrics, never transitions.
- Manual transitions follow resilience4j's table (CLOSED cannot go to HALF_OPEN, METRICS_ONLY
  cannot go to OPEN or HALF_OPEN); a transition to the current state starts that state afresh
  (a new window, a new wait) without an event. Reading the state never changes it.

On top, kept on purpose (each listed in docs/guard.md with its reason and its own test):

- an absolute-count trip for rare severe harms: ``severe_threshold`` severe events within
  ``severe_window_s`` open the breaker whatever the rates are (one child-safety incident must not
  be averaged away by a million good calls). The events expire by time in every state; the trip
  and a manual close clear them.
- safety signals (:meth:`CircuitBreaker.record_signal`: a harm report, a severe report) are
  failures whatever the failure predicate says, and a signal during half-open probing opens the
  breaker: a signal can never count toward closing one.
- a released permit never raises the half-open permits above the configured number, and one
  acquired in an earlier half-open period is not returned to a later one.

What counts as a failure of a call is a predicate over call outcomes (:data:`LABEL_STORE_FAILED`,
:func:`drop_rate_above`, :data:`HARMFUL`). Breakers are named by scope (``surface:for_you``,
``source:trending``, ``model:ranker-v7``, ``creator:c-12``) in a :class:`BreakerRegistry`, which
caps their number per scope kind and evicts idle ones. Every state transition is emitted as an
:class:`assay.records.Event` of kind ``breaker_transition``. Time comes from an injectable clock
so tests are deterministic.
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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


_PERMITTING = frozenset({State.CLOSED, State.DISABLED, State.METRICS_ONLY})
# states whose scope a fallback must not serve from: not known to be healthy
BLOCKING = frozenset({State.OPEN, State.FORCED_OPEN, State.HALF_OPEN})
# the manual transitions resilience4j refuses (CircuitBreaker.StateTransition has no entry for them)
_ILLEGAL = frozenset({(State.CLOSED, State.HALF_OPEN), (State.METRICS_ONLY, State.OPEN), (State.METRICS_ONLY, State.HALF_OPEN)})


class IllegalTransition(BadInput):
    """A manual transition resilience4j does not allow (e.g. METRICS_ONLY to OPEN)."""


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


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class BreakerConfig:
    failure_rate_threshold: float = 50.0  # percent, in (0, 100]
    slow_call_rate_threshold: float = 100.0  # percent, in (0, 100]
    slow_call_duration_s: float = 0.05  # a call taking longer than this is slow
    window_type: WindowType = WindowType.COUNT
    window_size: int = 100  # calls (COUNT) or seconds (TIME)
    minimum_calls: int = 20
    wait_in_open_s: float = 30.0
    permitted_calls_in_half_open: int = 5
    max_wait_in_half_open_s: float = 60.0  # 0 = wait forever (resilience4j's default; not ours)
    severe_threshold: int = 0  # 0 = no absolute-count trip
    severe_window_s: float = 3600.0
    failure_predicate: Predicate = LABEL_STORE_FAILED
    initial_state: State = State.CLOSED

    def __post_init__(self) -> None:
        """Refuse what resilience4j's builder refuses (and zero durations), naming the field."""
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            v = getattr(self, name)
            if not _is_number(v) or not 0 < v <= 100:
                raise BadInput(f"breaker config: {name} must be a percentage in (0, 100], got {v!r}")
        for name in ("slow_call_duration_s", "wait_in_open_s", "severe_window_s"):
            v = getattr(self, name)
            if not _is_number(v) or not v > 0:
                raise BadInput(f"breaker config: {name} must be a duration > 0 seconds, got {v!r}")
        v = self.max_wait_in_half_open_s
        if not _is_number(v) or v < 0:
            raise BadInput(f"breaker config: max_wait_in_half_open_s must be >= 0 seconds (0 waits forever), got {v!r}")
        for name in ("window_size", "minimum_calls", "permitted_calls_in_half_open"):
            v = getattr(self, name)
            if not _is_count(v) or v < 1:
                raise BadInput(f"breaker config: {name} must be a whole number >= 1, got {v!r}")
        if not _is_count(self.severe_threshold) or self.severe_threshold < 0:
            raise BadInput(f"breaker config: severe_threshold must be a whole number >= 0, got {self.severe_threshold!r}")
        try:
            object.__setattr__(self, "window_type", WindowType(self.window_type))
            object.__setattr__(self, "initial_state", State(self.initial_state))
        except ValueError as e:
            raise BadInput(f"breaker config: {e}") from None
        if not callable(self.failure_predicate):
            raise BadInput(f"breaker config: failure_predicate must be callable, got {self.failure_predicate!r}")

    @property
    def effective_minimum_calls(self) -> int:
        """What the rates wait for in CLOSED: a count window's minimum is at most its size."""
        if self.window_type is WindowType.COUNT:
            return min(self.minimum_calls, self.window_size)
        return self.minimum_calls


class Snapshot(NamedTuple):
    """Metrics over the current state's window (what a trip decision sees)."""

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
    """The last ``size`` calls: a ring of one byte per call (bit 0 failed, bit 1 slow), grown as
    calls come, with running totals: O(1) per call and small enough to keep tens of thousands."""

    __slots__ = ("calls", "failed", "head", "ring", "size", "slow")

    def __init__(self, size: int):
        self.size = size
        self.ring = bytearray()
        self.head = 0  # the oldest call, once the ring is full
        self.calls = self.failed = self.slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        code = failed | (slow << 1)
        if self.calls < self.size:
            self.ring.append(code)
            self.calls += 1
        else:
            head = self.head
            old = self.ring[head]
            self.failed -= old & 1
            self.slow -= old >> 1
            self.ring[head] = code
            self.head = head + 1 if head + 1 < self.size else 0
        self.failed += failed
        self.slow += slow

    def counts(self, now: float) -> Snapshot:
        return Snapshot(self.calls, self.failed, self.slow)


class _TimeWindow:
    """Calls of the last ``size`` seconds, aggregated per whole second of the clock (as
    resilience4j aggregates per epoch second): a call of second s leaves at second s + size."""

    __slots__ = ("buckets", "calls", "failed", "size", "slow")

    def __init__(self, size: int):
        self.size = size
        self.buckets: deque[list[int]] = deque()  # [second, calls, failed, slow]
        self.calls = self.failed = self.slow = 0

    def _evict(self, sec: int) -> None:
        horizon = sec - self.size
        buckets = self.buckets
        while buckets and buckets[0][0] <= horizon:
            _, c, f, s = buckets.popleft()
            self.calls -= c
            self.failed -= f
            self.slow -= s

    def record(self, failed: bool, slow: bool, now: float) -> None:
        sec = math.floor(now)
        self._evict(sec)
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0, 0, 0])
        b = self.buckets[-1]
        b[1] += 1
        b[2] += failed
        b[3] += slow
        self.calls += 1
        self.failed += failed
        self.slow += slow

    def counts(self, now: float) -> Snapshot:
        self._evict(math.floor(now))
        return Snapshot(self.calls, self.failed, self.slow)


class _NoWindow:
    """DISABLED and FORCED_OPEN record nothing."""

    __slots__ = ()

    def record(self, failed: bool, slow: bool, now: float) -> None:
        return None

    def counts(self, now: float) -> Snapshot:
        return Snapshot(0, 0, 0)


_NO_WINDOW = _NoWindow()


class Transition(NamedTuple):
    """One state change: from, to, why, and when on the breaker's clock (for a half-open period
    that ran out, the moment it ran out, even if noticed later)."""

    frm: State
    to: State
    reason: str
    at: float


Listener = Callable[[Event], None]


class CircuitBreaker:
    """One breaker. Thread-safe; every method takes the current time from ``clock``."""

    def __init__(self, name: str, config: BreakerConfig | None = None, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, listeners: list[Listener] | None = None):
        self.name = name
        self.config = cfg = config or BreakerConfig()
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._listeners: list[Listener] = list(listeners or [])
        # the config is frozen: what every call needs is read once
        self._slow_s = cfg.slow_call_duration_s
        self._wait_s = cfg.wait_in_open_s
        self._max_half_open_s = cfg.max_wait_in_half_open_s
        self._permitted = cfg.permitted_calls_in_half_open
        self._need = cfg.effective_minimum_calls
        self._need_half_open = min(cfg.effective_minimum_calls, cfg.permitted_calls_in_half_open)
        # the newest severe events only: whether ``severe_threshold`` fall in the window is all
        # that matters, and a flood of reports must not grow it
        self._severe: deque[float] = deque(maxlen=max(cfg.severe_threshold, 1))
        self.not_permitted = 0  # calls refused over the breaker's life
        self.transitions: deque[Transition] = deque(maxlen=256)
        now = clock()
        self.last_used = now  # last permission check or recorded result (what idle eviction reads)
        self._state = cfg.initial_state
        self._since = now
        self._generation = 0  # numbers the half-open periods, so a permit goes back only to its own
        self._permits = 0
        self._window: _CountWindow | _TimeWindow | _NoWindow = _NO_WINDOW
        self._enter(cfg.initial_state, initial=True)

    def _new_window(self) -> _CountWindow | _TimeWindow:
        if self.config.window_type is WindowType.COUNT:
            return _CountWindow(self.config.window_size)
        return _TimeWindow(self.config.window_size)

    def _enter(self, to: State, *, initial: bool = False) -> None:
        """Start state ``to`` afresh, as resilience4j builds a new state object."""
        self._permits = 0
        if to is State.HALF_OPEN:
            self._generation += 1
            self._permits = self._permitted
            self._window = _CountWindow(self._permitted)
        elif to is State.CLOSED or to is State.METRICS_ONLY or (to is State.OPEN and initial):
            self._window = self._new_window()
        elif to is State.DISABLED or to is State.FORCED_OPEN:
            self._window = _NO_WINDOW
        # OPEN keeps the window of the state it came from (resilience4j's OpenState takes its metrics)

    # -- state ---------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The state now. Reading it changes nothing: a half-open period past its maximum wait
        reads OPEN, as resilience4j's scheduled transition would have made it."""
        with self._lock:
            return self._state if self._timed_out(self._clock()) is None else State.OPEN

    @property
    def since(self) -> float:
        """When the current state began, on the breaker's clock."""
        with self._lock:
            due = self._timed_out(self._clock())
            return self._since if due is None else due

    def _timed_out(self, now: float) -> float | None:
        """When a half-open period past its maximum wait ran out (None: it has not)."""
        if self._state is State.HALF_OPEN and self._max_half_open_s and now >= self._since + self._max_half_open_s:
            return self._since + self._max_half_open_s
        return None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _settle(self, now: float) -> State:
        """Apply a half-open maximum wait that ran out, at the moment it ran out (resilience4j runs
        it on a scheduler thread; here it is applied by the next call, with the same time)."""
        due = self._timed_out(now)
        if due is not None:
            self._transition(State.OPEN, f"probes did not decide within {self._max_half_open_s}s in half-open", now, at=due)
        return self._state

    def _transition(self, to: State, reason: str, now: float, snapshot: Snapshot | None = None, *,
                    at: float | None = None) -> None:
        frm = self._state
        at = now if at is None else at
        self._state = to
        self._since = at
        self._enter(to)
        if frm is to:  # resilience4j's internal transition: a fresh state, no event
            return
        self.transitions.append(Transition(frm, to, reason, at))
        payload: dict[str, Any] = {"from": frm.value, "to": to.value, "reason": reason}
        if snapshot is not None:
            payload.update(calls=snapshot.calls, failed=snapshot.failed, slow=snapshot.slow,
                           failure_rate=round(snapshot.failure_rate, 3), slow_call_rate=round(snapshot.slow_call_rate, 3))
        event = Event(kind="breaker_transition", ts=self._wall() - (now - at), subject=self.name, payload=payload)
        for listener in self._listeners:
            with contextlib.suppress(Exception):  # a broken listener must not break serving
                listener(event)

    # -- calls ---------------------------------------------------------------------------------
    def _acquire(self) -> int:
        """-1: refused; 0: permitted outside half-open; g > 0: one probe permit of half-open period g."""
        with self._lock:
            now = self._clock()
            self.last_used = now
            st = self._state
            if st is State.HALF_OPEN:
                st = self._settle(now)
            if st in _PERMITTING:
                return 0
            if st is State.OPEN and now > self._since + self._wait_s:  # strictly after, as resilience4j
                self._transition(State.HALF_OPEN, f"waited {self._wait_s}s in open", now)
                st = State.HALF_OPEN
            if st is State.HALF_OPEN and self._permits > 0:
                self._permits -= 1
                return self._generation
            self.not_permitted += 1
            return -1

    def try_acquire_permission(self) -> bool:
        """May a call go through now? In half-open this takes one probe permit, which the call's
        result (or :meth:`release_permission`) gives back."""
        return self._acquire() >= 0

    def release_permission(self) -> None:
        """Give back a permit whose call will not be recorded. Never above the configured number."""
        self._release(None)

    def _release(self, token: int | None) -> None:
        """Give back a permit: the one ``_acquire`` returned as ``token`` only to its own half-open
        period (None: to the current one), and never above the configured number."""
        if token is not None and token <= 0:
            return
        with self._lock:
            if (self._settle(self._clock()) is State.HALF_OPEN and (token is None or token == self._generation)
                    and self._permits < self._permitted):
                self._permits += 1

    def record(self, outcome: CallOutcome) -> None:
        """Judge ``outcome`` with the failure predicate and record it."""
        failed = bool(self.config.failure_predicate(outcome))
        self.on_result(failed=failed, duration_s=outcome.duration_s, severe=outcome.severe and failed)

    def on_success(self, duration_s: float = 0.0) -> None:
        self.on_result(failed=False, duration_s=duration_s)

    def on_error(self, duration_s: float = 0.0, *, severe: bool = False) -> None:
        self.on_result(failed=True, duration_s=duration_s, severe=severe)

    def on_result(self, *, failed: bool, duration_s: float = 0.0, severe: bool = False) -> None:
        self._record(failed, duration_s > self._slow_s, severe, None)

    def record_signal(self, *, severe: bool = False, reason: str = "safety signal") -> None:
        """A safety signal about this scope (a harm report, a severe report): a failure whatever the
        failure predicate says. It is not a permitted call, so it can never close the breaker: in
        half-open it ends the probing (OPEN); in CLOSED it is a failed call in the window."""
        self._record(True, False, severe, reason)

    def _record(self, failed: bool, slow: bool, severe: bool, signal: str | None) -> None:
        with self._lock:
            now = self._clock()
            self.last_used = now
            st = self._state
            if st is State.HALF_OPEN:
                st = self._settle(now)
            if st is State.DISABLED:
                return
            if severe:
                self._add_severe(now)
            if st is State.FORCED_OPEN:
                return
            self._window.record(failed, slow, now)
            if signal is not None and st is State.HALF_OPEN:
                if not self._severe_trip(now):
                    self._transition(State.OPEN, f"{signal} during half-open probes", now, self._window.counts(now))
            elif st is State.CLOSED or st is State.HALF_OPEN:
                self._decide(st, now)
            # OPEN (a call permitted before the trip, or a signal) and METRICS_ONLY: counted, no transition

    def _decide(self, st: State, now: float) -> None:
        """After a result in CLOSED or HALF_OPEN: the severe count, then the rates, decide."""
        if self._severe and self._severe_trip(now):
            return
        calls, failed, slow = snap = self._window.counts(now)
        if calls < (self._need if st is State.CLOSED else self._need_half_open):
            return
        cfg = self.config
        over = 100.0 * failed / calls >= cfg.failure_rate_threshold or 100.0 * slow / calls >= cfg.slow_call_rate_threshold
        if over:
            self._transition(State.OPEN, self._why(snap) + (" in half-open probes" if st is State.HALF_OPEN else ""), now, snap)
        elif st is State.HALF_OPEN:
            self._transition(State.CLOSED, f"{calls} half-open probes below thresholds", now, snap)

    # -- severe events (an extension of resilience4j) --------------------------------------------
    def _add_severe(self, now: float) -> None:
        if self.config.severe_threshold:
            self._expire_severe(now)
            self._severe.append(now)

    def _expire_severe(self, now: float) -> None:
        horizon = now - self.config.severe_window_s
        severe = self._severe
        while severe and severe[0] <= horizon:
            severe.popleft()

    def _severe_trip(self, now: float) -> bool:
        """Open on ``severe_threshold`` severe events within the window, and forget them (the trip
        answered them; a later probe must not be judged by them again)."""
        threshold = self.config.severe_threshold
        if not threshold:
            return False
        self._expire_severe(now)
        if len(self._severe) < threshold:
            return False
        n = len(self._severe)
        self._severe.clear()
        self._transition(State.OPEN, f"{n} severe events within {self.config.severe_window_s}s", now, self._window.counts(now))
        return True

    def severe_events(self) -> int:
        """Severe events inside the window now, up to ``severe_threshold`` (reading changes nothing)."""
        with self._lock:
            horizon = self._clock() - self.config.severe_window_s
            return sum(1 for t in self._severe if t > horizon)

    def _why(self, snap: Snapshot) -> str:
        if snap.failure_rate >= self.config.failure_rate_threshold:
            return f"failure rate {snap.failure_rate:.1f}% >= {self.config.failure_rate_threshold}% over {snap.calls} calls"
        return f"slow-call rate {snap.slow_call_rate:.1f}% >= {self.config.slow_call_rate_threshold}% over {snap.calls} calls"

    def metrics(self) -> Snapshot:
        """Counts of the current state's window (CLOSED's sliding window, HALF_OPEN's probes; OPEN
        keeps the window it tripped on)."""
        with self._lock:
            return self._window.counts(self._clock())

    def half_open_permits(self) -> int:
        """Probe permits left now (0 outside half-open)."""
        with self._lock:
            if self.state is not State.HALF_OPEN:
                return 0
            return self._permits

    # -- manual transitions (operators, mitigations) --------------------------------------------
    def _manual(self, to: State, reason: str, *, clear_severe: bool = False) -> None:
        with self._lock:
            now = self._clock()
            frm = self._settle(now)
            if (frm, to) in _ILLEGAL:
                raise IllegalTransition(f"breaker {self.name}: no transition from {frm.value} to {to.value}"
                                        + (" (close it first)" if frm is State.METRICS_ONLY else ""))
            if clear_severe:
                self._severe.clear()
            self._transition(to, reason, now)

    def force_open(self, reason: str = "forced open (kill switch)") -> None:
        self._manual(State.FORCED_OPEN, reason)

    def disable(self, reason: str = "disabled") -> None:
        self._manual(State.DISABLED, reason, clear_severe=True)

    def metrics_only(self, reason: str = "metrics only") -> None:
        self._manual(State.METRICS_ONLY, reason, clear_severe=True)

    def close(self, reason: str = "closed by operator") -> None:
        """Close with a fresh window; severe events are forgotten (the operator has judged them)."""
        self._manual(State.CLOSED, reason, clear_severe=True)

    def trip(self, reason: str = "tripped") -> None:
        """Open now; it will probe after the wait (on OPEN: the wait starts again)."""
        self._manual(State.OPEN, reason)

    def half_open(self, reason: str = "probing by operator") -> None:
        """Start probing now (from OPEN, FORCED_OPEN, DISABLED or HALF_OPEN)."""
        self._manual(State.HALF_OPEN, reason)

    def reset(self) -> None:
        """CLOSED with a fresh window and no severe events, from any state."""
        with self._lock:
            now = self._clock()
            self._settle(now)
            self._severe.clear()
            self._transition(State.CLOSED, "reset", now)

    def _evictable(self, now: float) -> bool:
        """Nothing would be lost by forgetting it: back in its initial, permitting state, with no
        severe event in its window."""
        # read without the breaker's lock (the registry's is held): a breaker that a request uses
        # at this very moment is the most recently used, never the one chosen
        st = self._state
        if st is not self.config.initial_state or st not in _PERMITTING:
            return False
        horizon = now - self.config.severe_window_s
        return not any(t > horizon for t in list(self._severe))


@dataclass(frozen=True)
class Fallback:
    """What the guard serves while a breaker is open.

    - ``cached_slate``: the last slate served for this surface while everything was closed.
    - ``stricter_rules``: decide with the rules of ``surface`` (e.g. ``for_you_strict``) instead.
    - ``safe_source``: replace the candidates with ``candidates(request)`` — a vetted source — and
      decide them with the rules as usual.
    - ``drop``: serve nothing from this scope (the default for a source scope: its candidates go).

    Whatever it serves, no item comes from a source or creator whose breaker is open, forced open
    or half-open (see :meth:`BreakerRegistry.blocked_items`).
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
    """How breakers of one scope kind are configured, what replaces them when open, and how many
    there may be: at most ``max_breakers`` of the kind (the least recently used of those with
    nothing to remember go first), and one untouched for ``idle_evict_s`` with nothing to
    remember is dropped."""

    config: BreakerConfig
    fallback: Fallback = field(default_factory=Fallback)
    max_breakers: int = 10_000
    idle_evict_s: float = 3600.0

    def __post_init__(self) -> None:
        if not isinstance(self.config, BreakerConfig):
            raise BadInput(f"scope policy: config must be a BreakerConfig, got {type(self.config).__name__}")
        if not isinstance(self.fallback, Fallback):
            raise BadInput(f"scope policy: fallback must be a Fallback, got {type(self.fallback).__name__}")
        if not _is_count(self.max_breakers) or self.max_breakers < 1:
            raise BadInput(f"scope policy: max_breakers must be a whole number >= 1, got {self.max_breakers!r}")
        if not _is_number(self.idle_evict_s) or not self.idle_evict_s > 0:
            raise BadInput(f"scope policy: idle_evict_s must be a duration > 0 seconds, got {self.idle_evict_s!r}")


def kind_of(scope: str) -> str:
    return scope.split(":", 1)[0]


class Permits:
    """The permits one request holds on the breakers that gate it. Each is either recorded (the
    request's outcome) or given back: leaving the ``with`` block without :meth:`record` (an
    exception) releases them, so a half-open probe permit is never lost."""

    __slots__ = ("half_open", "held", "refused", "refused_state")

    def __init__(self) -> None:
        self.held: list[tuple[CircuitBreaker, int]] = []
        self.refused: str | None = None  # the scope whose breaker refused the request
        self.refused_state = State.OPEN  # and that breaker's state then
        self.half_open = False  # a probe permit is among them

    def record(self, outcome: CallOutcome) -> None:
        held, self.held = self.held, []
        for b, _ in held:
            b.record(outcome)

    def release(self) -> None:
        held, self.held = self.held, []
        for b, token in held:
            b._release(token)

    def __enter__(self) -> Permits:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.release()


ITEM_SCOPE_KINDS = ("source", "creator")  # scopes a candidate belongs to, read from its columns


class BreakerRegistry:
    """Breakers by scope name (``surface:for_you``, ``source:trending``, ``model:ranker-v7``),
    created on first use from the policy of their scope kind (the part before the colon), at most
    ``max_breakers`` per kind."""

    def __init__(self, policies: dict[str, ScopePolicy] | None = None, *, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time, listeners: list[Listener] | None = None):
        self.policies = dict(policies or {})
        for scope, policy in self.policies.items():
            if not isinstance(policy, ScopePolicy):
                raise BadInput(f"breaker policy for {scope!r} must be a ScopePolicy, got {type(policy).__name__}")
        self.clock = clock
        self.wall_clock = wall_clock
        self.listeners: list[Listener] = list(listeners or [])
        self._breakers: dict[str, CircuitBreaker] = {}
        self._kinds: dict[str, dict[str, CircuitBreaker]] = {}  # kind -> its breakers
        self._swept: dict[str, float] = {}
        self._lock = threading.Lock()
        self.evictions: Counter[tuple[str, str]] = Counter()  # (kind, "lru" | "idle")
        self.overflows: Counter[str] = Counter()  # requests for a new breaker with the kind full
        self.item_kinds = self._item_kinds()

    def _item_kinds(self) -> tuple[str, ...]:
        return tuple(k for k in ITEM_SCOPE_KINDS if k in self.policies or any(s.startswith(k + ":") for s in self.policies))

    def add_listener(self, listener: Listener) -> None:
        self.listeners.append(listener)  # existing breakers relay through _relay already

    def policy(self, scope: str) -> ScopePolicy | None:
        return self.policies.get(scope) or self.policies.get(kind_of(scope))

    def get(self, scope: str) -> CircuitBreaker | None:
        """The breaker for ``scope``, or None when no policy covers that scope kind. With the kind
        at its cap and no breaker that can be forgotten, a new scope gets a forced-open breaker
        that is not kept (fail closed), counted in ``overflows``."""
        b = self._breakers.get(scope)
        if b is not None:
            return b
        policy = self.policy(scope)
        if policy is None:
            return None
        kind = kind_of(scope)
        cap_policy = self.policies.get(kind) or policy
        with self._lock:
            b = self._breakers.get(scope)
            if b is not None:
                return b
            group = self._kinds.setdefault(kind, {})
            now = self.clock()
            if now - self._swept.get(kind, -math.inf) >= cap_policy.idle_evict_s / 4:
                self._evict(kind, group, now, idle_s=cap_policy.idle_evict_s)
            if len(group) >= cap_policy.max_breakers:
                # the least recently used go first; a few at a time, so a flood of new names does
                # not scan the whole kind on every creation
                self._evict(kind, group, now, count=max(1, cap_policy.max_breakers // 16))
            if len(group) >= cap_policy.max_breakers:
                self.overflows[kind] += 1
                return CircuitBreaker(scope, replace(policy.config, initial_state=State.FORCED_OPEN), clock=self.clock,
                                      wall_clock=self.wall_clock)
            b = CircuitBreaker(scope, policy.config, clock=self.clock, wall_clock=self.wall_clock, listeners=[self._relay])
            self._breakers[scope] = group[scope] = b
            return b

    def _evict(self, kind: str, group: dict[str, CircuitBreaker], now: float, *, idle_s: float | None = None,
               count: int = 0) -> None:
        """Forget breakers with nothing to remember: those idle for ``idle_s``, or the ``count``
        least recently used. Under ``self._lock``."""
        if idle_s is not None:
            self._swept[kind] = now
            gone = [s for s, b in group.items() if now - b.last_used >= idle_s and b._evictable(now)]
            reason = "idle"
        else:
            gone = heapq.nsmallest(count, (s for s, b in group.items() if b._evictable(now)), key=lambda s: group[s].last_used)
            reason = "lru"
        for s in gone:
            del group[s]
            del self._breakers[s]
        if gone:
            self.evictions[(kind, reason)] += len(gone)

    def sweep(self) -> int:
        """Forget every idle breaker now (also done as new ones are made); returns how many."""
        before = sum(self.evictions.values())
        with self._lock:
            now = self.clock()
            for kind, group in self._kinds.items():
                policy = self.policies.get(kind)
                idle_s = policy.idle_evict_s if policy else min((p.idle_evict_s for s, p in self.policies.items()
                                                                 if kind_of(s) == kind), default=3600.0)
                self._evict(kind, group, now, idle_s=idle_s)
        return sum(self.evictions.values()) - before

    def _relay(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    def states(self, *, kind: str | None = None, after: str | None = None, limit: int | None = None) -> dict[str, str]:
        """Breaker states by scope, in name order: those of ``kind`` only, names after ``after``,
        at most ``limit`` (see :meth:`page` for the cursor)."""
        return self.page(kind=kind, after=after, limit=limit)["breakers"]

    def page(self, *, kind: str | None = None, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """One page of :meth:`states`: ``{"breakers": {scope: state}, "next": cursor or None,
        "total": breakers matching}``; pass ``next`` as ``after`` for the following page."""
        if limit is not None and (not _is_count(limit) or limit < 1):
            raise BadInput(f"breaker page: limit must be a whole number >= 1, got {limit!r}")
        with self._lock:
            items = list((self._kinds.get(kind, {}) if kind is not None else self._breakers).items())
        names = sorted(s for s, _ in items)
        total = len(names)
        if after is not None:
            names = names[bisect.bisect_right(names, after):]
        more = limit is not None and len(names) > limit
        names = names[:limit] if limit is not None else names
        by_name = dict(items)
        return {"breakers": {s: by_name[s].state.value for s in names}, "next": names[-1] if more else None, "total": total}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per scope kind: how many breakers are in each state."""
        with self._lock:
            groups = {kind: list(group.values()) for kind, group in self._kinds.items()}
        return {kind: dict(Counter(b.state.value for b in bs)) for kind, bs in groups.items()}

    def configure(self, scope: str, config: BreakerConfig, fallback: Fallback | None = None) -> None:
        existing = self.policies.get(scope)
        self.policies[scope] = ScopePolicy(config, fallback or (existing.fallback if existing else Fallback()),
                                           **({"max_breakers": existing.max_breakers, "idle_evict_s": existing.idle_evict_s}
                                              if existing else {}))
        with self._lock:
            self._breakers.pop(scope, None)
            self._kinds.get(kind_of(scope), {}).pop(scope, None)
        self.item_kinds = self._item_kinds()

    # -- what the guard calls ------------------------------------------------------------------------
    def acquire(self, scopes: Iterable[str | None]) -> Permits:
        """Permission for one request from the breaker of every scope that has one. If one refuses,
        the permits already taken are given back and ``refused`` names it."""
        permits = Permits()
        for scope in scopes:
            if scope is None:
                continue
            b = self.get(scope)
            if b is None:
                continue
            token = b._acquire()
            if token < 0:
                permits.release()
                permits.refused, permits.refused_state = scope, b.state
                return permits
            permits.held.append((b, token))
            if token:
                permits.half_open = True
        return permits

    def report(self, scopes: Iterable[str], *, severe: bool = False, reason: str = "safety signal") -> dict[str, str]:
        """A safety signal against each scope's breaker (see :meth:`CircuitBreaker.record_signal`);
        returns the state of each breaker it reached."""
        out: dict[str, str] = {}
        for scope in scopes:
            b = self.get(scope)
            if b is not None:
                b.record_signal(severe=severe, reason=reason)
                out[scope] = b.state.value
        return out

    def blocking_state(self, scope: str) -> State | None:
        """The state of ``scope``'s breaker if a fallback must not serve from it (open, forced open,
        half-open), else None. Makes no breaker and takes no permit."""
        b = self._breakers.get(scope)
        if b is not None:
            st = b.state
        elif (policy := self.policy(scope)) is not None:
            st = policy.config.initial_state
        else:
            return None
        return st if st in BLOCKING else None

    def blocked_items(self, scopes: Mapping[str, Sequence[Any]]) -> list[tuple[int, str, State]]:
        """Which items a fallback must leave out: for each item-scope kind with a policy (``source``,
        ``creator``), the items whose value's breaker is blocking. ``scopes`` holds a value per item
        for each kind known (None: unknown). Returns (position, scope, state)."""
        out: list[tuple[int, str, State]] = []
        for kind in self.item_kinds:
            values = scopes.get(kind)
            if values is None:
                continue
            verdict: dict[Any, State | None] = {}
            for i, v in enumerate(values):
                if v is None:
                    continue
                if v not in verdict:
                    verdict[v] = self.blocking_state(f"{kind}:{v}")
                st = verdict[v]
                if st is not None:
                    out.append((i, f"{kind}:{v}", st))
        return out

    def register_metrics(self, registry: Any) -> None:
        """Expose breaker counts by kind and state, evictions and overflows on a prometheus_client
        ``CollectorRegistry``: ``assay_breakers{kind,state}``, ``assay_breaker_evictions_total
        {kind,reason}``, ``assay_breaker_overflows_total{kind}``."""
        registry.register(_BreakerCollector(self))


class _BreakerCollector:
    """A prometheus_client custom collector: read at scrape time, nothing on the serving path."""

    def __init__(self, breakers: BreakerRegistry):
        self.breakers = breakers

    def describe(self) -> list:
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        g = GaugeMetricFamily("assay_breakers", "Circuit breakers by scope kind and state", labels=["kind", "state"])
        for kind, by_state in sorted(self.breakers.counts().items()):
            for st in State:
                g.add_metric([kind, st.value], by_state.get(st.value, 0))
        yield g
        ev = CounterMetricFamily("assay_breaker_evictions", "Breakers forgotten to keep each kind under its cap",
                                 labels=["kind", "reason"])
        for (kind, reason), n in sorted(self.breakers.evictions.items()):
            ev.add_metric([kind, reason], n)
        yield ev
        ov = CounterMetricFamily("assay_breaker_overflows", "New scopes refused (fail closed) with their kind full",
                                 labels=["kind"])
        for kind, n in sorted(self.breakers.overflows.items()):
            ov.add_metric([kind], n)
        yield ov


def with_predicate(config: BreakerConfig, predicate: Predicate) -> BreakerConfig:
    return replace(config, failure_predicate=predicate)


def default_registry(*, clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> BreakerRegistry:
    """The breakers a guard runs with unless told otherwise.

    - ``surface:*``: label-store errors and timeouts (count window of 50 requests, at least 20,
      50% failures or 80% slow reads open it; 10 s open, 5 probes); harm reports naming the
      surface count as failures; fallback: the subject's cached safe slate.
    - ``source:*``: candidates later found harmful — 3 severe reports within 10 minutes open it
      whatever the rate, as does a drop-rate surge (more than 80% of a source's candidates dropped
      in half of 50 batches); fallback: that source's candidates leave the slate.

    At most 10,000 breakers of each kind; one idle for an hour with nothing to remember is dropped.
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
