"""Rates corrected for the judge's measured error (Rogan and Gladen, 1978).

A judge with sensitivity Se and specificity Sp that flags a share p of items implies a true
rate of

    pi = (p + Sp - 1) / (Se + Sp - 1),    clipped to [0, 1],

when it is better than chance (Se + Sp > 1). Se and Sp come from the judge's validation against
human labels (the parsed confusion counts of :mod:`assay.judges.validate`), so they are
estimates too.

**Interval: parametric bootstrap.** Each of the three proportions is drawn from its Jeffreys
posterior -- p ~ Beta(k + 1/2, n - k + 1/2) from the k of n items judged positive, Se ~ Beta(tp +
1/2, fn + 1/2) and Sp ~ Beta(tn + 1/2, fp + 1/2) from the validation -- and pushed through the
formula; the 2.5% and 97.5% quantiles of the corrected values are the 95% interval. So the
interval carries both the sampling error of the evaluation and the validation's own
uncertainty (a judge validated on 40 labels gives a wide interval even on 10,000 items).
Draws where the judge is no better than chance (Se + Sp <= 1) are undefined; when more than
2.5% are, the interval is unavailable (NaN) rather than conditional on the rest. Coverage is
checked by simulation in ``tests/judges/test_judges_correction.py``.

The correction assumes the judge's Se and Sp on the evaluated outputs are those measured on the
validation set; the per-source validation table shows how far that holds across sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.stats import DEFAULT_CONFIDENCE, max_undefined_share, rate_interval

RESAMPLES = 4000
SEED = 20240519
METHOD = "rogan-gladen; parametric bootstrap of Jeffreys Beta draws of the observed rate, sensitivity and specificity"


@dataclass(frozen=True)
class CorrectedRate:
    value: float  # Rogan-Gladen estimate, clipped to [0, 1]; NaN when the judge is no better than chance
    ci_low: float
    ci_high: float
    n: int
    raw: float
    raw_ci: tuple[float, float]
    sensitivity: float
    specificity: float
    validation_n: int
    undefined: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"value": _r(self.value), "ci_low": _r(self.ci_low), "ci_high": _r(self.ci_high), "n": self.n,
                "raw": _r(self.raw), "raw_ci": [_r(self.raw_ci[0]), _r(self.raw_ci[1])],
                "sensitivity": _r(self.sensitivity), "specificity": _r(self.specificity),
                "validation_n": self.validation_n, "undefined_draws": self.undefined, "method": METHOD,
                **({"note": self.note} if self.note else {})}


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def rogan_gladen(p: np.ndarray | float, se: np.ndarray | float, sp: np.ndarray | float) -> np.ndarray:
    """The corrected rate (clipped to [0, 1]); NaN where se + sp <= 1."""
    p, se, sp = np.asarray(p, float), np.asarray(se, float), np.asarray(sp, float)
    denom = se + sp - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom > 0, (p + sp - 1.0) / denom, np.nan)
    return np.clip(out, 0.0, 1.0)


def corrected_rate(positives: int, n: int, confusion: dict[str, int], *, confidence: float = DEFAULT_CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = SEED) -> CorrectedRate:
    """The judge-corrected rate of ``positives`` of ``n`` items, given the judge's validation
    ``confusion`` counts ``{tp, fp, fn, tn}`` (parsed items)."""
    try:
        tp, fp, fn, tn = (int(confusion[k]) for k in ("tp", "fp", "fn", "tn"))
    except (KeyError, TypeError, ValueError):
        raise BadInput(f"a correction needs the judge's confusion counts tp, fp, fn, tn; got {confusion!r}") from None
    if min(tp, fp, fn, tn, positives, n) < 0 or positives > n:
        raise BadInput(f"a correction needs non-negative counts and positives <= n (got {positives} of {n}, {confusion})")
    raw_ci = rate_interval(positives, n, confidence)
    raw = positives / n if n else math.nan
    se_hat = tp / (tp + fn) if tp + fn else math.nan
    sp_hat = tn / (tn + fp) if tn + fp else math.nan
    vn = tp + fp + fn + tn
    if n == 0 or tp + fn == 0 or tn + fp == 0:
        why = "no items" if n == 0 else "the validation has no positive or no negative labels: sensitivity or specificity unknown"
        return CorrectedRate(math.nan, math.nan, math.nan, n, raw, raw_ci, se_hat, sp_hat, vn, note=why)
    point = float(rogan_gladen(raw, se_hat, sp_hat))
    rng = np.random.default_rng(seed)
    p = rng.beta(positives + 0.5, n - positives + 0.5, resamples)
    se = rng.beta(tp + 0.5, fn + 0.5, resamples)
    sp = rng.beta(tn + 0.5, fp + 0.5, resamples)
    draws = rogan_gladen(p, se, sp)
    undefined = int(np.isnan(draws).sum())
    alpha = 1.0 - confidence
    if not math.isfinite(point):
        return CorrectedRate(math.nan, math.nan, math.nan, n, raw, raw_ci, se_hat, sp_hat, vn, undefined,
                             note="the judge is no better than chance on its validation (sensitivity + specificity <= 1)")
    if undefined > max_undefined_share(confidence) * resamples:
        return CorrectedRate(point, math.nan, math.nan, n, raw, raw_ci, se_hat, sp_hat, vn, undefined,
                             note=f"{undefined} of {resamples} draws had the judge no better than chance: no interval")
    lo, hi = np.quantile(draws[~np.isnan(draws)], [alpha / 2, 1 - alpha / 2])
    return CorrectedRate(point, float(lo), float(hi), n, raw, raw_ci, se_hat, sp_hat, vn, undefined)


def correct_with(validation: dict[str, Any] | None, positives: int, n: int, *, complement: bool = False,
                 confidence: float = DEFAULT_CONFIDENCE) -> CorrectedRate | None:
    """The correction from a validation summary (``assay.judges.validation_summary``); None when
    the judge was never validated. ``complement``: the rate counts the judge's *negative*
    verdicts (e.g. "answered" = not refused), so the roles of Se and Sp swap."""
    if not validation or not validation.get("validated"):
        return None
    c = dict(validation["parsed_confusion"])
    if complement:  # a negative verdict is the positive event: tn plays tp, fp plays fn
        c = {"tp": c["tn"], "fn": c["fp"], "tn": c["tp"], "fp": c["fn"]}
    return corrected_rate(positives, n, c, confidence=confidence)
