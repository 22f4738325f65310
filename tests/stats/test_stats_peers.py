"""Every statistic against its peer library on random and edge inputs: kappa, precision, recall,
F1 and AUROC against scikit-learn; ECE against scikit-learn's calibration_curve bins; BH and Holm
against statsmodels; PSI, Jensen-Shannon, chi-square, Cramér's V, KS and Wasserstein against
scipy on the raw arrays (with values on the bin edges, ties and tiny windows)."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)
from statsmodels.stats.multitest import multipletests

from assay.classify.metrics import evaluate as classify_evaluate
from assay.errors import BadInput
from assay.evaluate.report import compute_metrics
from assay.monitor.drift import ReferenceProfile, adjust_pvalues, compare, naive_compare
from assay.stats import calibration_bins, expected_calibration_error


@settings(max_examples=150, deadline=None)
@given(pairs=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=80))
def test_judge_agreement_against_scikit_learn(pairs):
    records = [{"id": str(i), "fields": {"human": h}, "scores": {"pred": p}, "error": None} for i, (p, h) in enumerate(pairs)]
    m = compute_metrics([{"name": "j", "kind": "agreement", "pred": "pred", "label": "human"}], records, resamples=50)
    pred = np.array([p for p, _ in pairs])
    human = np.array([h for _, h in pairs])
    assert m["j_accuracy"].value == pytest.approx(float((pred == human).mean()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(human, pred)
    if math.isnan(kappa) or len(set(pred) | set(human)) == 1:
        assert math.isnan(m["j_kappa"].value)  # one class from both raters: undefined, as in scikit-learn
    else:
        assert m["j_kappa"].value == pytest.approx(kappa, abs=1e-12)
    if human.any():
        assert m["j_recall"].value == pytest.approx(recall_score(human, pred))
    if pred.any():
        assert m["j_precision"].value == pytest.approx(precision_score(human, pred))


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.booleans(), min_size=2, max_size=60), seed=st.integers(0, 2**16), threshold=st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_classifier_metrics_against_scikit_learn(labels, seed, threshold):
    y = np.array(labels)
    scores = np.round(np.random.default_rng(seed).random(y.size), 2)  # rounded: ties, values on the threshold
    got = classify_evaluate(y, {"m": (scores, threshold)}, n_bootstrap=20)["m"]
    pred = scores >= threshold
    assert got["precision"]["value"] == pytest.approx(round(precision_score(y, pred, zero_division=0), 4))
    assert got["recall"]["value"] == pytest.approx(round(recall_score(y, pred, zero_division=0), 4))
    assert got["f1"]["value"] == pytest.approx(round(f1_score(y, pred, zero_division=0), 4))
    if y.all() or not y.any():
        assert math.isnan(got["auroc"]["value"])
    else:
        assert got["auroc"]["value"] == pytest.approx(round(roc_auc_score(y, scores), 4))
    assert got["precision"]["interval"] == "wilson" and got["f1"]["interval"] == "bootstrap"
    assert 0 <= got["auroc"]["undefined"] <= 20


def _ece_by_sklearn_bins(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """ECE from scikit-learn's own binning (calibration_curve, strategy="uniform")."""
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p)  # calibration_curve's rule
    true, pred = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    sizes = np.bincount(which, minlength=bins)
    sizes = sizes[sizes > 0]
    return float(np.sum(sizes / y.size * np.abs(true - pred)))


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 80), seed=st.integers(0, 2**16), bins=st.sampled_from([5, 10, 15]),
       grid=st.sampled_from([None, 10, 20, 100]))
def test_ece_against_scikit_learn_bins(n, seed, bins, grid):
    rng = np.random.default_rng(seed)
    p = rng.random(n) if grid is None else rng.integers(0, grid + 1, n) / grid  # grid: many values on edges
    y = (rng.random(n) < p).astype(int)
    assume(0 < y.sum() < n)  # calibration_curve needs both classes
    assert expected_calibration_error(y, p, bins) == pytest.approx(_ece_by_sklearn_bins(y, p, bins), abs=1e-12)


def test_ece_bins_are_right_closed_at_every_decimal_edge():
    edges = [k / 10 for k in range(11)]
    # exact oracle: the decimal value d in ((m-1)/10, m/10], first bin [0, 0.1]
    expect = [max(0, math.ceil(Fraction(str(d)) * 10) - 1) for d in edges]
    assert calibration_bins(edges, 10).tolist() == expect == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert calibration_bins([0.3, 0.1 + 0.2, 0.6, 0.7, 0.7 + 1e-12, 0.700001], 10).tolist() == [2, 2, 5, 6, 6, 7]
    # hand-computed: probabilities 0.3 (label 1) and 0.35 (label 0) share nothing; 0.3 sits in (0.2, 0.3]
    assert expected_calibration_error([1, 0], [0.3, 0.35]) == pytest.approx(0.5 * 0.7 + 0.5 * 0.35)
    assert math.isnan(expected_calibration_error([], []))
    for labels, probs, message in [([1], [1.2], "within"), ([2], [0.5], "0 or 1"), ([1, 0], [0.5], "one label per"),
                                   ([1], [math.nan], "finite")]:
        with pytest.raises(BadInput, match=message):
            expected_calibration_error(labels, probs)


@settings(max_examples=120, deadline=None)
@given(p=st.lists(st.one_of(st.floats(0, 1), st.just(0.0), st.just(1.0), st.just(math.nan)), min_size=1, max_size=30),
       method=st.sampled_from(["bh", "holm"]))
def test_multiple_testing_against_statsmodels(p, method):
    arr = np.array(p)
    got = adjust_pvalues(arr, method)
    ok = ~np.isnan(arr)
    assert np.isnan(got[~ok]).all()  # a test that could not run stays undecided
    if ok.any():
        expected = multipletests(arr[ok], method="fdr_bh" if method == "bh" else "holm")[1]
        np.testing.assert_allclose(got[ok], expected, rtol=1e-12, atol=1e-15)


def _shape(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    if kind == "normal":
        return rng.normal(0, 1, size)
    if kind == "ties":
        return rng.integers(0, 4, size).astype(float)  # every reference quantile edge is a tied value
    if kind == "constant":
        return np.full(size, 2.5)
    return np.round(rng.exponential(1.0, size), 1)


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 400), m=st.integers(1, 400), seed=st.integers(0, 2**16),
       ref_kind=st.sampled_from(["normal", "ties", "constant", "rounded"]), cur_kind=st.sampled_from(["normal", "ties", "constant", "rounded"]),
       bins=st.sampled_from([2, 5, 10]))
def test_drift_statistics_against_scipy(n, m, seed, ref_kind, cur_kind, bins):
    rng = np.random.default_rng(seed)
    ref, cur = _shape(ref_kind, rng, n), _shape(cur_kind, rng, m)
    f = compare(ReferenceProfile.numeric("x", ref, bins=bins), cur)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        naive = naive_compare(ref, cur, bins=bins)
    for key, got in [("psi", f.psi), ("js_distance", f.js_distance), ("chi2", f.chi2), ("chi2_p", f.chi2_p),
                     ("ks", f.ks), ("ks_p", f.ks_p), ("wasserstein", f.wasserstein)]:
        assert got == pytest.approx(naive[key], rel=1e-9, abs=1e-12), key
    total = n + m
    assert f.cramers_v == pytest.approx(math.sqrt(naive["chi2"] / total), rel=1e-9, abs=1e-12)
