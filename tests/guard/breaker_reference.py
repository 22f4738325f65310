"""A reference model of resilience4j's CircuitBreaker, written from its documentation
(https://resilience4j.readme.io/docs/circuitbreaker and the CircuitBreakerConfig javadoc), as the
oracle for assay's breakers. It is deliberately naive: every recorded call is kept as a row and
the window is recomputed from the rows each time, rates are exact fractions, states are strings,
and time-driven transitions are applied as a scheduler would, when the clock is advanced past
them. Nothing here is shared with ``assay.guard.breakers``.

What the documentation says, and this model does:

- CLOSED: calls are permitted; outcomes go into a sliding window, count-based (the last N calls)
  or time-based (the calls of the last N seconds, aggregated per second). ``minimumNumberOfCalls``
  must be recorded before any rate is computed; for a count-based window it is at most the
  window's size. The failure rate and the slow-call rate open the breaker when *equal to or
  greater than* their thresholds. A call is slow when its duration is *greater than*
  ``slowCallDurationThreshold``.
- OPEN: calls are rejected until ``waitDurationInOpenState`` has passed; the first permission
  request *after* it moves the breaker to HALF_OPEN (the transition is lazy unless automatic
  transitions are enabled). Outcomes of calls permitted earlier are still recorded in the
  metrics the open state took over from the state before it, and change nothing.
- HALF_OPEN: ``permittedNumberOfCallsInHalfOpenState`` calls are permitted; their outcomes go into
  a count window of that size, and once min(minimum calls, permitted calls) are in, the rates
  decide OPEN (at or above a threshold) or CLOSED. ``maxWaitDurationInHalfOpenState`` (0: wait
  forever) moves it back to OPEN when it runs out, on a scheduler. ``releasePermission`` gives a
  permit back.
- DISABLED permits everything and records nothing; FORCED_OPEN rejects everything and records
  nothing; METRICS_ONLY permits everything, records, never transitions.
- Manual transitions: any state to any other, except CLOSED -> HALF_OPEN and METRICS_ONLY ->
  OPEN / HALF_OPEN (an IllegalStateTransitionException). A transition to the same state builds the
  state again (fresh metrics, a new wait) and publishes no event. ``reset()`` is CLOSED afresh.

``release_cap`` switches on one of the differences assay keeps on purpose (docs/guard.md): a
released permit never raises the half-open permits above the configured number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

PERMITTING = ("closed", "disabled", "metrics_only")
ILLEGAL = {("closed", "half_open"), ("metrics_only", "open"), ("metrics_only", "half_open")}


class IllegalStateTransition(Exception):
    pass


@dataclass
class Rows:
    """One state's metrics: every recorded call as (time, failed, slow)."""

    kind: str  # "count", "time" or "none"
    size: int
    rows: list[tuple[float, bool, bool]] = field(default_factory=list)

    def add(self, t: float, failed: bool, slow: bool) -> None:
        if self.kind != "none":
            self.rows.append((t, failed, slow))

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.kind == "count":
            return self.rows[-self.size:]
        if self.kind == "time":  # the seconds now - size + 1 .. now, whole seconds
            return [r for r in self.rows if math.floor(r[0]) > math.floor(now) - self.size]
        return []

    def counts(self, now: float) -> tuple[int, int, int]:
        w = self.window(now)
        return len(w), sum(f for _, f, _ in w), sum(s for _, _, s in w)


@dataclass
class Config:
    failure_rate: float = 50.0
    slow_rate: float = 100.0
    slow_s: float = 60.0
    window: str = "count"
    size: int = 100
    min_calls: int = 100
    wait_s: float = 60.0
    permitted: int = 10
    max_half_open_s: float = 0.0
    initial: str = "closed"


class Model:
    def __init__(self, cfg: Config, now: float, *, release_cap: bool = False):
        self.cfg = cfg
        self.release_cap = release_cap
        self.now = now
        self.state = cfg.initial
        self.entered = now
        self.log: list[tuple[str, str, float]] = []
        self.permits = cfg.permitted if cfg.initial == "half_open" else 0
        self.metrics = self._half_open_rows() if cfg.initial == "half_open" else self._closed_rows()
        if cfg.initial in ("disabled", "forced_open"):
            self.metrics = Rows("none", 0)

    # -- pieces ---------------------------------------------------------------------------------
    def _closed_rows(self) -> Rows:
        return Rows(self.cfg.window, self.cfg.size)

    def _half_open_rows(self) -> Rows:
        return Rows("count", self.cfg.permitted)

    def _minimum(self, state: str) -> int:
        closed_min = min(self.cfg.min_calls, self.cfg.size) if self.cfg.window == "count" else self.cfg.min_calls
        return min(closed_min, self.cfg.permitted) if state == "half_open" else closed_min

    def _over(self, calls: int, failed: int, slow: int) -> bool:
        return (Fraction(100 * failed, calls) >= Fraction(self.cfg.failure_rate)
                or Fraction(100 * slow, calls) >= Fraction(self.cfg.slow_rate))

    def _go(self, to: str, at: float) -> None:
        frm = self.state
        if frm != to:
            self.log.append((frm, to, at))
        self.state, self.entered = to, at
        self.permits = 0
        if to == "half_open":
            self.permits = self.cfg.permitted
            self.metrics = self._half_open_rows()
        elif to in ("closed", "metrics_only"):
            self.metrics = self._closed_rows()
        elif to in ("disabled", "forced_open"):
            self.metrics = Rows("none", 0)
        # "open" keeps the metrics of the state before it

    # -- the clock ---------------------------------------------------------------------------------
    def advance(self, dt: float) -> None:
        """Time passes; the half-open scheduler fires at its due time if that falls inside."""
        target = self.now + dt
        if self.state == "half_open" and self.cfg.max_half_open_s > 0:
            due = self.entered + self.cfg.max_half_open_s
            if due <= target:
                self._go("open", due)
        self.now = target

    # -- calls -------------------------------------------------------------------------------------
    def acquire(self) -> bool:
        if self.state in PERMITTING:
            return True
        if self.state == "open" and self.now > self.entered + self.cfg.wait_s:
            self._go("half_open", self.now)
        if self.state == "half_open" and self.permits > 0:
            self.permits -= 1
            return True
        return False

    def release(self) -> None:
        if self.state == "half_open" and (not self.release_cap or self.permits < self.cfg.permitted):
            self.permits += 1

    def result(self, failed: bool, duration: float) -> None:
        if self.state in ("disabled", "forced_open"):
            return
        self.metrics.add(self.now, failed, duration > self.cfg.slow_s)
        if self.state not in ("closed", "half_open"):
            return
        calls, f, s = self.metrics.counts(self.now)
        if calls < self._minimum(self.state):
            return
        if self._over(calls, f, s):
            self._go("open", self.now)
        elif self.state == "half_open":
            self._go("closed", self.now)

    def manual(self, to: str) -> None:
        if (self.state, to) in ILLEGAL:
            raise IllegalStateTransition(f"{self.state} -> {to}")
        self._go(to, self.now)

    def reset(self) -> None:
        self._go("closed", self.now)

    def counts(self) -> tuple[int, int, int]:
        return self.metrics.counts(self.now)

    def half_open_permits(self) -> int:
        return self.permits if self.state == "half_open" else 0
