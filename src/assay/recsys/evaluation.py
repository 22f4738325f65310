"""Offline evaluation of the reference recommender on each user's held-out (latest) interactions.

All metric arithmetic is the evaluation engine's (:mod:`assay.evaluate.recsys_metrics`, which
matches the public peer vectors); this module only produces the recommendation lists, the truth
sets and the groupings, and runs them side by side for the ranker and two baselines (ALS
retrieval order alone, and global popularity).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from assay.evaluate import recsys_metrics as rm
from assay.records import EvaluationResult
from assay.recsys.features import POSITIVE_RATING
from assay.recsys.model import Recommender

SYSTEMS = ("ranker", "retrieval", "popularity")


@dataclass
class Evaluation:
    k: int
    metrics: dict[str, dict[str, dict[str, float]]]  # system -> metric -> Aggregate.to_dict()
    beyond: dict[str, dict[str, float]]  # ranker beyond-accuracy aggregates
    exposure_genre: (
        pd.DataFrame
    )  # genre, exposure_share, ci_low, ci_high, catalogue_share, interaction_share
    exposure_popularity: pd.DataFrame  # bucket, exposure_share, ci..., catalogue_share
    user_groups: dict[str, dict[str, float]]  # ndcg by active/light, gap, ratio
    per_user_ndcg: dict[int, float]
    user_group: dict[int, str]
    recommendations: dict[int, list[int]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "metrics": self.metrics,
            "beyond": self.beyond,
            "exposure_genre": self.exposure_genre.to_dict(orient="records"),
            "exposure_popularity": self.exposure_popularity.to_dict(orient="records"),
            "user_groups": self.user_groups,
        }

    def result(self, rec: Recommender, model_files: dict[str, str]) -> EvaluationResult:
        """The cross-part record (``assay.records.EvaluationResult``) for the ranker's numbers."""
        flat = {
            **{f"{m}@{self.k}": v for m, v in self.metrics["ranker"].items()},
            **self.beyond,
            **{f"ndcg@{self.k}_{g}": v for g, v in self.user_groups.items()},
        }
        return EvaluationResult(
            run_id=uuid.uuid4().hex,
            suite="recsys-offline",
            target=rec.version,
            metrics={k: float(v["value"]) for k, v in flat.items()},
            intervals={k: (float(v["ci_low"]), float(v["ci_high"])) for k, v in flat.items()},
            n={k: int(v["n"]) for k, v in flat.items()},
            gate_verdicts={},
            dataset_hashes=dict(rec.meta.get("dataset", {}).get("manifest", {})),
            model_hashes=model_files,
        )


def _agg(a: rm.Aggregate) -> dict[str, float]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in a.to_dict().items()}


def recommendation_lists(
    rec: Recommender, users: list[int], k: int
) -> dict[str, dict[int, list[int]]]:
    """Top-k lists per user for the ranker, the retrieval order, and popularity."""
    out: dict[str, dict[int, list[int]]] = {s: {} for s in SYSTEMS}
    pop_order = np.argsort(-rec.state.item_count, kind="stable")
    for user in users:
        ids, matrix, _cold = rec.features(user)
        if ids.size == 0:
            continue
        scores = rec.score(matrix)
        out["ranker"][user] = [int(i) for i in ids[np.argsort(-scores, kind="stable")[:k]]]
        out["retrieval"][user] = [int(i) for i in ids[:k]]  # retrieve() returns ALS order
        upos = rec.state.user_index(user)
        seen = set(rec.state.history[upos].indices.tolist()) if upos is not None else set()
        top = [int(rec.state.item_ids[p]) for p in pop_order[: k + len(seen)] if p not in seen][:k]
        out["popularity"][user] = top
    return out


def evaluate(
    rec: Recommender,
    test: pd.DataFrame,
    k: int = 10,
    resamples: int = 500,
    max_users: int | None = None,
) -> Evaluation:
    """Accuracy (with bootstrap intervals), item-side exposure by genre and popularity bucket,
    Gini and APLT, and the gap between active and light users, on ``test`` interactions."""
    truth: dict[int, dict[int, float]] = {}
    for user, item, stars in zip(test["user_id"], test["item_id"], test["rating"], strict=True):
        truth.setdefault(int(user), {})[int(item)] = 2.0 if stars >= POSITIVE_RATING else 1.0
    users = sorted(u for u in truth if rec.state.user_index(u) is not None)
    if max_users:
        users = users[:max_users]
    lists = recommendation_lists(rec, users, k)
    metrics = {
        s: {
            m: _agg(a)
            for m, a in rm.ranking_metrics(lists[s], truth, k, resamples=resamples).items()
        }
        for s in SYSTEMS
    }

    catalogue = [int(i) for i in rec.state.item_ids]
    popularity = {
        int(i): float(c) for i, c in zip(rec.state.item_ids, rec.state.item_count, strict=True)
    }
    beyond = {
        m: _agg(a)
        for m, a in rm.beyond_accuracy_metrics(
            lists["ranker"], catalogue, popularity, k, resamples=resamples
        ).items()
    }

    # item side: exposure by popularity bucket (head = top 20% of rated films, tail = the rest
    # of the rated films below the median, mid in between; unrated films are "unrated")
    counts = rec.state.item_count
    rated = counts > 0
    order = np.sort(counts[rated])[::-1]
    head_min = order[max(math.ceil(0.2 * order.size) - 1, 0)] if order.size else 0
    median = float(np.median(order)) if order.size else 0.0
    bucket = np.where(
        ~rated,
        "unrated",
        np.where(counts >= head_min, "head", np.where(counts > median, "mid", "tail")),
    )
    item_bucket = dict(zip(catalogue, bucket.tolist(), strict=True))
    exp_b = rm.exposure_by_group(lists["ranker"], item_bucket, k, resamples=resamples)
    rows = []
    for b in ("head", "mid", "tail", "unrated"):
        a = exp_b.get(f"exposure_share[{b}]")
        share = float((bucket == b).mean())
        inter = float(counts[bucket == b].sum() / max(counts.sum(), 1))
        rows.append(
            {
                "bucket": b,
                "exposure_share": a.value if a else 0.0,
                "ci_low": a.ci_low if a else 0.0,
                "ci_high": a.ci_high if a else 0.0,
                "catalogue_share": share,
                "interaction_share": inter,
            }
        )
    exposure_popularity = pd.DataFrame(rows)

    # item side: exposure by genre (each genre in turn as a member / non-member split, so films
    # with several genres count for each of them)
    rows = []
    genres = [str(g) for g in rec.state.genres]
    for j, g in enumerate(genres):
        member = rec.state.item_genres[:, j] > 0
        groups = {i: bool(m) for i, m in zip(catalogue, member.tolist(), strict=True)}
        a = rm.exposure_by_group(lists["ranker"], groups, k, resamples=max(resamples // 5, 50)).get(
            "exposure_share[True]"
        )
        rows.append({
            "genre": g, "exposure_share": a.value if a else 0.0, "ci_low": a.ci_low if a else 0.0, "ci_high": a.ci_high if a else 0.0,
            "catalogue_share": float(member.mean()), "interaction_share": float(counts[member].sum() / max(counts.sum(), 1)),
        })  # fmt: skip
    exposure_genre = (
        pd.DataFrame(rows).sort_values("interaction_share", ascending=False).reset_index(drop=True)
    )

    # user side: active vs light (split at the median number of ratings in the training state)
    activity = {u: int(rec.state.user_count[rec.state.user_index(u)]) for u in users}
    cut = float(np.median(list(activity.values()))) if activity else 0.0
    user_group = {u: ("active" if a > cut else "light") for u, a in activity.items()}
    per_user = rm.per_user_metrics(lists["ranker"], truth, k, ["ndcg"])["ndcg"]
    gaps = {
        name: _agg(a)
        for name, a in rm.group_gaps(per_user, user_group, resamples=resamples).items()
    }
    return Evaluation(
        k,
        metrics,
        beyond,
        exposure_genre,
        exposure_popularity,
        gaps,
        per_user,
        user_group,
        lists["ranker"],
    )
