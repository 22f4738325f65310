"""Why a film was promoted, in terms of named signals.

Attributions are LightGBM's native TreeSHAP (``predict(pred_contrib=True)``): for every
candidate, one additive contribution per named feature plus the model's expected value, summing
exactly to the ranker's raw score. "Why is A above B" is the difference of the two candidates'
attributions *computed on the request's own candidate set* (the retrieval rank feature depends
on the other candidates), and the differences sum exactly to score(A) - score(B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.recsys.features import FEATURE_GROUPS, FEATURE_NAMES, FEATURES
from assay.recsys.model import Recommender

DESCRIPTIONS = {f.name: f.description for f in FEATURES}


@dataclass
class Attribution:
    """TreeSHAP attributions of one request's candidates, rows aligned with ``item_ids``."""

    item_ids: np.ndarray
    scores: np.ndarray
    values: np.ndarray  # (n, n_features) feature values (NaN = missing signal)
    contributions: np.ndarray  # (n, n_features)
    expected_value: float
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def row(self, item_id: int) -> int:
        hits = np.flatnonzero(self.item_ids == int(item_id))
        if hits.size == 0:
            raise BadInput(
                f"item {item_id} is not in this request's candidate set",
                hint="pass it in --candidates, or pick one of the recommended items",
            )
        return int(hits[0])

    def as_dict(self, item_id: int) -> dict[str, float]:
        """``{feature: contribution}`` for one candidate (what ``Decision.attribution`` holds)."""
        r = self.row(item_id)
        return {
            name: round(float(c), 6)
            for name, c in zip(self.feature_names, self.contributions[r], strict=True)
        }

    def by_group(self) -> dict[str, np.ndarray]:
        """Contributions summed per signal family (user activity, genre affinity, ...)."""
        groups: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.feature_names):
            g = FEATURE_GROUPS[name]
            groups[g] = groups.get(g, 0) + self.contributions[:, j]
        return groups


_TABLES: dict[
    int, tuple[Any, Any]
] = {}  # id(booster) -> (booster, TreeTables); holds the booster so ids stay unique


def shap_tables(booster: Any) -> Any | None:
    """The fast TreeSHAP tables of a booster (built once), or None when numba is missing or the
    model has splits the fast path does not support (then LightGBM's pred_contrib is used)."""
    hit = _TABLES.get(id(booster))
    if hit is not None and hit[0] is booster:
        return hit[1]
    from assay.errors import AssayError
    from assay.explain.treeshap import compile_model

    try:
        tables = compile_model(booster)
    except AssayError:
        return None
    _TABLES[id(booster)] = (booster, tables)
    return tables


def contributions(rec: Recommender, features: np.ndarray, method: str = "auto") -> np.ndarray:
    """TreeSHAP contributions (n, n_features + 1; last column = expected value).

    ``method``: ``lightgbm`` = LightGBM's ``pred_contrib`` (the reference); ``fast`` = the
    tabulated exact path (:mod:`assay.explain.treeshap`, same numbers, ~10x faster); ``auto`` =
    fast when available, else lightgbm."""
    if method not in ("auto", "fast", "lightgbm"):
        raise BadInput(f"unknown attribution method {method!r}; use auto, fast or lightgbm")
    if method != "lightgbm" and features.shape[0]:
        tables = shap_tables(rec.booster)
        if tables is not None:
            from assay.explain.treeshap import contributions as fast

            return fast(tables, features)
        if method == "fast":
            raise BadInput(
                "the fast TreeSHAP path is not available for this model (numba missing or unsupported splits)"
            )
    return rec.contributions(features)


def attribute(
    rec: Recommender, item_ids: np.ndarray, features: np.ndarray, method: str = "auto"
) -> Attribution:
    """Attributions for a candidate set whose features are already computed."""
    contrib = contributions(rec, features, method)
    scores = contrib.sum(axis=1)
    expected = float(contrib[0, -1]) if contrib.shape[0] else float("nan")
    return Attribution(np.asarray(item_ids), scores, features, contrib[:, :-1], expected)


def explain_request(
    rec: Recommender,
    user_id: int | None,
    *,
    candidates: list[int] | None = None,
    history: list[tuple[int, float]] | None = None,
) -> tuple[Attribution, bool]:
    """Attributions for every candidate of one request, ranked best first; and whether the
    request was a cold start."""
    ids, matrix, cold = rec.features(user_id, candidates, history=history)
    att = attribute(rec, ids, matrix)
    order = np.argsort(-att.scores, kind="stable")
    return Attribution(
        att.item_ids[order],
        att.scores[order],
        att.values[order],
        att.contributions[order],
        att.expected_value,
    ), cold


def top_signals(att: Attribution, item_id: int, n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` features with the largest absolute contribution for one candidate."""
    r = att.row(item_id)
    order = np.argsort(-np.abs(att.contributions[r]), kind="stable")[:n]
    return [
        {
            "feature": att.feature_names[j],
            "group": FEATURE_GROUPS[att.feature_names[j]],
            "value": _num(att.values[r, j]),
            "contribution": float(att.contributions[r, j]),
            "meaning": DESCRIPTIONS[att.feature_names[j]],
        }
        for j in order
    ]


@dataclass
class PairExplanation:
    item_a: int
    item_b: int
    score_a: float
    score_b: float
    rank_a: int  # 1-based, in the request's ranked candidate set
    rank_b: int
    differences: list[
        dict[str, Any]
    ]  # per feature: value_a, value_b, contribution_a, contribution_b, difference

    @property
    def a_above_b(self) -> bool:
        return self.score_a > self.score_b

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_a": self.item_a,
            "item_b": self.item_b,
            "score_a": self.score_a,
            "score_b": self.score_b,
            "rank_a": self.rank_a,
            "rank_b": self.rank_b,
            "a_above_b": self.a_above_b,
            "differences": self.differences,
        }


def why_above(att: Attribution, item_a: int, item_b: int) -> PairExplanation:
    """Per-feature difference of attributions between A and B on the same candidate set,
    largest first. The differences sum to ``score_a - score_b``."""
    if int(item_a) == int(item_b):
        raise BadInput("compare two different items")
    ra, rb = att.row(item_a), att.row(item_b)
    rank = np.empty(att.scores.size, int)
    rank[np.argsort(-att.scores, kind="stable")] = np.arange(1, att.scores.size + 1)
    diff = att.contributions[ra] - att.contributions[rb]
    order = np.argsort(-np.abs(diff), kind="stable")
    rows = [
        {"feature": att.feature_names[j], "group": FEATURE_GROUPS[att.feature_names[j]], "value_a": _num(att.values[ra, j]), "value_b": _num(att.values[rb, j]),
         "contribution_a": float(att.contributions[ra, j]), "contribution_b": float(att.contributions[rb, j]), "difference": float(diff[j])}
        for j in order
    ]  # fmt: skip
    return PairExplanation(
        int(item_a),
        int(item_b),
        float(att.scores[ra]),
        float(att.scores[rb]),
        int(rank[ra]),
        int(rank[rb]),
        rows,
    )


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)
