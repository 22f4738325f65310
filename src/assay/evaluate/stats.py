"""Aggregates with sample size and a 95% bootstrap interval.

Every number the evaluation engine reports is an :class:`Aggregate`: the point value, the
number of items behind it, and a percentile-bootstrap interval. Resampling is vectorised with
numpy and seeded, so the same inputs always give the same interval (reports must be
reproducible byte for byte, e.g. after ``assay eval resume``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 20261129


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A metric value with its sample size and 95% bootstrap interval (NaN when n == 0)."""

    value: float
    n: int
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high}

    @property
    def interval(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


NAN_AGGREGATE = Aggregate(math.nan, 0, math.nan, math.nan)


def _percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def mean_aggregate(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Aggregate:
    """Mean of ``values`` (NaNs dropped) with a percentile-bootstrap interval over items."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return NAN_AGGREGATE
    value = float(x.mean())
    if n == 1:
        return Aggregate(value, 1, value, value)
    rng = np.random.default_rng(seed)
    # Resample in chunks so memory stays bounded for very large n.
    chunk = max(1, min(resamples, 2_000_000 // n))
    means = []
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(size, n))
        means.append(x[idx].mean(axis=1))
        done += size
    low, high = _percentile_interval(np.concatenate(means), level)
    return Aggregate(value, n, low, high)


def statistic_aggregate(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> Aggregate:
    """Any statistic of ``n`` units (users, items) with a bootstrap over the units.

    ``statistic(index)`` receives an integer index array (``arange(n)`` for the point value, a
    resample with replacement otherwise) and returns the statistic of those units. Used for
    corpus-level metrics such as coverage, Gini or a group gap that are not plain means.
    """
    if n == 0:
        return NAN_AGGREGATE
    value = float(statistic(np.arange(n)))
    if n == 1:
        return Aggregate(value, 1, value, value)
    rng = np.random.default_rng(seed)
    samples = np.fromiter(
        (statistic(rng.integers(0, n, size=n)) for _ in range(resamples)), dtype=float, count=resamples
    )
    low, high = _percentile_interval(samples, level)
    return Aggregate(value, n, low, high)


def rate_aggregate(flags: Sequence[bool] | np.ndarray, **kwargs) -> Aggregate:
    """A proportion (e.g. refusal rate) with its bootstrap interval."""
    return mean_aggregate(np.asarray(flags, dtype=float), **kwargs)
