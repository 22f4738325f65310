"""The adaptive limiter: slow start doubles the window per round trip until the server first
pushes back, then AIMD (about +1 per full window, halve on overload)."""

from __future__ import annotations

import asyncio

from assay.evaluate.concurrency import AdaptiveLimiter


async def one_round(limiter: AdaptiveLimiter) -> None:
    """A client that keeps the window full: as many completions as the window held at the start,
    each followed by new requests up to the (grown) window."""
    while limiter.in_flight < int(limiter.limit):
        await limiter.acquire()
    for _ in range(int(limiter.limit)):
        await limiter.release("ok")
        while limiter.in_flight < int(limiter.limit):
            await limiter.acquire()


def test_slow_start_doubles_per_round_then_grows_additively_after_an_overload():
    async def main() -> list[float]:
        limiter = AdaptiveLimiter(initial=8, maximum=128, cooldown_s=0.0)
        seen = [limiter.limit]
        for _ in range(3):
            await one_round(limiter)
            seen.append(limiter.limit)
        await limiter.release("overload")
        seen.append(limiter.limit)
        await one_round(limiter)
        seen.append(limiter.limit)
        return seen

    seen = asyncio.run(main())
    assert seen[:4] == [8, 16, 32, 64]  # slow start: doubles each full round
    assert seen[4] == 32  # halved on the first overload
    assert 32 < seen[5] < 34  # then about +1 per full window


def test_the_window_never_grows_past_the_maximum():
    async def main() -> float:
        limiter = AdaptiveLimiter(initial=8, maximum=20)
        for _ in range(4):
            await one_round(limiter)
        return limiter.limit

    assert asyncio.run(main()) == 20
