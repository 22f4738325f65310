"""Precision, recall, F1 and AUROC with 95% percentile-bootstrap intervals, threshold choice,
and calibration error.

The bootstrap is written out (rather than ``scipy.stats.bootstrap``) so that one set of resampled
indices serves all four metrics and both the model and its baselines: the intervals of things
compared side by side come from the same resamples.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

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


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> float:
    """Mean |observed rate - mean probability| over equal-width probability bins, weighted by size."""
    labels = np.asarray(labels, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(labels[mask].mean() - probs[mask].mean())
    return float(error)


def evaluate(labels: np.ndarray, systems: dict[str, tuple[np.ndarray, float]], n_bootstrap: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict[str, dict]:
    """For each system ``name -> (scores, threshold)``: precision, recall, F1 (at the threshold)
    and AUROC, each ``{"value", "ci95": [lo, hi]}``, from the same bootstrap resamples."""
    labels = np.asarray(labels, dtype=bool)
    n = len(labels)
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, n, size=(n_bootstrap, n)) if n else np.zeros((0, 0), dtype=int)
    out: dict[str, dict] = {}
    for name, (scores, threshold) in systems.items():
        scores = np.asarray(scores, dtype=float)
        predicted = scores >= threshold
        precision, recall, f1 = _prf(labels, predicted)
        point = {"precision": precision, "recall": recall, "f1": f1, "auroc": _auroc(labels, scores)}
        samples: dict[str, list[float]] = {k: [] for k in point}
        for idx in resamples:
            y, s, p = labels[idx], scores[idx], predicted[idx]
            pr, rc, f = _prf(y, p)
            samples["precision"].append(pr)
            samples["recall"].append(rc)
            samples["f1"].append(f)
            samples["auroc"].append(_auroc(y, s))
        result = {}
        for key, value in point.items():
            values = np.asarray(samples[key], dtype=float)
            values = values[~np.isnan(values)]
            ci = [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))] if len(values) else [float("nan")] * 2
            result[key] = {"value": round(float(value), 4), "ci95": [round(c, 4) for c in ci]}
        result["threshold"] = round(float(threshold), 6)
        result["positive_rate"] = round(float(predicted.mean()) if n else 0.0, 4)
        out[name] = result
    return out
