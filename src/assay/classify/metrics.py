"""Precision, recall, F1 and AUROC with 95% intervals, threshold choice, and calibration error.

Precision and recall are rates (true positives among predicted / actual positives) and get the
project's binomial interval (:func:`assay.stats.rate_interval`). F1 and AUROC get a percentile
bootstrap, written out (rather than ``scipy.stats.bootstrap``) so that one set of resampled
indices serves both metrics and both the model and its baselines: the intervals of things
compared side by side come from the same resamples. A resample with one class has no AUROC: such
resamples are counted (``undefined``) and past 2.5% of them the interval is unavailable
(:func:`assay.stats.bootstrap_interval`). ECE is :func:`assay.stats.expected_calibration_error`.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from assay.stats import bootstrap_interval, expected_calibration_error, rate_interval

__all__ = ["BOOTSTRAP_SEED", "N_BOOTSTRAP", "best_threshold", "evaluate", "expected_calibration_error"]

N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 7


def _prf(labels: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(predicted & labels))
    fp = float(np.sum(predicted & ~labels))
    fn = float(np.sum(~predicted & labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (ties: the higher threshold)."""
    labels = np.asarray(labels, dtype=bool)
    candidates = np.unique(scores)
    if len(candidates) > 2000:
        candidates = np.unique(np.quantile(scores, np.linspace(0, 1, 2001)))
    best, best_f1 = 0.5, -1.0
    for t in candidates:
        f1 = _prf(labels, scores >= t)[2]
        if f1 >= best_f1:
            best, best_f1 = float(t), f1
    return best


def _entry(value: float, low: float, high: float, method: str, **extra: int) -> dict:
    return {"value": round(float(value), 4), "ci95": [round(float(low), 4), round(float(high), 4)], "interval": method, **extra}


def evaluate(labels: np.ndarray, systems: dict[str, tuple[np.ndarray, float]], n_bootstrap: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict[str, dict]:
    """For each system ``name -> (scores, threshold)``: precision, recall (binomial intervals),
    F1 and AUROC (bootstrap intervals from the same resamples), each
    ``{"value", "ci95": [lo, hi], "interval": method}``; a bootstrap entry also has ``undefined``."""
    labels = np.asarray(labels, dtype=bool)
    n = len(labels)
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, n, size=(n_bootstrap, n)) if n else np.zeros((0, 0), dtype=int)
    out: dict[str, dict] = {}
    for name, (scores, threshold) in systems.items():
        scores = np.asarray(scores, dtype=float)
        predicted = scores >= threshold
        precision, recall, f1 = _prf(labels, predicted)
        tp = int(np.sum(predicted & labels))
        result = {
            "precision": _entry(precision, *rate_interval(tp, int(predicted.sum())), "wilson"),
            "recall": _entry(recall, *rate_interval(tp, int(labels.sum())), "wilson"),
        }
        point = {"f1": f1, "auroc": _auroc(labels, scores)}
        samples: dict[str, list[float]] = {k: [] for k in point}
        for idx in resamples:
            samples["f1"].append(_prf(labels[idx], predicted[idx])[2])
            samples["auroc"].append(_auroc(labels[idx], scores[idx]))
        for key, value in point.items():
            agg = bootstrap_interval(value, n, samples[key]) if len(samples[key]) else None
            low, high = (agg.ci_low, agg.ci_high) if agg is not None else (float("nan"), float("nan"))
            result[key] = _entry(value, low, high, "bootstrap", undefined=agg.undefined if agg is not None else 0)
        result["threshold"] = round(float(threshold), 6)
        result["positive_rate"] = round(float(predicted.mean()) if n else 0.0, 4)
        out[name] = result
    return out
