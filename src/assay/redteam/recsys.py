"""A shilling attack on the reference recommender (``assay.recsys``), end to end: train clean,
inject fake profiles, retrain, measure, detect, remove the detected profiles, retrain, measure.

Measured on genuine users who have not rated a target:

- ``prediction_shift``: mean change, against the clean model, of the served ranker's score for
  the target items — centred per user on the mean score of a fixed set of reference items,
  because a LambdaMART score has no fixed scale and every retrain moves all scores together
  (``raw_score_shift`` is the uncentred change);
- ``control_shift``: the same for control items of the targets' popularity that nobody pushed —
  how much retraining alone moves scores, so the shift can be read against noise;
- ``rank_percentile``: where a target lands among the reference items (1 = above all of them);
- ``hit_ratio@k``: share of users whose top-k slate contains at least one target, with its 95%
  interval (``hit_ratio_low``/``hit_ratio_high``, :func:`assay.stats.rate_interval`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from assay.redteam.shilling import (
    DETECTORS,
    AttackConfig,
    choose_targets,
    evaluate_detectors,
    inject,
    to_matrix,
)
from assay.stats import rate_interval


@dataclass
class ModelMeasure:
    prediction_shift: float  # user-centred target score, change against the clean model
    control_shift: float  # the same for unpushed control items (retraining noise)
    raw_score_shift: float  # uncentred target score change (moves with the ranker's global scale)
    rank_percentile: float  # mean percentile of a target among the user's reference items (1 = top)
    hit_ratio: float
    pairs: int
    hit_ratio_low: float = 0.0
    hit_ratio_high: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _user_scores(rec: Any, users: np.ndarray, items: np.ndarray, seen: dict[int, set[int]]) -> dict[int, dict[int, float]]:
    """Ranker scores of ``items`` (those the user has not rated) for each user, in one call each."""
    out: dict[int, dict[int, float]] = {}
    for u in users:
        todo = [int(i) for i in items if int(i) not in seen.get(int(u), set())]
        if todo:
            ids, matrix, _ = rec.features(int(u), todo)
            out[int(u)] = dict(zip(ids.tolist(), rec.score(matrix).tolist(), strict=True))
    return out


def _hit_ratio(rec: Any, users: np.ndarray, targets: np.ndarray, k: int) -> tuple[float, float, float]:
    """(share of users with a target in their top k, its 95% interval)."""
    t = set(int(x) for x in targets)
    hits = sum(1 for u in users if t & set(rec.recommend(int(u), k=k).item_ids.tolist()))
    return (hits / max(len(users), 1), *rate_interval(hits, len(users)))


def _centred(scores: dict[int, dict[int, float]], items: np.ndarray, reference: np.ndarray) -> dict[tuple[int, int], tuple[float, float, float]]:
    """(user, item) -> (raw score, score minus the user's mean reference score, percentile among references)."""
    ref = set(int(i) for i in reference)
    out = {}
    for u, by_item in scores.items():
        refs = np.array([v for i, v in by_item.items() if i in ref])
        if refs.size == 0:
            continue
        mean = float(refs.mean())
        for i in items:
            v = by_item.get(int(i))
            if v is not None:
                out[(u, int(i))] = (v, v - mean, float((refs < v).mean()))
    return out


def _measure(rec: Any, base: dict, users: np.ndarray, targets: np.ndarray, controls: np.ndarray, reference: np.ndarray,
             seen: dict[int, set[int]], k: int) -> tuple[ModelMeasure, dict]:
    scores = _user_scores(rec, users, np.concatenate([targets, controls, reference]), seen)
    tgt = _centred(scores, targets, reference)
    ctl = _centred(scores, controls, reference)
    base = base or {"t": tgt, "c": ctl}
    pt = [p for p in tgt if p in base["t"]]
    pc = [p for p in ctl if p in base["c"]]
    hit_ratio, hit_low, hit_high = _hit_ratio(rec, users, targets, k)
    measure = ModelMeasure(
        prediction_shift=float(np.mean([tgt[p][1] - base["t"][p][1] for p in pt])) if pt else 0.0,
        control_shift=float(np.mean([ctl[p][1] - base["c"][p][1] for p in pc])) if pc else 0.0,
        raw_score_shift=float(np.mean([tgt[p][0] - base["t"][p][0] for p in pt])) if pt else 0.0,
        rank_percentile=float(np.mean([v[2] for v in tgt.values()])) if tgt else 0.0,
        hit_ratio=hit_ratio,
        pairs=len(pt),
        hit_ratio_low=hit_low,
        hit_ratio_high=hit_high,
    )
    return measure, base


@dataclass
class ShillingReport:
    attack: dict[str, Any]
    targets: list[int]
    controls: list[int]
    k: int
    users_measured: int
    clean: ModelMeasure
    attacked: ModelMeasure
    mitigated: ModelMeasure
    detectors: list[dict[str, Any]]
    removed: dict[str, int]
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack, "targets": self.targets, "controls": self.controls, "k": self.k,
            "users_measured": self.users_measured, "clean": self.clean.to_dict(), "attacked": self.attacked.to_dict(),
            "mitigated": self.mitigated.to_dict(), "detectors": self.detectors, "removed": self.removed,
            "timings_s": self.timings_s,
        }


def run_shilling(data: Any, attack: AttackConfig, *, train_config: Any = None, k: int = 10, max_users: int = 200,
                 detectors: tuple[str, ...] = DETECTORS, z: float = 3.0, votes: int = 2, n_reference: int = 50,
                 progress: Callable[[str], None] | None = None) -> ShillingReport:
    """Attack, detect, mitigate and measure (see module docstring). ``data`` is an
    ``assay.data.movielens.MovieLens``; ``train_config`` an ``assay.recsys.model.TrainConfig``."""
    from assay.data.movielens import MovieLens
    from assay.recsys.model import TrainConfig, train

    say = progress or (lambda _m: None)
    cfg = train_config or TrainConfig()
    timings: dict[str, float] = {}
    ratings: pd.DataFrame = data.ratings
    targets = choose_targets(ratings, attack.n_targets, attack.seed)
    # controls: unpushed items of the same popularity band
    counts = ratings.groupby("item_id").size()
    band = counts[(counts >= 5) & (counts <= 30)].index.to_numpy()
    controls = np.sort(np.random.default_rng(attack.seed + 1).choice(np.setdiff1d(band, targets), attack.n_targets, replace=False))

    t = time.perf_counter()
    say("training the clean model")
    clean, _ = train(data, cfg)
    timings["train_clean"] = time.perf_counter() - t

    say(f"injecting a {attack.kind} attack ({attack.attack_size:.1%} of users, filler {attack.filler_size:.1%})")
    inj = inject(ratings, attack, targets=targets, movies=data.movies)
    attacked_data = MovieLens(f"{data.name}+{attack.kind}", inj.ratings, data.movies, data.tags, dict(data.manifest))
    t = time.perf_counter()
    say("training on the attacked ratings")
    attacked, _ = train(attacked_data, cfg)
    timings["train_attacked"] = time.perf_counter() - t

    say("running the detectors")
    t = time.perf_counter()
    matrix = to_matrix(inj.ratings)
    reports, flags = evaluate_detectors(matrix, inj.fake_users, detectors, z=z, votes=votes)
    removed_users = matrix.users[flags["combined"]]
    timings["detect"] = time.perf_counter() - t
    n_fake_removed = int(np.isin(removed_users, inj.fake_users).sum())

    say(f"removing {removed_users.size} flagged profiles and retraining")
    mitigated_data = MovieLens(f"{data.name}+{attack.kind}-mitigated",
                               inj.ratings[~inj.ratings["user_id"].isin(removed_users)].reset_index(drop=True),
                               data.movies, data.tags, dict(data.manifest))
    t = time.perf_counter()
    mitigated, _ = train(mitigated_data, cfg)
    timings["train_mitigated"] = time.perf_counter() - t

    say("measuring prediction shift and hit ratio")
    t = time.perf_counter()
    genuine = np.sort(ratings["user_id"].unique())
    genuine = np.setdiff1d(genuine, removed_users)  # measured on users every model still serves
    rng = np.random.default_rng(attack.seed + 2)
    users = np.sort(rng.choice(genuine, min(max_users, genuine.size), replace=False))
    seen = ratings[ratings["user_id"].isin(users)].groupby("user_id")["item_id"].apply(lambda s: set(s.tolist())).to_dict()
    pool = np.setdiff1d(counts[counts >= 5].index.to_numpy(), np.concatenate([targets, controls]))
    reference = np.sort(rng.choice(pool, min(n_reference, pool.size), replace=False))
    m_clean, base = _measure(clean, {}, users, targets, controls, reference, seen, k)
    m_att, _ = _measure(attacked, base, users, targets, controls, reference, seen, k)
    m_mit, _ = _measure(mitigated, base, users, targets, controls, reference, seen, k)
    timings["measure"] = time.perf_counter() - t
    return ShillingReport(
        attack={"kind": attack.kind, "attack_size": attack.attack_size, "filler_size": attack.filler_size,
                "n_targets": attack.n_targets, "seed": attack.seed, **inj.profile_lengths},
        targets=targets.tolist(), controls=controls.tolist(), k=k, users_measured=int(users.size),
        clean=m_clean, attacked=m_att, mitigated=m_mit, detectors=[r.to_dict() for r in reports],
        removed={"profiles": int(removed_users.size), "fake": n_fake_removed,
                 "genuine": int(removed_users.size) - n_fake_removed, "fake_total": int(inj.fake_users.size)},
        timings_s={k2: round(v, 2) for k2, v in timings.items()},
    )
