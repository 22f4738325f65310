"""Rate intervals: one function (``assay.stats.rate_interval``) for every rate the project reports,
checked against published values (Newcombe 1998), statsmodels, an independent inversion of the
score test, and a coverage simulation at small n and at rates of 0."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint

from assay.errors import BadInput
from assay.evaluate.stats import rate_aggregate, rate_from_counts
from assay.evaluate.stats import rate_interval as evaluate_rate_interval
from assay.stats import RATE_METHODS, rate_interval

# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Statistics in Medicine 17:857-872, Table II: method 3 (Wilson score), method 4
# (Wilson score with continuity correction), method 5 (Clopper-Pearson "exact"), 95%.
NEWCOMBE = {
    (81, 263): {"wilson-uncorrected": (0.2553, 0.3662), "wilson": (0.2535, 0.3682), "clopper-pearson": (0.2527, 0.3676)},
    (15, 148): {"wilson-uncorrected": (0.0624, 0.1605), "wilson": (0.0598, 0.1644), "clopper-pearson": (0.0578, 0.1617)},
    (0, 20): {"wilson-uncorrected": (0.0, 0.1611), "wilson": (0.0, 0.2005), "clopper-pearson": (0.0, 0.1684)},
    (1, 29): {"wilson-uncorrected": (0.0061, 0.1718), "wilson": (0.0018, 0.1963), "clopper-pearson": (0.0009, 0.1776)},
}

STATSMODELS = {"wilson-uncorrected": "wilson", "clopper-pearson": "beta", "jeffreys": "jeffreys"}


def test_the_evaluation_engine_exports_the_same_function():
    assert evaluate_rate_interval is rate_interval


@pytest.mark.parametrize(("x", "n"), list(NEWCOMBE))
def test_published_values(x, n):
    for method, (low, high) in NEWCOMBE[(x, n)].items():
        got = rate_interval(x, n, method=method)
        assert got == pytest.approx((low, high), abs=5e-5), method


def _cc_score_inversion(x: int, n: int, confidence: float) -> tuple[float, float]:
    """The continuity-corrected score interval found numerically: the p where the corrected
    statistic (|x - n p| - 1/2) / sqrt(n p (1 - p)) equals z (an oracle independent of the
    closed form)."""
    z = norm.isf((1 - confidence) / 2)

    def excess(p: float, side: int) -> float:
        return side * (x - n * p) - 0.5 - z * math.sqrt(n * p * (1 - p))

    low = 0.0 if x == 0 else brentq(lambda p: excess(p, 1), 1e-15, (x - 0.5) / n)
    high = 1.0 if x == n else brentq(lambda p: excess(p, -1), (x + 0.5) / n, 1 - 1e-15)
    return low, high


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 2000), data=st.data(), confidence=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999]))
def test_default_equals_the_inverted_continuity_corrected_score_test(n, data, confidence):
    x = data.draw(st.integers(0, n))
    assert rate_interval(x, n, confidence) == pytest.approx(_cc_score_inversion(x, n, confidence), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
       method=st.sampled_from(sorted(STATSMODELS)))
def test_other_methods_equal_statsmodels(n, data, confidence, method):
    x = data.draw(st.one_of(st.just(0), st.just(n), st.just(1), st.integers(0, n)))
    x = min(x, n)
    low, high = proportion_confint(x, n, alpha=1 - confidence, method=STATSMODELS[method])
    got = rate_interval(x, n, confidence, method)
    if method == "jeffreys" and x == 0:
        low = 0.0  # Brown, Cai & DasGupta (2001): the bound at x = 0 is 0 (statsmodels leaves it > 0)
    if method == "jeffreys" and x == n:
        high = 1.0
    assert got == pytest.approx((low, high), abs=1e-10)


@pytest.mark.parametrize("method", RATE_METHODS)
def test_edges_never_collapse(method):
    assert rate_interval(0, 0, method=method) == (0.0, 1.0)  # no evidence
    for n in (1, 2, 5, 20, 1000):
        low, high = rate_interval(0, n, method=method)
        assert low == 0.0 and high > 0.0
        low, high = rate_interval(n, n, method=method)
        assert high == 1.0 and low < 1.0
    for n in (1, 3, 20):
        for x in range(n + 1):
            low, high = rate_interval(x, n, method=method)
            assert 0.0 <= low <= x / n <= high <= 1.0 and high > low
        lows = [rate_interval(x, n, method=method)[0] for x in range(n + 1)]
        assert lows == sorted(lows)
    # narrower at lower confidence
    wide, narrow = rate_interval(3, 10, 0.99, method), rate_interval(3, 10, 0.8, method)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


def test_bad_input_is_refused_with_a_clear_message():
    for args, message in [
        ((5, 3), "0 <= successes <= n"),
        ((-1, 3), "0 <= successes <= n"),
        ((1, -1), "0 <= successes <= n"),
        ((1.5, 3), "whole number"),
        ((True, 3), "whole number"),
        ((1, "3"), "whole number"),
    ]:
        with pytest.raises(BadInput, match=message):
            rate_interval(*args)
    for confidence in (0.0, 1.0, 1.5, -0.1, math.nan, "0.95"):
        with pytest.raises(BadInput, match="confidence"):
            rate_interval(1, 3, confidence)
    with pytest.raises(BadInput, match="unknown rate interval method 'wald'"):
        rate_interval(1, 3, method="wald")
    assert rate_interval(np.int64(2), np.int64(4)) == rate_interval(2, 4)


def test_rate_aggregates():
    # the demo's "refusal_rate 0.00 [0.00, 0.00] (n=3)" is gone: 0 of 3 has a real upper bound
    agg = rate_aggregate([False, False, False])
    assert agg.value == 0.0 and agg.n == 3 and agg.ci_low == 0.0 and agg.ci_high > 0.6 and agg.method == "wilson"
    one = rate_aggregate([True])
    assert one.interval == rate_interval(1, 1) and one.ci_low > 0.0
    empty = rate_aggregate([])
    assert empty.n == 0 and math.isnan(empty.value) and empty.interval == (0.0, 1.0)
    assert rate_aggregate([1.0, 0.0, math.nan, 1.0]).n == 3  # NaN = no verdict, left out
    assert rate_from_counts(3, 10, method="clopper-pearson").interval == rate_interval(3, 10, method="clopper-pearson")
    assert rate_aggregate([True, False]).to_dict() == {
        "value": 0.5, "n": 2, "ci_low": rate_interval(1, 2)[0], "ci_high": rate_interval(1, 2)[1], "method": "wilson"}
    with pytest.raises(BadInput, match="boolean"):
        rate_aggregate([0.5, 1.0])


GRID_N = (1, 5, 20, 100)
GRID_P = (0.0, 0.05, 0.5)


def _exact_coverage(n: int, p: float, method: str) -> float:
    covered = [rate_interval(x, n, method=method) for x in range(n + 1)]
    pmf = binom.pmf(np.arange(n + 1), n, p)
    return float(sum(w for w, (lo, hi) in zip(pmf, covered, strict=True) if lo <= p <= hi))


@pytest.mark.parametrize("method", ["wilson", "clopper-pearson", "jeffreys"])
def test_coverage_simulation_at_small_n_and_rare_rates(method):
    """Nominal 95%: simulated coverage >= 0.93 at n in {1, 5, 20, 100}, p in {0, 0.05, 0.5}."""
    rng = np.random.default_rng(24)
    draws = 20_000
    for n in GRID_N:
        table = [rate_interval(x, n, method=method) for x in range(n + 1)]
        for p in GRID_P:
            xs = rng.binomial(n, p, size=draws)
            lo = np.array([t[0] for t in table])[xs]
            hi = np.array([t[1] for t in table])[xs]
            simulated = float(np.mean((lo <= p) & (p <= hi)))
            exact = _exact_coverage(n, p, method)
            assert simulated >= 0.93, (method, n, p, simulated)
            assert abs(simulated - exact) < 5 * math.sqrt(exact * (1 - exact) / draws) + 1e-9  # the simulation is right


def test_why_the_default_is_continuity_corrected():
    # the uncorrected Wilson interval misses the 0.93 floor at n = 20, p = 0.05 (x = 3 gives a
    # lower bound of 0.052); the corrected one does not, and the percentile bootstrap was far off
    assert _exact_coverage(20, 0.05, "wilson-uncorrected") == pytest.approx(0.9245, abs=1e-4)
    assert _exact_coverage(20, 0.05, "wilson") >= 0.95
    worst = min(_exact_coverage(n, p, "wilson") for n in (1, 2, 3, 5, 10, 20, 50, 100) for p in np.linspace(0.001, 0.999, 199))
    assert worst >= 0.94
