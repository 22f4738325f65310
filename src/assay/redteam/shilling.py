"""Shilling (profile-injection) attacks on a recommender, detectors, and the mitigation.

Attacks (Lam & Riedl 2004; Mobasher et al. 2007), all "push" attacks on a set of target items.
Each fake profile rates the targets with the maximum rating plus:

- ``random``: filler items rated from N(global mean, global std);
- ``average``: filler items rated from N(item mean, item std) of each filler item;
- ``bandwagon``: the most popular items rated the maximum (selected items) + random fillers;
- ``segment``: items of the targets' segment (sharing the targets' most common genre, the most
  rated of them) rated the maximum, filler items rated the minimum.

``attack_size`` is the number of fake profiles as a share of genuine users (0.03 = 3%);
``filler_size`` the number of filler items as a share of the catalogue.

Detectors score every user (higher = more suspicious):

- RDMA, rating deviation from mean agreement (Chirita et al. 2005);
- WDMA, its weighted variant (Mobasher et al. 2007);
- DegSim, mean Pearson similarity to the k nearest neighbours (Chirita et al. 2005);
- length variance, how far the profile length is from the mean length (Mobasher et al. 2007);
- PCA (PCA-VarSelect, Mehta & Nejdl 2009): users whose z-scored profiles load least on the
  leading principal components of the user covariance.

No maintained library implements these attack models or detectors (the papers' code is not
packaged), so they are written here on numpy/scipy sparse matrices; AUROC comes from
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from assay.errors import BadInput

ATTACKS = ("random", "average", "bandwagon", "segment")
DETECTORS = ("rdma", "wdma", "degsim", "length_variance", "pca")
R_MIN, R_MAX = 0.5, 5.0


@dataclass(frozen=True)
class AttackConfig:
    kind: str = "average"
    attack_size: float = 0.03  # fake profiles / genuine users
    filler_size: float = 0.02  # filler items / catalogue items
    n_targets: int = 5
    selected: int = 10  # bandwagon: popular items; segment: segment items
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise BadInput(f"unknown shilling attack {self.kind!r}; use one of {', '.join(ATTACKS)}")
        if not 0 < self.attack_size <= 1:
            raise BadInput(f"attack_size is a share of genuine users in (0, 1], got {self.attack_size}")
        if not 0 <= self.filler_size < 1:
            raise BadInput(f"filler_size is a share of the catalogue in [0, 1), got {self.filler_size}")
        if self.n_targets < 1:
            raise BadInput(f"n_targets must be >= 1, got {self.n_targets}")


@dataclass
class Injection:
    """The attacked ratings and what was injected."""

    ratings: pd.DataFrame  # genuine + fake, same columns as the input
    fake_users: np.ndarray
    targets: np.ndarray
    config: AttackConfig
    profile_lengths: dict[str, float] = field(default_factory=dict)


def _round_half(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 2) / 2, R_MIN, R_MAX)


def choose_targets(ratings: pd.DataFrame, n: int, seed: int = 0, min_count: int = 5, max_count: int = 30) -> np.ndarray:
    """Unpopular items with some history (pushing them is what an attacker pays for)."""
    counts = ratings.groupby("item_id").size()
    pool = counts[(counts >= min_count) & (counts <= max_count)].index.to_numpy()
    if pool.size < n:
        raise BadInput(f"only {pool.size} items have {min_count}-{max_count} ratings; cannot choose {n} targets")
    return np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))


def inject(ratings: pd.DataFrame, config: AttackConfig, *, targets: Sequence[int] | None = None,
           movies: pd.DataFrame | None = None) -> Injection:
    """Add ``attack_size`` fake profiles of kind ``config.kind`` pushing ``targets``."""
    for col in ("user_id", "item_id", "rating"):
        if col not in ratings.columns:
            raise BadInput(f"ratings need a {col!r} column; got {list(ratings.columns)}")
    rng = np.random.default_rng(config.seed)
    tgt = np.asarray(targets if targets is not None else choose_targets(ratings, config.n_targets, config.seed), np.int64)
    items = np.sort(ratings["item_id"].unique())
    unknown = np.setdiff1d(tgt, items)
    if unknown.size:
        raise BadInput(f"target item(s) not in the ratings: {unknown.tolist()}")
    n_genuine = ratings["user_id"].nunique()
    n_fake = max(1, round(config.attack_size * n_genuine))
    n_filler = round(config.filler_size * items.size)
    stats = ratings.groupby("item_id")["rating"].agg(["mean", "std", "count"])
    stats["std"] = stats["std"].fillna(ratings["rating"].std())
    g_mean, g_std = float(ratings["rating"].mean()), float(ratings["rating"].std())
    popular = stats.sort_values("count", ascending=False).index.to_numpy()
    selected = np.array([], np.int64)
    if config.kind == "bandwagon":
        selected = np.setdiff1d(popular[: config.selected + tgt.size], tgt)[: config.selected]
    elif config.kind == "segment":
        if movies is None or "genres" not in movies.columns:
            raise BadInput("a segment attack needs the movies table with genres (the targets' segment)")
        genres = movies.set_index("item_id")["genres"]
        tg = pd.Series([g for t in tgt for g in genres.get(t, ())]).value_counts()
        if tg.empty:
            raise BadInput("the targets have no genres, so they have no segment")
        seg_genre = tg.index[0]
        in_segment = [i for i in popular if seg_genre in genres.get(i, ()) and i not in set(tgt)]
        selected = np.array(in_segment[: config.selected], np.int64)
    pool = np.setdiff1d(items, np.concatenate([tgt, selected]))
    next_uid = int(ratings["user_id"].max()) + 1
    ts_col = next((c for c in ("ts", "timestamp") if c in ratings.columns), None)
    t_hi = float(ratings[ts_col].max()) if ts_col else 0.0
    t_lo = float(ratings[ts_col].quantile(0.9)) if ts_col else 0.0
    rows = []
    for k in range(n_fake):
        uid = next_uid + k
        filler = rng.choice(pool, min(n_filler, pool.size), replace=False)
        if config.kind in ("random", "bandwagon"):
            fr = _round_half(rng.normal(g_mean, g_std, filler.size))
        elif config.kind == "average":
            st = stats.loc[filler]
            fr = _round_half(rng.normal(st["mean"].to_numpy(), st["std"].to_numpy()))
        else:  # segment: fillers at the minimum
            fr = np.full(filler.size, R_MIN)
        prof_items = np.concatenate([tgt, selected, filler])
        prof_r = np.concatenate([np.full(tgt.size, R_MAX), np.full(selected.size, R_MAX), fr])
        ts = np.sort(rng.uniform(t_lo, t_hi, prof_items.size)) if ts_col else None
        frame = pd.DataFrame({"user_id": uid, "item_id": prof_items, "rating": prof_r})
        if ts_col:
            frame[ts_col] = ts.astype(ratings[ts_col].dtype)
        rows.append(frame)
    fake = pd.concat(rows, ignore_index=True)
    for col in ratings.columns:
        if col not in fake.columns:
            fake[col] = ratings[col].iloc[0] if len(ratings) else None
    fake = fake[ratings.columns].astype(ratings.dtypes.to_dict())
    attacked = pd.concat([ratings, fake], ignore_index=True)
    return Injection(attacked, np.arange(next_uid, next_uid + n_fake), tgt, config,
                     {"fake_profiles": n_fake, "filler_items": int(n_filler), "selected_items": int(selected.size)})


# ---------------------------------------------------------------------------------------------
# detectors


@dataclass
class Matrix:
    users: np.ndarray
    items: np.ndarray
    r: sp.csr_matrix  # users x items, explicit ratings (0 = unrated)


def to_matrix(ratings: pd.DataFrame) -> Matrix:
    users, ui = np.unique(ratings["user_id"].to_numpy(), return_inverse=True)
    items, ii = np.unique(ratings["item_id"].to_numpy(), return_inverse=True)
    r = sp.csr_matrix((ratings["rating"].to_numpy(np.float64), (ui, ii)), shape=(users.size, items.size))
    r.sum_duplicates()
    return Matrix(users, items, r)


def _item_stats(m: Matrix) -> tuple[np.ndarray, np.ndarray]:
    counts = np.diff(m.r.tocsc().indptr).astype(np.float64)
    sums = np.asarray(m.r.sum(axis=0)).ravel()
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), counts


def rdma(m: Matrix) -> np.ndarray:
    mean, count = _item_stats(m)
    coo = m.r.tocoo()
    dev = np.abs(coo.data - mean[coo.col]) / count[coo.col]
    n_u = np.diff(m.r.indptr)
    return np.bincount(coo.row, dev, minlength=m.users.size) / np.maximum(n_u, 1)


def wdma(m: Matrix) -> np.ndarray:
    mean, count = _item_stats(m)
    coo = m.r.tocoo()
    dev = np.abs(coo.data - mean[coo.col]) / count[coo.col] ** 2
    n_u = np.diff(m.r.indptr)
    return np.bincount(coo.row, dev, minlength=m.users.size) / np.maximum(n_u, 1)


def length_variance(m: Matrix) -> np.ndarray:
    n_u = np.diff(m.r.indptr).astype(np.float64)
    centred = n_u - n_u.mean()
    return np.abs(centred) / max(float(np.sum(centred**2)), 1e-12)


def _centred(m: Matrix) -> sp.csr_matrix:
    """Each user's ratings minus that user's mean (rated entries only)."""
    r = m.r.copy().astype(np.float64)
    n_u = np.diff(r.indptr)
    means = np.asarray(r.sum(axis=1)).ravel() / np.maximum(n_u, 1)
    r.data -= np.repeat(means, n_u)
    return r


def degsim(m: Matrix, k: int = 25) -> np.ndarray:
    """Mean Pearson correlation (over co-rated items, user-mean centred) with the k most similar users."""
    c = _centred(m)
    norms = np.sqrt(np.asarray(c.multiply(c).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    cn = sp.diags(1.0 / norms) @ c
    sim = (cn @ cn.T).toarray()
    np.fill_diagonal(sim, -np.inf)
    k = min(k, sim.shape[0] - 1)
    top = -np.partition(-sim, k - 1, axis=1)[:, :k]
    return top.mean(axis=1)


def pca_varselect(m: Matrix, components: int = 3) -> np.ndarray:
    """Suspicion = minus the sum of squared loadings on the leading principal components of the
    users' z-scored profiles (unrated = the user's mean, i.e. z = 0)."""
    c = _centred(m)
    n_u = np.diff(c.indptr)
    sq = np.asarray(c.multiply(c).sum(axis=1)).ravel()
    std = np.sqrt(sq / np.maximum(n_u, 1))
    std[std == 0] = 1.0
    z = sp.diags(1.0 / std) @ c  # users x items
    from scipy.sparse.linalg import svds

    k = max(1, min(components, min(z.shape) - 1))
    u, _, _ = svds(z.astype(np.float64), k=k, random_state=0)
    return -np.sum(u**2, axis=1)


def detector_scores(m: Matrix, which: Sequence[str] = DETECTORS) -> dict[str, np.ndarray]:
    fns = {"rdma": rdma, "wdma": wdma, "degsim": degsim, "length_variance": length_variance, "pca": pca_varselect}
    unknown = sorted(set(which) - set(fns))
    if unknown:
        raise BadInput(f"unknown detector(s) {', '.join(unknown)}; use any of {', '.join(DETECTORS)}")
    return {name: fns[name](m) for name in which}


def combined_score(scores: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the detectors' rank percentiles (scale-free)."""
    from scipy.stats import rankdata

    return np.mean([rankdata(s) / s.size for s in scores.values()], axis=0)


def flag(score: np.ndarray, z: float = 3.0) -> np.ndarray:
    """Users whose robust z-score (median / MAD) of ``score`` exceeds ``z``."""
    med = np.median(score)
    mad = np.median(np.abs(score - med)) * 1.4826
    if mad == 0:
        mad = float(np.std(score)) or 1.0
    return (score - med) / mad > z


@dataclass
class DetectorReport:
    name: str
    auroc: float
    precision: float
    recall: float
    flagged: int

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def evaluate_detectors(m: Matrix, fake_users: np.ndarray, which: Sequence[str] = DETECTORS, z: float = 3.0,
                       votes: int = 2) -> tuple[list[DetectorReport], dict[str, np.ndarray]]:
    """AUROC (threshold-free), and precision/recall of the robust-z flag, per detector; the
    ``combined`` detector ranks by mean rank percentile and flags users that at least ``votes``
    detectors flag. No threshold uses the truth: it only scores the flags."""
    from sklearn.metrics import roc_auc_score

    truth = np.isin(m.users, fake_users)
    if truth.all() or not truth.any():
        raise BadInput("detector evaluation needs both genuine and injected profiles")
    scores = detector_scores(m, which)
    flags = {name: flag(s, z) for name, s in scores.items()}
    scores["combined"] = combined_score(scores)
    flags["combined"] = np.sum(list(flags.values()), axis=0) >= min(votes, len(which))
    out = []
    for name, s in scores.items():
        f = flags[name]
        tp = int((f & truth).sum())
        out.append(DetectorReport(name, float(roc_auc_score(truth, s)), tp / max(int(f.sum()), 1),
                                  tp / int(truth.sum()), int(f.sum())))
    return out, flags
