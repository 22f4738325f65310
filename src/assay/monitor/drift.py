"""Drift tests between a reference window and a current window, with effect sizes.

Five tests per feature — PSI, Wasserstein-1, Jensen-Shannon distance, two-sample
Kolmogorov-Smirnov and chi-square — each reporting an effect size, and (KS, chi-square) a
p-value that is then corrected across features (Benjamini-Hochberg or Holm).

Why not just call ``scipy.stats.ks_2samp`` and ``wasserstein_distance``: on 1M-value windows they
merge-sort both samples on every call (about 1.5-2 s each here). A monitor compares many
windows against one fixed reference, so the reference is sorted and binned once
(:class:`ReferenceProfile`) and each window costs one sort of its own values:

- KS: the two empirical CDFs are compared at a fine grid of reference quantiles (exact values
  there), which bounds the statistic in every grid cell; only the cells whose upper bound beats
  the best value found are evaluated point by point. The result equals ``ks_2samp``'s statistic
  exactly (tested). The p-value follows scipy's own ``method="auto"`` rule: exact (scipy's
  lattice-path count) when both windows hold at most ``KS_EXACT_MAX_N`` = 10,000 values,
  where the asymptotic distribution is wrong (2 values against 3, completely separated: exact
  0.2, asymptotic 0.0), and scipy's asymptotic ``kstwo`` above.
- Wasserstein-1 is the integral of the distance between the two quantile functions; the
  breakpoints of both are merged arithmetically (no comparison sort), which is exact.
- PSI, Jensen-Shannon (``scipy.spatial.distance.jensenshannon``) and chi-square
  (``scipy.stats.chi2_contingency``) run on the reference's quantile bins.

Bins are right-closed everywhere, in the fast path and in its oracle: (-inf, e0], (e0, e1], ...,
(e_last, inf), with the inner edges taken from the reference's quantiles (so a reference value
equal to an edge counts in the bin that edge closes).

A p-value that is NaN, or a KS test that could not reject at ``alpha`` whatever the data (the
smallest attainable exact p-value, 2 / C(n + m, n), is at least alpha: 1 value against 1, 2
against 3), never reads as "not drifted": the feature's status is "insufficient data", the
multiple-testing correction runs over the features that have a p-value, and the CLI exits 1.

The naive versions (scipy on raw arrays) are kept in :func:`naive_compare` as the benchmark
baseline and as the oracle in tests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from assay.errors import BadInput

PSI_EPS = 1e-6  # floor for a bin's share, so an empty bin gives a large but finite PSI
CORRECTIONS = ("bh", "holm", "none")
KS_EXACT_MAX_N = 10_000  # scipy's ks_2samp(method="auto") rule: exact when both sizes are <= this
DRIFTED, NOT_DRIFTED, INSUFFICIENT = "drifted", "not drifted", "insufficient data"


@dataclass(frozen=True)
class Thresholds:
    """When a feature counts as drifted: a corrected p-value below ``alpha`` is not enough on
    large windows (every tiny shift is "significant" at 1M values), so a test must also show an
    effect at least this large. PSI 0.2 is the usual "significant shift" line."""

    alpha: float = 0.05
    psi: float = 0.2
    ks: float = 0.1
    js: float = 0.1
    cramers_v: float = 0.1
    wasserstein_std: float = 0.1  # Wasserstein-1 in units of the reference standard deviation


@dataclass
class FeatureDrift:
    """All tests for one feature. Effect sizes always; p-values where the test has one."""

    feature: str
    kind: str  # numeric | categorical
    n_reference: int
    n_current: int
    psi: float
    js_distance: float
    chi2: float
    chi2_p: float
    cramers_v: float
    ks: float | None = None
    ks_p: float | None = None
    wasserstein: float | None = None
    wasserstein_std: float | None = None  # wasserstein / reference std (scale-free)
    n_missing: int = 0
    ks_method: str | None = None  # exact | asymp
    ks_p_adjusted: float | None = None
    chi2_p_adjusted: float | None = None
    drifted: bool = False
    status: str = NOT_DRIFTED  # drifted | not drifted | insufficient data
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftReport:
    features: list[FeatureDrift]
    correction: str
    thresholds: Thresholds

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def insufficient(self) -> list[str]:
        """Features whose tests could not decide: neither drifted nor "not drifted"."""
        return [f.feature for f in self.features if f.status == INSUFFICIENT]

    def by_feature(self) -> dict[str, FeatureDrift]:
        return {f.feature: f for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        return {
            "correction": self.correction,
            "thresholds": asdict(self.thresholds),
            "drifted": self.drifted,
            "insufficient_data": self.insufficient,
            "features": [f.to_dict() for f in self.features],
        }


def _clean_numeric(values: Any, where: str) -> tuple[np.ndarray, int]:
    try:
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise BadInput(f"{where}: values are not numeric ({e})") from e
    finite = np.isfinite(arr)
    n_missing = int(arr.size - finite.sum())
    if n_missing:
        arr = arr[finite]
    if arr.size == 0:
        raise BadInput(f"{where}: no finite values to test")
    return arr, n_missing


def _sorted_finite(values: Any, where: str) -> tuple[np.ndarray, int]:
    """Sorted finite values and how many were not finite, in one sort: numpy sorts -inf first and
    +inf then NaN last, so the finite run is found by two binary searches instead of a pass."""
    try:
        arr = np.sort(np.asarray(values, dtype=np.float64).ravel())
    except (TypeError, ValueError) as e:
        raise BadInput(f"{where}: values are not numeric ({e})") from e
    lo = int(np.searchsorted(arr, -np.inf, side="right"))
    hi = int(np.searchsorted(arr, np.inf, side="left"))
    if hi <= lo:
        raise BadInput(f"{where}: no finite values to test")
    return arr[lo:hi], arr.size - (hi - lo)


@dataclass
class ReferenceProfile:
    """The reference window of one feature, prepared once for many comparisons."""

    feature: str
    kind: str
    n: int
    # numeric
    sorted_values: np.ndarray | None = None
    coarse_edges: np.ndarray | None = None  # inner edges of the PSI/JS/chi-square bins
    fine_edges: np.ndarray | None = None  # inner edges of the KS grid
    fine_cdf_counts: np.ndarray | None = None  # reference count <= each fine edge
    std: float = 0.0
    # both
    coarse_counts: np.ndarray | None = None
    categories: tuple[str, ...] = ()

    @classmethod
    def numeric(cls, feature: str, values: Any, bins: int = 10, fine_bins: int = 4096) -> ReferenceProfile:
        if bins < 2:
            raise BadInput(f"feature {feature!r}: need at least 2 bins, got {bins}")
        arr, _ = _clean_numeric(values, f"reference of feature {feature!r}")
        s = np.sort(arr)
        n = s.size
        coarse = np.unique(s[(np.arange(1, bins) * n + bins - 1) // bins - 1])
        coarse = coarse[coarse < s[-1]] if coarse.size and coarse[-1] == s[-1] else coarse
        fine = np.unique(s[(np.arange(1, fine_bins) * n + fine_bins - 1) // fine_bins - 1])
        return cls(
            feature=feature,
            kind="numeric",
            n=n,
            sorted_values=s,
            coarse_edges=coarse,
            fine_edges=fine,
            fine_cdf_counts=np.searchsorted(s, fine, side="right"),
            std=float(s.std()),
            coarse_counts=_bin_counts_sorted(s, coarse),
        )

    @classmethod
    def categorical(cls, feature: str, values: Any) -> ReferenceProfile:
        counts = _category_counts(values, f"reference of feature {feature!r}")
        cats = tuple(sorted(counts))
        return cls(
            feature=feature,
            kind="categorical",
            n=int(sum(counts.values())),
            categories=cats,
            coarse_counts=np.array([counts[c] for c in cats], dtype=np.int64),
        )


def _bin_counts_sorted(sorted_values: np.ndarray, inner_edges: np.ndarray) -> np.ndarray:
    """Counts per bin (-inf, e0], (e0, e1], ..., (e_last, inf) of an already sorted array."""
    cut = np.searchsorted(sorted_values, inner_edges, side="right")
    return np.diff(np.concatenate(([0], cut, [sorted_values.size]))).astype(np.int64)


def _category_counts(values: Any, where: str) -> dict[str, int]:
    if isinstance(values, Mapping):
        out = {}
        for k, v in values.items():
            if not isinstance(v, int | np.integer) or v < 0:
                raise BadInput(f"{where}: count for category {k!r} must be a non-negative integer, got {v!r}")
            out[str(k)] = int(v)
    else:
        import pandas as pd

        series = pd.Series(np.asarray(values, dtype=object).ravel())
        out = {str(k): int(v) for k, v in series.dropna().value_counts().items()}
    if sum(out.values()) == 0:
        raise BadInput(f"{where}: no values to test")
    return out


def _shares(counts: np.ndarray) -> np.ndarray:
    return counts / max(counts.sum(), 1)


def psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    """Population stability index over matching bins."""
    p = np.maximum(_shares(ref_counts), PSI_EPS)
    q = np.maximum(_shares(cur_counts), PSI_EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def _chi2(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, float]:
    from scipy.stats import chi2_contingency

    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0.0
    stat, p, _, _ = chi2_contingency(table, correction=False)
    v = math.sqrt(stat / table.sum()) if table.sum() else 0.0
    return float(stat), float(p), float(v)


def _js(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(_shares(ref_counts), _shares(cur_counts), base=2))


def ks_statistic_sorted(ref: ReferenceProfile, cur_sorted: np.ndarray) -> float:
    """Exact two-sample KS statistic; see the module docstring for the grid-and-refine method."""
    sa = ref.sorted_values
    n, m = sa.size, cur_sorted.size
    edges = ref.fine_edges
    fr = ref.fine_cdf_counts / n  # F_ref at each fine edge (exact)
    fc = np.searchsorted(cur_sorted, edges, side="right") / m  # F_cur at each fine edge (exact)
    best = float(np.max(np.abs(fr - fc))) if edges.size else 0.0
    # cell k covers (edge[k-1], edge[k]]; F values at its left end and right end
    fr_lo = np.concatenate(([0.0], fr))
    fr_hi = np.concatenate((fr, [1.0]))
    fc_lo = np.concatenate(([0.0], fc))
    fc_hi = np.concatenate((fc, [1.0]))
    upper = np.maximum(fr_hi - fc_lo, fc_hi - fr_lo)
    cells = np.flatnonzero(upper > best)
    if cells.size == 0:
        return best
    # evaluate both CDFs at every sample point inside the candidate cells
    ref_cut = np.concatenate(([0], ref.fine_cdf_counts, [n]))
    cur_cut = np.concatenate(([0], np.searchsorted(cur_sorted, edges, side="right"), [m]))
    pts = [sa[ref_cut[k] : ref_cut[k + 1]] for k in cells] + [cur_sorted[cur_cut[k] : cur_cut[k + 1]] for k in cells]
    x = np.concatenate(pts)
    if x.size:
        d = np.abs(np.searchsorted(sa, x, side="right") / n - np.searchsorted(cur_sorted, x, side="right") / m)
        best = max(best, float(d.max()))
    return best


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided asymptotic p-value, the same formula as ``scipy.stats.ks_2samp(method='asymp')``."""
    from scipy.stats import kstwo

    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks_test_pvalue(ref: ReferenceProfile, cur_sorted: np.ndarray, d: float) -> tuple[float, str]:
    """(p-value, method) of the two-sample KS test by scipy's ``auto`` rule: exact when both
    windows are small (scipy's exact method, on the raw values: cheap at these sizes),
    asymptotic otherwise (from the statistic alone: no merge sort of a large reference)."""
    if max(ref.n, cur_sorted.size) <= KS_EXACT_MAX_N:
        from scipy.stats import ks_2samp

        return float(ks_2samp(ref.sorted_values, cur_sorted, method="exact").pvalue), "exact"
    return ks_pvalue(d, ref.n, cur_sorted.size), "asymp"


def ks_min_pvalue(n: int, m: int) -> float:
    """The smallest two-sided exact KS p-value samples of sizes n and m can give (complete
    separation): 2 / C(n + m, n), capped at 1."""
    log_comb = math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)
    return min(1.0, math.exp(math.log(2.0) - log_comb))


def wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Wasserstein-1 between two sorted samples: the integral of |Q_a(u) - Q_b(u)|.

    Quantile-function breakpoints i/n and j/m are compared as integers i*m and j*n and merged by
    arithmetic, so no second sort is needed."""
    n, m = a.size, b.size
    if n == m:
        diff = np.subtract(a, b)
        np.abs(diff, out=diff)
        return float(diff.mean())
    weights, count_a, count_b = _quantile_merge(n, m)
    return float(np.dot(weights, np.abs(np.repeat(a, count_a) - np.repeat(b, count_b))))


@functools.lru_cache(maxsize=4)
def _quantile_merge(n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interval widths and repeat counts of the merged quantile breakpoints for sizes n and m.
    Depends only on the sizes, and a monitor's windows keep their sizes, so it is cached."""
    i = np.arange(1, n + 1, dtype=np.int64)
    j = np.arange(1, m + 1, dtype=np.int64)
    pos_a = (i - 1) + (i * m - 1) // n  # where breakpoint i/n lands in the merged order
    pos_b = (j - 1) + (j * n) // m  # ties: a's breakpoint first (a zero-width interval)
    merged = np.empty(n + m, dtype=np.int64)
    merged[pos_a] = i * m
    merged[pos_b] = j * n
    weights = np.diff(merged, prepend=0) / float(n * m)
    # the quantile index is non-decreasing along the merge, so a repeat replaces a gather
    count_a = np.diff(pos_a, prepend=-1)
    count_a[-1] += 1  # the final zero-width interval after the tie at u = 1
    count_b = np.diff(pos_b, prepend=-1)
    for arr in (weights, count_a, count_b):
        arr.flags.writeable = False
    return weights, count_a, count_b


def compare(ref: ReferenceProfile, current: Any, thresholds: Thresholds | None = None) -> FeatureDrift:
    """Every drift test of one feature's current window against its reference profile."""
    where = f"current window of feature {ref.feature!r}"
    if ref.kind == "categorical":
        counts = _category_counts(current, where)
        unseen = sorted(set(counts) - set(ref.categories))
        cats = list(ref.categories) + unseen
        ref_counts = np.concatenate((ref.coarse_counts, np.zeros(len(unseen), dtype=np.int64)))
        cur_counts = np.array([counts.get(c, 0) for c in cats], dtype=np.int64)
        stat, p, v = _chi2(ref_counts, cur_counts)
        return FeatureDrift(
            feature=ref.feature,
            kind="categorical",
            n_reference=ref.n,
            n_current=int(cur_counts.sum()),
            psi=psi(ref_counts, cur_counts),
            js_distance=_js(ref_counts, cur_counts),
            chi2=stat,
            chi2_p=p,
            cramers_v=v,
        )
    cur, n_missing = _sorted_finite(current, where)
    cur_counts = _bin_counts_sorted(cur, ref.coarse_edges)
    stat, p, v = _chi2(ref.coarse_counts, cur_counts)
    d = ks_statistic_sorted(ref, cur)
    ks_p, ks_method = ks_test_pvalue(ref, cur, d)
    w = wasserstein_sorted(ref.sorted_values, cur)
    return FeatureDrift(
        feature=ref.feature,
        kind="numeric",
        n_reference=ref.n,
        n_current=cur.size,
        psi=psi(ref.coarse_counts, cur_counts),
        js_distance=_js(ref.coarse_counts, cur_counts),
        chi2=stat,
        chi2_p=p,
        cramers_v=v,
        ks=d,
        ks_p=ks_p,
        ks_method=ks_method,
        wasserstein=w,
        wasserstein_std=(w / ref.std) if ref.std > 0 else (0.0 if w == 0 else math.inf),
        n_missing=n_missing,
    )


def adjust_pvalues(pvalues: Sequence[float], method: str = "bh") -> np.ndarray:
    """Multiple-testing correction across features: Benjamini-Hochberg (scipy's
    ``false_discovery_control``), Holm's step-down (not in scipy, so written here), or none.
    NaN p-values (a test that could not run) stay NaN and are left out of the family."""
    p = np.asarray(pvalues, dtype=np.float64)
    if method not in CORRECTIONS:
        raise BadInput(f"unknown multiple-testing correction {method!r}; use one of {', '.join(CORRECTIONS)}")
    out = p.copy()
    ok = ~np.isnan(p)
    if not ok.any() or method == "none":
        return out
    q = p[ok]
    if method == "bh":
        from scipy.stats import false_discovery_control

        out[ok] = false_discovery_control(q, method="bh")
        return out
    order = np.argsort(q)
    k = q.size
    stepped = np.maximum.accumulate((k - np.arange(k)) * q[order])
    holm = np.empty_like(q)
    holm[order] = np.minimum(stepped, 1.0)
    out[ok] = holm
    return out


def _undecidable(f: FeatureDrift, t: Thresholds) -> list[str]:
    """Why this feature's significance tests cannot decide, if they cannot."""
    why = []
    for name, p in (("ks", f.ks_p), ("chi-square", f.chi2_p)):
        if p is not None and math.isnan(p):
            why.append(f"{name} p-value undefined")
    if f.ks is not None and ks_min_pvalue(f.n_reference, f.n_current) >= t.alpha:
        why.append(f"ks cannot reach p < {t.alpha} with {f.n_reference} and {f.n_current} values")
    return why


def _judge(f: FeatureDrift, t: Thresholds) -> None:
    reasons = []
    if f.psi >= t.psi:
        reasons.append(f"psi {f.psi:.3f} >= {t.psi}")
    if f.js_distance >= t.js:
        reasons.append(f"jensen-shannon {f.js_distance:.3f} >= {t.js}")
    if f.ks is not None and f.ks_p_adjusted is not None and f.ks_p_adjusted < t.alpha and f.ks >= t.ks:
        reasons.append(f"ks {f.ks:.3f} >= {t.ks} (adjusted p {f.ks_p_adjusted:.2g})")
    if f.chi2_p_adjusted is not None and f.chi2_p_adjusted < t.alpha and f.cramers_v >= t.cramers_v:
        reasons.append(f"cramer's v {f.cramers_v:.3f} >= {t.cramers_v} (adjusted p {f.chi2_p_adjusted:.2g})")
    if f.wasserstein_std is not None and f.wasserstein_std >= t.wasserstein_std and f.ks_p_adjusted is not None and f.ks_p_adjusted < t.alpha:
        reasons.append(f"wasserstein {f.wasserstein_std:.3f} reference std >= {t.wasserstein_std}")
    undecidable = _undecidable(f, t)
    if undecidable:
        # effect sizes on a window this small are noise: say so rather than "drifted" or "not drifted"
        f.reasons = undecidable + reasons
        f.drifted = False
        f.status = INSUFFICIENT
        return
    f.reasons = reasons
    f.drifted = bool(reasons)
    f.status = DRIFTED if reasons else NOT_DRIFTED


def drift_report(
    references: Mapping[str, ReferenceProfile],
    current: Mapping[str, Any],
    *,
    correction: str = "bh",
    thresholds: Thresholds | None = None,
) -> DriftReport:
    """Test every feature, correct the KS and chi-square p-values across features (each test
    family separately), and mark the features that drifted by both significance and effect,
    and those whose tests could not decide ("insufficient data")."""
    t = thresholds or Thresholds()
    missing = sorted(set(references) - set(current))
    if missing:
        raise BadInput(f"current window has no values for feature(s) {', '.join(missing)}")
    extra = sorted(set(current) - set(references))
    if extra:
        raise BadInput(f"no reference profile for feature(s) {', '.join(extra)}")
    results = [compare(references[name], current[name], t) for name in references]
    numeric = [r for r in results if r.ks_p is not None]
    for r, p in zip(numeric, adjust_pvalues([r.ks_p for r in numeric], correction), strict=True):
        r.ks_p_adjusted = float(p)
    for r, p in zip(results, adjust_pvalues([r.chi2_p for r in results], correction), strict=True):
        r.chi2_p_adjusted = float(p)
    for r in results:
        _judge(r, t)
    return DriftReport(features=results, correction=correction, thresholds=t)


def naive_compare(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> dict[str, float]:
    """The straightforward version: scipy on the raw arrays, bins recomputed each call.
    Benchmark baseline and test oracle. Bins are right-closed, as in the fast path, but found
    independently (``np.digitize(..., right=True)`` over unsorted values); the KS p-value is
    ``ks_2samp``'s default ``auto`` method."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency, ks_2samp, wasserstein_distance

    # the reference's i/bins quantiles ("inverted_cdf": the smallest value whose CDF reaches i/bins)
    # in exact arithmetic: np.quantile's float i/bins * n misplaces some (0.2 * 75 = 15.000000000000002)
    ordered = np.sort(np.asarray(reference, dtype=float))
    at = [math.ceil(Fraction(i, bins) * ordered.size) - 1 for i in range(1, bins)]
    edges = np.unique(ordered[at])
    edges = edges[edges < ordered[-1]]  # an edge at the maximum would close an empty last bin
    rc = np.bincount(np.digitize(reference, edges, right=True), minlength=edges.size + 1)
    cc = np.bincount(np.digitize(current, edges, right=True), minlength=edges.size + 1)
    p = np.maximum(rc / rc.sum(), PSI_EPS)
    q = np.maximum(cc / cc.sum(), PSI_EPS)
    table = np.vstack([rc, cc])
    table = table[:, table.sum(axis=0) > 0]
    chi = chi2_contingency(table, correction=False) if table.shape[1] >= 2 else (0.0, 1.0)
    ks = ks_2samp(reference, current)
    return {
        "psi": float(np.sum((q - p) * np.log(q / p))),
        "js_distance": float(jensenshannon(rc / rc.sum(), cc / cc.sum(), base=2)),
        "chi2": float(chi[0]),
        "chi2_p": float(chi[1]),
        "ks": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "wasserstein": float(wasserstein_distance(reference, current)),
    }
