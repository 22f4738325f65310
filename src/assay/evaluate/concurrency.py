"""Adaptive concurrency for calls to a model server: additive increase, multiplicative decrease.

Written by hand because the HTTP clients we use (httpx) cap connections but do not adapt a
request window to server health; AIMD (as in TCP congestion control) is a few lines. The window
doubles each round trip while the server has never pushed back (TCP's slow start), then grows by
about one request per window's worth of successes while the server is healthy and the window is
actually full, and halves (at most once per cool-down) on 429, 5xx or a timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass
class LimiterStats:
    peak_limit: float = 0.0
    decreases: int = 0
    overloads: int = 0


class AdaptiveLimiter:
    """An asyncio semaphore whose size follows AIMD."""

    def __init__(
        self,
        initial: int = 8,
        minimum: int = 1,
        maximum: int = 128,
        decrease_factor: float = 0.5,
        cooldown_s: float = 0.5,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError(f"need 1 <= minimum <= initial <= maximum, got {minimum}, {initial}, {maximum}")
        self.limit = float(initial)
        self.minimum = minimum
        self.maximum = maximum
        self.decrease_factor = decrease_factor
        self.cooldown_s = cooldown_s
        self.in_flight = 0
        self.stats = LimiterStats(peak_limit=self.limit)
        self._cond = asyncio.Condition()
        self._last_decrease = -1e9

    async def acquire(self) -> None:
        async with self._cond:
            while self.in_flight >= int(self.limit):
                await self._cond.wait()
            self.in_flight += 1

    async def release(self, outcome: str) -> None:
        """``outcome``: ``ok`` (grow), ``overload`` (429/5xx/timeout: shrink) or ``neutral``."""
        async with self._cond:
            window_full = self.in_flight >= int(self.limit)
            self.in_flight -= 1
            if outcome == "ok":
                if window_full:
                    # slow start until the first overload: +1 per success, so the window doubles
                    # each round trip (8 -> 64 in three); then +1/limit per success, about +1 per
                    # full window of successes
                    step = 1.0 / self.limit if self.stats.overloads else 1.0
                    self.limit = min(float(self.maximum), self.limit + step)
                    self.stats.peak_limit = max(self.stats.peak_limit, self.limit)
            elif outcome == "overload":
                self.stats.overloads += 1
                now = time.monotonic()
                if now - self._last_decrease >= self.cooldown_s:
                    self.limit = max(float(self.minimum), self.limit * self.decrease_factor)
                    self._last_decrease = now
                    self.stats.decreases += 1
            # wake only as many waiters as there are free places (waking all of them, a window of
            # 128 with as many waiting, cost ~0.6 ms of CPU a request)
            self._cond.notify(max(int(self.limit) - self.in_flight, 0))
