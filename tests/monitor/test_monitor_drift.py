"""Drift tests: the fast path must give scipy's answers, effect sizes must gate significance,
and the multiple-testing corrections must match their definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

from assay.errors import BadInput
from assay.monitor.drift import (
    ReferenceProfile,
    Thresholds,
    adjust_pvalues,
    compare,
    drift_report,
    wasserstein_sorted,
)


@pytest.mark.parametrize(("n", "m"), [(50, 50), (300, 170), (2000, 5000), (20_000, 19_999)])
def test_ks_and_wasserstein_equal_scipy(n, m):
    rng = np.random.default_rng(n + m)
    ref, cur = rng.normal(0, 1, n), rng.standard_t(4, m) * 1.1 + 0.05
    f = compare(ReferenceProfile.numeric("x", ref), cur)
    ks = ks_2samp(ref, cur, method="asymp")
    assert f.ks == pytest.approx(ks.statistic, abs=1e-12)
    assert f.ks_p == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
    assert f.wasserstein == pytest.approx(wasserstein_distance(ref, cur), rel=1e-9)


def test_ties_and_discrete_values_equal_scipy():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 5, 4000).astype(float)
    cur = rng.integers(0, 7, 3000).astype(float)
    f = compare(ReferenceProfile.numeric("stars", ref), cur)
    assert f.ks == pytest.approx(ks_2samp(ref, cur).statistic, abs=1e-12)
    assert f.wasserstein == pytest.approx(wasserstein_distance(ref, cur), rel=1e-9)


def test_wasserstein_unequal_sizes_matches_scipy_on_many_shapes():
    rng = np.random.default_rng(11)
    for n, m in [(1, 1), (1, 7), (7, 3), (10, 15), (999, 1000)]:
        a, b = np.sort(rng.normal(size=n)), np.sort(rng.exponential(size=m))
        assert wasserstein_sorted(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


def test_binned_tests_match_their_definitions():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(0, 1, 10_000), rng.normal(0.3, 1, 8_000)
    prof = ReferenceProfile.numeric("x", ref, bins=10)
    f = compare(prof, cur)
    edges = np.concatenate(([-np.inf], prof.coarse_edges, [np.inf]))
    rc = np.array([np.sum((ref > lo) & (ref <= hi)) for lo, hi in itertools.pairwise(edges)])
    cc = np.array([np.sum((cur > lo) & (cur <= hi)) for lo, hi in itertools.pairwise(edges)])
    p, q = rc / rc.sum(), cc / cc.sum()
    assert f.psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))), rel=1e-9)
    assert f.js_distance == pytest.approx(float(jensenshannon(p, q, base=2)), rel=1e-9)
    chi = chi2_contingency(np.vstack([rc, cc]), correction=False)
    assert f.chi2 == pytest.approx(chi[0], rel=1e-9)
    assert f.cramers_v == pytest.approx(math.sqrt(chi[0] / (rc.sum() + cc.sum())), rel=1e-9)
    assert prof.coarse_counts.tolist() == rc.tolist()


def test_effect_size_gates_significance_on_large_windows():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 200_000)
    refs = {"tiny": ReferenceProfile.numeric("tiny", ref), "big": ReferenceProfile.numeric("big", ref),
            "same": ReferenceProfile.numeric("same", ref)}
    cur = {"tiny": rng.normal(0.02, 1, 200_000), "big": rng.normal(0.8, 1, 200_000), "same": rng.normal(0, 1, 200_000)}
    rep = drift_report(refs, cur)
    by = rep.by_feature()
    assert by["tiny"].ks_p_adjusted < 0.05  # significant...
    assert not by["tiny"].drifted  # ...but too small to matter
    assert by["big"].drifted and by["big"].psi > 0.2
    assert not by["same"].drifted
    assert rep.drifted == ["big"]


def test_categorical_drift_includes_unseen_categories():
    ref = ReferenceProfile.categorical("action", {"allow": 900, "drop": 100})
    f = compare(ref, {"allow": 500, "drop": 400, "label": 100})
    assert f.kind == "categorical" and f.ks is None
    assert f.psi > 0.2 and f.chi2_p < 1e-10
    same = compare(ref, ["allow"] * 90 + ["drop"] * 10)
    assert same.psi == pytest.approx(0.0, abs=1e-12)


def test_corrections():
    p = [0.01, 0.04, 0.03, 0.5]
    assert adjust_pvalues(p, "holm").tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert adjust_pvalues(p, "bh").tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert adjust_pvalues(p, "none").tolist() == p
    with pytest.raises(BadInput, match="unknown multiple-testing correction"):
        adjust_pvalues(p, "bonferonni")


def test_bad_input_names_the_feature():
    ref = ReferenceProfile.numeric("latency", [1.0, 2.0, 3.0])
    with pytest.raises(BadInput, match=r"latency.*no finite values"):
        compare(ref, [math.nan, math.inf])
    with pytest.raises(BadInput, match="not numeric"):
        compare(ref, ["a", "b"])
    with pytest.raises(BadInput, match="no values for feature"):
        drift_report({"latency": ref}, {})
    with pytest.raises(BadInput, match="at least 2 bins"):
        ReferenceProfile.numeric("x", [1.0, 2.0], bins=1)
    f = compare(ref, [1.0, math.nan, 2.0])
    assert f.n_missing == 1 and f.n_current == 2


def test_thresholds_are_configurable():
    rng = np.random.default_rng(2)
    ref = ReferenceProfile.numeric("x", rng.normal(0, 1, 20_000))
    cur = {"x": rng.normal(0.05, 1, 20_000)}
    assert not drift_report({"x": ref}, cur).drifted
    assert drift_report({"x": ref}, cur, thresholds=Thresholds(ks=0.01)).drifted == ["x"]
