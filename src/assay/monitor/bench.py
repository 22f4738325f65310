"""``assay bench monitor``: drift tests over 1M-value windows and alert evaluation per window,
each beside the scipy / plain-Python version measured in the same run, prepared the same way and
timed the same number of times (the median of ``repeats`` calls each).

- ``drift_ms_per_feature_1m``: all five drift tests (PSI, Wasserstein-1, Jensen-Shannon, KS,
  chi-square) of one feature, a current window of 1M values against a reference of 1M values
  prepared once (``ReferenceProfile.numeric``: sorted, binned). Baseline: scipy
  (``ks_2samp``, ``wasserstein_distance``, ``jensenshannon``, ``chi2_contingency``) with its
  reference prepared once as well (sorted, quantile bin edges and reference counts computed
  once; see :func:`scipy_prepared`). The median over features and repeats; target <= 100 ms.
  Both preparations are timed too (``reference_prepare_ms``, ``scipy_prepare_ms``).
- ``alert_eval_ms_per_window``: window statistics of a window of decisions from columns plus the
  bundle's alert rules (``check_alerts``). Baseline: the per-record Python loop (``naive_stats``)
  over the same decisions as dicts, plus the same rules.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from assay.records import BenchResult, at_most

ALERTS_YAML = """\
bundle: bench-monitor
version: "1"
attributes:
  alerts:
    window.n: int
    window.drop_rate: double
    window.fallback_rate: double
    window.rule_rate: map(string, double)
alerts:
  - id: drop-surge
    when: window.n >= 100 && window.drop_rate > 0.2
    severity: page
    then: ['notify("drop surge")']
  - id: fallback-high
    when: window.fallback_rate > 0.5
    severity: warn
  - id: rule-hot
    when: '"teen-mature-drop" in window.rule_rate && window.rule_rate["teen-mature-drop"] > 0.3'
    severity: warn
"""


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _decision_columns(n: int, rng: np.random.Generator) -> dict:
    import pyarrow as pa

    actions = np.array(["allow", "drop", "demote", "label"])[rng.choice(4, n, p=[0.7, 0.15, 0.1, 0.05])]
    rules = [["teen-mature-drop"] if a == "drop" else [] for a in actions]
    return {
        "action": pa.array(actions).dictionary_encode(),
        "request_id": pa.array((np.arange(n) // 50).astype(str)),
        "rule_ids": pa.array(rules, type=pa.list_(pa.string())),
        "breaker_state": pa.array(np.where(rng.random(n) < 0.01, "open", "closed")).dictionary_encode(),
        "score_before": pa.array(rng.random(n)),
    }


def scipy_prepared(reference: np.ndarray, bins: int = 10):
    """scipy's five tests with the reference prepared once, as ``ReferenceProfile`` prepares the
    measured path: sorted, its right-closed quantile bins and their counts found once, the way the
    oracle ``naive_compare`` finds them on every call (the same statistics; the bench checks it)."""
    import math
    from fractions import Fraction

    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

    from assay.monitor.drift import PSI_EPS

    ref = np.sort(np.asarray(reference, dtype=float))
    edges = np.unique(ref[[math.ceil(Fraction(i, bins) * ref.size) - 1 for i in range(1, bins)]])
    edges = edges[edges < ref[-1]]
    rc = np.bincount(np.digitize(ref, edges, right=True), minlength=edges.size + 1)
    p = np.maximum(rc / rc.sum(), PSI_EPS)

    def compare(current: np.ndarray) -> dict[str, float]:
        cc = np.bincount(np.digitize(current, edges, right=True), minlength=edges.size + 1)
        q = np.maximum(cc / cc.sum(), PSI_EPS)
        table = np.vstack([rc, cc])
        table = table[:, table.sum(axis=0) > 0]
        chi = chi2_contingency(table, correction=False) if table.shape[1] >= 2 else (0.0, 1.0)
        ks = ks_2samp(ref, current)
        return {"psi": float(np.sum((q - p) * np.log(q / p))), "js_distance": float(jensenshannon(rc / rc.sum(), cc / cc.sum(), base=2)),
                "chi2": float(chi[0]), "chi2_p": float(chi[1]), "ks": float(ks.statistic), "ks_p": float(ks.pvalue),
                "wasserstein": float(wasserstein_distance(ref, current))}

    return compare


def run(quick: bool = False) -> BenchResult:
    from assay.monitor.drift import ReferenceProfile, compare, naive_compare
    from assay.monitor.engine import Monitor
    from assay.monitor.windows import naive_stats, stats_from_columns
    from assay.policy import load_bundle

    rng = np.random.default_rng(7)
    size = 100_000 if quick else 1_000_000
    n_features = 2 if quick else 4
    repeats = 2 if quick else 5
    shapes = [
        (rng.normal(0, 1, size), rng.normal(0.1, 1.1, size)),
        (rng.exponential(1.0, size), rng.exponential(1.2, size)),
        (rng.beta(2, 5, size), rng.beta(2.2, 5, size)),
        (rng.lognormal(0, 0.5, size), rng.lognormal(0.05, 0.5, size)),
    ][:n_features]
    refs = [ReferenceProfile.numeric(f"f{i}", ref) for i, (ref, _) in enumerate(shapes)]
    scipy_refs = [scipy_prepared(ref) for ref, _ in shapes]
    prep_ms = _median_ms(lambda: ReferenceProfile.numeric("prep", shapes[0][0]), repeats)
    scipy_prep_ms = _median_ms(lambda: scipy_prepared(shapes[0][0]), repeats)
    compare(refs[0], shapes[0][1][:1000])  # warm scipy imports and caches, both paths
    scipy_refs[0](shapes[0][1][:1000])
    fast = [_median_ms(lambda r=r, c=c: compare(r, c), repeats) for r, (_, c) in zip(refs, shapes, strict=True)]
    scipy_ms = [_median_ms(lambda f=f, c=c: f(c), repeats) for f, (_, c) in zip(scipy_refs, shapes, strict=True)]
    # agreement: the fast path gives scipy's answers, and the prepared baseline the oracle's
    f0, s0, n0 = compare(refs[0], shapes[0][1]), scipy_refs[0](shapes[0][1]), naive_compare(*shapes[0])
    agree = abs(f0.ks - n0["ks"]) < 1e-12 and abs(f0.wasserstein - n0["wasserstein"]) < 1e-9 * max(1.0, n0["wasserstein"])
    baseline_agrees = all(abs(s0[k] - n0[k]) <= 1e-9 * max(1.0, abs(n0[k])) for k in n0)

    n_dec = 100_000 if quick else 1_000_000
    cols = _decision_columns(n_dec, rng)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alerts.yaml"
        path.write_text(ALERTS_YAML)
        bundle = load_bundle(path)
    monitor = Monitor(bundle)
    as_dicts = [{"action": a, "request_id": r, "rule_ids": rl, "breaker_state": b}
                for a, r, rl, b in zip(cols["action"].to_pylist(), cols["request_id"].to_pylist(),
                                       cols["rule_ids"].to_pylist(), cols["breaker_state"].to_pylist(), strict=True)]

    def columnar() -> list:
        return monitor.fired_alerts(stats_from_columns(cols, surface="for_you"))

    def naive() -> list:
        s = naive_stats(as_dicts)
        return list(bundle.check_alerts({"window": {"n": s["n"], "drop_rate": s["drop_rate"],
                                                    "fallback_rate": s["fallback_rate"], "rule_rate": s["rule_rate"]}}))

    fired = [a.id for a in columnar()]
    fired_naive = [a.id for a in naive()]
    alert_ms = _median_ms(columnar, repeats)
    alert_naive_ms = _median_ms(naive, repeats)
    ctx = stats_from_columns(cols, surface="for_you").context()
    check_ms = _median_ms(lambda: bundle.check_alerts(ctx), repeats)

    drift_ms = statistics.median(fast)
    scipy_median_ms = statistics.median(scipy_ms)
    return BenchResult(
        figures={
            "drift_ms_per_feature_1m": round(drift_ms, 2),
            "drift_speedup_vs_scipy": round(scipy_median_ms / drift_ms, 2),
            "alert_eval_ms_per_window": round(alert_ms, 2),
            "alert_eval_speedup_vs_loop": round(alert_naive_ms / alert_ms, 1),
            "reference_prepare_ms": round(prep_ms, 2),
        },
        baseline={
            "drift_ms_per_feature_1m_scipy": round(scipy_median_ms, 2),
            "scipy_prepare_ms": round(scipy_prep_ms, 2),
            "alert_eval_ms_per_window_loop": round(alert_naive_ms, 2),
        },
        units={"drift_ms_per_feature_1m": "ms", "drift_speedup_vs_scipy": "x", "alert_eval_ms_per_window": "ms",
               "alert_eval_speedup_vs_loop": "x", "reference_prepare_ms": "ms", "drift_ms_per_feature_1m_scipy": "ms",
               "scipy_prepare_ms": "ms", "alert_eval_ms_per_window_loop": "ms"},
        targets={"drift_ms_per_feature_1m": at_most(100.0, when=f"{size:,} values a window")},
        measures={
            "drift_ms_per_feature_1m": "psi, wasserstein, jensen_shannon, ks and chi_square of one feature against a prepared "
                                       "reference; median over features of the median of repeats",
            "drift_speedup_vs_scipy": "the same five tests with scipy, reference prepared once, same repeats ÷ ours",
            "alert_eval_ms_per_window": "window statistics from decision columns + the bundle's alert rules",
        },
        detail={
            "window_values": size, "reference_values": size, "features": n_features, "repeats": repeats,
            "decisions_per_window": n_dec, "alerts": len(monitor.alerts), "fired": fired,
            "fired_naive": fired_naive, "agrees_with_scipy": agree, "scipy_baseline_agrees_with_oracle": baseline_agrees,
            "per_feature_ms": [round(x, 2) for x in fast], "per_feature_ms_scipy": [round(x, 2) for x in scipy_ms],
            "check_alerts_ms": round(check_ms, 3),
        },
    )
