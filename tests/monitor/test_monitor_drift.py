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
    naive_compare,
    wasserstein_sorted,
)


@pytest.mark.parametrize(("n", "m"), [(50, 50), (300, 170), (2000, 5000), (20_000, 19_999)])
def test_ks_and_wasserstein_equal_scipy(n, m):
    rng = np.random.default_rng(n + m)
    ref, cur = rng.normal(0, 1, n), rng.standard_t(4, m) * 1.1 + 0.05
    f = compare(ReferenceProfile.numeric("x", ref), cur)
    ks = ks_2samp(ref, cur)  # scipy's default "auto": exact up to 10,000 values a side
    assert f.ks == pytest.approx(ks.statistic, abs=1e-12)
    assert f.ks_p == pytest.approx(ks.pvalue, rel=1e-9, abs=1e-300)
    assert f.ks_method == ("exact" if max(n, m) <= 10_000 else "asymp")
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


def test_small_windows_use_the_exact_ks_test():
    # 2 values against 3, completely separated: the asymptotic p-value is 0.0, the exact one 0.2
    f = compare(ReferenceProfile.numeric("x", [0.0, 0.1]), [1.0, 2.0, 3.0])
    assert f.ks == 1.0 and f.ks_method == "exact" and f.ks_p == pytest.approx(0.2)
    assert ks_2samp([0.0, 0.1], [1.0, 2.0, 3.0], method="exact").pvalue == pytest.approx(0.2)
    big = compare(ReferenceProfile.numeric("x", np.arange(10_001.0)), np.arange(50.0))
    assert big.ks_method == "asymp"


@pytest.mark.parametrize("correction", ["bh", "holm", "none"])
def test_windows_too_small_to_decide_are_insufficient_data_never_not_drifted(correction):
    refs = {"one": ReferenceProfile.numeric("one", [0.5]), "few": ReferenceProfile.numeric("few", [0.0, 0.1]),
            "ok": ReferenceProfile.numeric("ok", np.linspace(0, 1, 200))}
    cur = {"one": [0.7], "few": [1.0, 2.0, 3.0], "ok": np.linspace(0, 1, 150)}
    rep = drift_report(refs, cur, correction=correction)  # used to raise ValueError (BH) on a NaN p
    by = rep.by_feature()
    for name in ("one", "few"):
        assert by[name].status == "insufficient data" and not by[name].drifted
        assert any("cannot reach" in r for r in by[name].reasons)
    assert by["ok"].status == "not drifted"
    assert rep.insufficient == ["one", "few"] and rep.drifted == []
    assert rep.to_dict()["insufficient_data"] == ["one", "few"]


def test_a_nan_p_value_is_insufficient_data(monkeypatch):
    import assay.monitor.drift as drift

    real = drift.compare

    def nan_ks(ref, current, thresholds=None):
        f = real(ref, current, thresholds)
        if f.feature == "broken":
            f.ks_p = math.nan
        return f

    monkeypatch.setattr(drift, "compare", nan_ks)
    rng = np.random.default_rng(4)
    refs = {k: ReferenceProfile.numeric(k, rng.normal(0, 1, 500)) for k in ("broken", "moved", "same")}
    cur = {"broken": rng.normal(0, 1, 500), "moved": rng.normal(1.5, 1, 500), "same": rng.normal(0, 1, 500)}
    for correction in ("bh", "holm", "none"):
        by = drift.drift_report(refs, cur, correction=correction).by_feature()
        assert by["broken"].status == "insufficient data" and math.isnan(by["broken"].ks_p_adjusted)
        assert by["moved"].status == "drifted" and by["same"].status == "not drifted"


def test_the_oracle_bins_like_the_fast_path_on_edge_values():
    # reference values sit exactly on the quantile edges; right-closed bins in both
    ref = np.repeat(np.arange(10.0), 10)
    cur = np.repeat(np.arange(10.0), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    prof = ReferenceProfile.numeric("x", ref)
    f = compare(prof, cur)
    naive = naive_compare(ref, cur)
    assert prof.coarse_counts.tolist() == [10] * 10
    assert f.psi == pytest.approx(naive["psi"], rel=1e-12) and f.chi2 == pytest.approx(naive["chi2"], rel=1e-12)
    assert f.js_distance == pytest.approx(naive["js_distance"], rel=1e-12)


def test_cli_exits_1_on_insufficient_data(tmp_path, capsys):
    import json

    from assay.cli.main import main

    (tmp_path / "ref.csv").write_text("x\n0.0\n0.1\n")
    (tmp_path / "cur.csv").write_text("x\n1.0\n2.0\n3.0\n")
    assert main(["monitor", "drift", "-r", str(tmp_path / "ref.csv"), "-c", str(tmp_path / "cur.csv"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["insufficient_data"] == ["x"] and out["drifted"] == []
    assert out["features"][0]["status"] == "insufficient data" and out["features"][0]["ks_method"] == "exact"
