"""Bootstrap intervals say how often their statistic was undefined, and give no interval when
that was too often (instead of silently conditioning on the resamples where it was defined)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.stats import (
    bootstrap_interval,
    max_undefined_share,
    mean_aggregate,
    statistic_aggregate,
)


def test_undefined_resamples_are_counted_and_past_one_tail_the_interval_is_unavailable():
    n, resamples = 4, 2000
    values = np.array([0.1, 0.5, 0.9, 0.3])

    def needs_unit_zero(idx: np.ndarray) -> float:  # undefined when unit 0 is not drawn
        return float(values[idx].mean()) if (idx == 0).any() else math.nan

    agg = statistic_aggregate(n, needs_unit_zero, resamples=resamples)
    expected = (1 - 1 / n) ** n * resamples  # P(unit 0 not drawn) = (3/4)^4
    sd = math.sqrt(expected * (1 - expected / resamples))
    assert abs(agg.undefined - expected) < 5 * sd
    assert agg.resamples == resamples and agg.value == pytest.approx(values.mean())
    assert not agg.available and math.isnan(agg.ci_low) and math.isnan(agg.ci_high)
    assert f"undefined in {agg.undefined} of {resamples} resamples" in agg.note
    d = agg.to_dict()
    assert d["undefined"] == agg.undefined and d["resamples"] == resamples and d["method"] == "bootstrap" and "note" in d


def test_a_few_undefined_resamples_are_reported_beside_the_interval():
    values = np.array([0.2, 0.4, 0.6, 0.8, 1.0])

    def spread(idx: np.ndarray) -> float:  # undefined when every draw is the same unit (p = 5 / 5^5)
        return math.nan if np.unique(idx).size == 1 else float(values[idx].std())

    agg = statistic_aggregate(5, spread, resamples=4000)
    assert 0 < agg.undefined <= max_undefined_share(0.95) * 4000
    assert agg.available and agg.ci_low <= agg.value <= agg.ci_high


def test_the_threshold_is_one_tail_of_the_level():
    assert max_undefined_share(0.95) == pytest.approx(0.025)
    assert max_undefined_share(0.9) == pytest.approx(0.05)
    samples = np.r_[np.linspace(0, 1, 975), [math.nan] * 25]  # exactly 2.5% undefined: still available
    assert bootstrap_interval(0.5, 10, samples).available
    samples = np.r_[np.linspace(0, 1, 974), [math.nan] * 26]
    assert not bootstrap_interval(0.5, 10, samples).available
    assert not bootstrap_interval(0.5, 10, samples, level=0.95).available
    assert bootstrap_interval(0.5, 10, samples, level=0.9).available


def test_small_and_degenerate_samples():
    one = mean_aggregate([0.7])
    assert one.value == 0.7 and one.n == 1 and not one.available and "needs at least 2" in one.note
    none = mean_aggregate([math.nan])
    assert none.n == 0 and math.isnan(none.value)
    undefined_point = statistic_aggregate(3, lambda idx: math.nan)
    assert math.isnan(undefined_point.value) and not undefined_point.available
    ok = mean_aggregate(np.arange(50.0))
    assert ok.undefined == 0 and ok.ci_low < 24.5 < ok.ci_high
    # seeded: the same inputs give the same interval (reports are reproducible byte for byte)
    assert mean_aggregate(np.arange(50.0)) == ok


def test_percentile_interval_matches_scipy_bootstrap_in_the_large_sample_limit():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(0)
    x = rng.exponential(1.0, 400)
    ours = mean_aggregate(x, resamples=4000)
    theirs = bootstrap((x,), np.mean, n_resamples=4000, method="percentile", rng=rng).confidence_interval
    assert ours.ci_low == pytest.approx(theirs.low, abs=0.02) and ours.ci_high == pytest.approx(theirs.high, abs=0.02)
