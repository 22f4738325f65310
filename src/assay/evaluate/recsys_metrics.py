"""Recommender metrics: ranking accuracy, beyond-accuracy, popularity bias, exposure, calibration
and user-group gaps.

Written here rather than imported because no single maintained library covers this set with
the conventions we need and agrees with the public peer vectors (``recsys_peer_vectors``):
each library picks different defaults (log base, IDCG truncation, user averaging, Gini
normaliser). Every convention is explicit below and tested against MS Recommenders, RecBole,
LensKit, Evidently, ranx and trec_eval's own test collection.

Conventions (defaults):

- ``ndcg``: DCG = sum_i gain_i / log2(i + 1), i the 1-based rank; negative gains clipped to 0 in
  both DCG and IDCG; IDCG uses the min(|R|, k) best gains of the user's whole truth set
  (``discount="lenskit"`` gives LensKit's 1/log2(max(rank, 2))).
- ``precision@k`` divides by k even when the list is shorter.
- ``map@k`` (AP) normalises by min(|R|, k) (by |R| when k is None, as trec_eval).
- ``mrr`` is the reciprocal rank of the first relevant item within k, 0 when none.
- Users are averaged when they have >= 1 relevant item AND a recommendation list
  (MS Recommenders, Evidently, trec_eval without -c).
- TREC runs are ordered by score descending, ties by docno descending (trec_eval).

Every aggregate is an :class:`assay.evaluate.stats.Aggregate` (value, n, 95% interval: binomial for
the hit rate, a bootstrap over users otherwise).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from assay.evaluate.stats import Aggregate, mean_aggregate, rate_aggregate, statistic_aggregate

Item = Hashable
User = Hashable
Truth = Mapping[Item, float]  # item -> gain (binary relevance: 1.0)

RANKING_METRICS = ("ndcg", "recall", "precision", "mrr", "map", "hit_rate", "rprec")


# --------------------------------------------------------------------------------------------
# per-user ranking metrics


def _discounts(n: int, discount: str) -> np.ndarray:
    ranks = np.arange(1, n + 1, dtype=float)
    if discount == "log2":
        return 1.0 / np.log2(ranks + 1.0)
    if discount == "lenskit":
        return 1.0 / np.log2(np.maximum(ranks, 2.0))
    raise ValueError(f"unknown discount {discount!r}; use 'log2' or 'lenskit'")


def _gain(values: np.ndarray, gain: str) -> np.ndarray:
    values = np.clip(values, 0.0, None)
    if gain == "linear":
        return values
    if gain == "exponential":
        return np.power(2.0, values) - 1.0
    raise ValueError(f"unknown gain {gain!r}; use 'linear' or 'exponential'")


def _top(ranked: Sequence[Item], k: int | None) -> Sequence[Item]:
    return ranked if k is None else ranked[:k]


def _relevant(truth: Truth) -> set[Item]:
    return {item for item, g in truth.items() if g > 0}


def ndcg(
    ranked: Sequence[Item],
    truth: Truth,
    k: int | None = None,
    *,
    gain: str = "linear",
    discount: str = "log2",
) -> float:
    """Normalised DCG of one ranked list; NaN when the user has no positive gain."""
    top = _top(ranked, k)
    gains = _gain(np.array([float(truth.get(i, 0.0)) for i in top]), gain)
    ideal = _gain(np.sort(np.array([float(g) for g in truth.values()]))[::-1], gain)
    ideal = ideal[ideal > 0]
    if k is not None:
        ideal = ideal[:k]
    if ideal.size == 0:
        return math.nan
    idcg = float((ideal * _discounts(ideal.size, discount)).sum())
    dcg = float((gains * _discounts(gains.size, discount)).sum()) if gains.size else 0.0
    return dcg / idcg


def recall(ranked: Sequence[Item], truth: Truth, k: int | None = None) -> float:
    """Relevant items retrieved in the top k over all relevant items; NaN without relevant."""
    rel = _relevant(truth)
    if not rel:
        return math.nan
    return sum(1 for i in _top(ranked, k) if i in rel) / len(rel)


def precision(ranked: Sequence[Item], truth: Truth, k: int | None = None) -> float:
    """Relevant items in the top k over k (over the list length when k is None)."""
    rel = _relevant(truth)
    if not rel:
        return math.nan
    top = _top(ranked, k)
    denominator = k if k is not None else len(top)
    if denominator == 0:
        return 0.0
    return sum(1 for i in top if i in rel) / denominator


def reciprocal_rank(ranked: Sequence[Item], truth: Truth, k: int | None = None) -> float:
    """1 / rank of the first relevant item within k, 0 when none; NaN without relevant."""
    rel = _relevant(truth)
    if not rel:
        return math.nan
    for rank, item in enumerate(_top(ranked, k), start=1):
        if item in rel:
            return 1.0 / rank
    return 0.0


def average_precision(ranked: Sequence[Item], truth: Truth, k: int | None = None) -> float:
    """AP@k normalised by min(|R|, k) (by |R| when k is None, as trec_eval's map)."""
    rel = _relevant(truth)
    if not rel:
        return math.nan
    hits = 0
    total = 0.0
    for rank, item in enumerate(_top(ranked, k), start=1):
        if item in rel:
            hits += 1
            total += hits / rank
    denominator = len(rel) if k is None else min(len(rel), k)
    return total / denominator


def hit_rate(ranked: Sequence[Item], truth: Truth, k: int | None = None) -> float:
    """1 when any relevant item is in the top k, else 0; NaN without relevant."""
    rel = _relevant(truth)
    if not rel:
        return math.nan
    return 1.0 if any(i in rel for i in _top(ranked, k)) else 0.0


def r_precision(ranked: Sequence[Item], truth: Truth, k: int | None = None) -> float:
    """Precision at rank |R| (trec_eval ``Rprec``); ``k`` is ignored."""
    rel = _relevant(truth)
    if not rel:
        return math.nan
    return sum(1 for i in ranked[: len(rel)] if i in rel) / len(rel)


_PER_USER = {
    "ndcg": ndcg,
    "recall": recall,
    "precision": precision,
    "mrr": reciprocal_rank,
    "map": average_precision,
    "hit_rate": hit_rate,
    "rprec": r_precision,
}


def per_user_metrics(
    recommendations: Mapping[User, Sequence[Item]],
    truth: Mapping[User, Truth],
    k: int | None = 10,
    metrics: Iterable[str] = RANKING_METRICS,
    *,
    gain: str = "linear",
    discount: str = "log2",
) -> dict[str, dict[User, float]]:
    """Per-user values for the users that have a list AND at least one relevant item."""
    names = list(metrics)
    unknown = [m for m in names if m not in _PER_USER]
    if unknown:
        raise ValueError(f"unknown ranking metric(s) {unknown}; known: {sorted(_PER_USER)}")
    out: dict[str, dict[User, float]] = {m: {} for m in names}
    for user, ranked in recommendations.items():
        user_truth = truth.get(user)
        if not user_truth or not _relevant(user_truth):
            continue
        ranked = list(ranked)
        for m in names:
            if m == "ndcg":
                out[m][user] = ndcg(ranked, user_truth, k, gain=gain, discount=discount)
            else:
                out[m][user] = _PER_USER[m](ranked, user_truth, k)
    return out


def ranking_metrics(
    recommendations: Mapping[User, Sequence[Item]],
    truth: Mapping[User, Truth],
    k: int | None = 10,
    metrics: Iterable[str] = RANKING_METRICS,
    *,
    gain: str = "linear",
    discount: str = "log2",
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Mean over users of each ranking metric, with n users and a 95% interval: binomial for
    ``hit_rate`` (a share of users), bootstrap over users for the others."""
    per_user = per_user_metrics(recommendations, truth, k, metrics, gain=gain, discount=discount)
    return {
        name: rate_aggregate(list(values.values())) if name == "hit_rate" else mean_aggregate(list(values.values()), resamples=resamples)
        for name, values in per_user.items()
    }


# --------------------------------------------------------------------------------------------
# TREC files (trec_eval layout)


def read_trec_qrels(path: str | Path) -> dict[str, dict[str, float]]:
    """``qid iter docno rel`` lines -> {qid: {docno: rel}} (all judgements, incl. 0)."""
    qrels: dict[str, dict[str, float]] = defaultdict(dict)
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise ValueError(f"{path}:{lineno}: expected 'qid iter docno rel', got {line!r}")
        qrels[parts[0]][parts[2]] = float(parts[3])
    return dict(qrels)


def read_trec_run(path: str | Path) -> dict[str, list[str]]:
    """``qid Q0 docno rank score tag`` lines -> {qid: [docno, ...]} ordered as trec_eval does
    (score descending, ties by docno descending; the rank column is ignored)."""
    rows: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise ValueError(f"{path}:{lineno}: expected 'qid Q0 docno rank score tag', got {line!r}")
        rows[parts[0]].append((float(parts[4]), parts[2]))
    return {
        qid: [doc for _, doc in sorted(entries, key=lambda e: (e[0], e[1]), reverse=True)]
        for qid, entries in rows.items()
    }


# --------------------------------------------------------------------------------------------
# beyond accuracy: coverage, concentration, popularity


def _item_counts(recommendations: Mapping[User, Sequence[Item]], k: int | None) -> Counter:
    counts: Counter = Counter()
    for ranked in recommendations.values():
        counts.update(_top(list(ranked), k))
    return counts


def _catalogue_counts(counts: Mapping[Item, int], catalogue: Iterable[Item] | int) -> np.ndarray:
    if isinstance(catalogue, int):
        values = list(counts.values())
        if len(values) > catalogue:
            raise ValueError(f"{len(values)} distinct items recommended but the catalogue has {catalogue}")
        return np.array(values + [0] * (catalogue - len(values)), dtype=float)
    return np.array([counts.get(i, 0) for i in catalogue], dtype=float)


def item_coverage(
    recommendations: Mapping[User, Sequence[Item]], catalogue: Iterable[Item] | int, k: int | None = None
) -> float:
    """Share of the catalogue recommended to at least one user."""
    counts = _catalogue_counts(_item_counts(recommendations, k), catalogue)
    return float((counts > 0).sum() / counts.size) if counts.size else math.nan


def gini_from_counts(counts: np.ndarray, convention: str = "recbole") -> float:
    """Gini index of recommendation counts over the catalogue.

    - ``recbole`` (= LensKit ListGini): sum_i (2i-n-1) x_(i) / (n sum x), zeros included.
    - ``elliot``: 1 - sum_j (2j-n-1) p_(j) / (n-1), p the count shares (Elliot reports the
      complement, a diversity score).
    - ``evidently``: never-recommended items dropped, normalised by (n-1).
    """
    x = np.sort(np.asarray(counts, dtype=float))
    if convention == "evidently":
        x = x[x > 0]
    n = x.size
    total = x.sum()
    if n == 0 or total == 0:
        return math.nan
    i = np.arange(1, n + 1, dtype=float)
    weighted = float(((2 * i - n - 1) * x).sum())
    if convention == "recbole":
        return weighted / (n * total)
    if convention == "elliot":
        return 1.0 - weighted / total / (n - 1)
    if convention == "evidently":
        return weighted / ((n - 1) * total)
    raise ValueError(f"unknown Gini convention {convention!r}; use recbole, elliot or evidently")


def gini_index(
    recommendations: Mapping[User, Sequence[Item]],
    catalogue: Iterable[Item] | int,
    k: int | None = None,
    convention: str = "recbole",
) -> float:
    """Concentration of recommendations over the catalogue (0 = even, -> 1 = one item)."""
    return gini_from_counts(_catalogue_counts(_item_counts(recommendations, k), catalogue), convention)


def shannon_entropy(recommendations: Mapping[User, Sequence[Item]], k: int | None = None) -> float:
    """Textbook entropy (nats) of the share of recommendations each item gets."""
    counts = np.array(list(_item_counts(recommendations, k).values()), dtype=float)
    if counts.sum() == 0:
        return math.nan
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def long_tail_items(popularity: Mapping[Item, float], head_fraction: float = 0.2) -> set[Item]:
    """Items outside the short head, the head being the top ``head_fraction`` of items by
    popularity (Abdollahpouri et al., 2019). Ties at the boundary go to the head."""
    ordered = sorted(popularity.items(), key=lambda kv: kv[1], reverse=True)
    head_size = math.ceil(head_fraction * len(ordered))
    if head_size and head_size < len(ordered):
        threshold = ordered[head_size - 1][1]
        return {item for item, pop in ordered if pop < threshold}
    return {item for item, _ in ordered[head_size:]}


def average_recommendation_popularity(
    recommendations: Mapping[User, Sequence[Item]], popularity: Mapping[Item, float], k: int | None = None
) -> dict[User, float]:
    """ARP per user: mean training popularity of the items in the user's list."""
    out = {}
    for user, ranked in recommendations.items():
        top = list(_top(list(ranked), k))
        if top:
            out[user] = float(np.mean([popularity.get(i, 0.0) for i in top]))
    return out


def average_percentage_long_tail(
    recommendations: Mapping[User, Sequence[Item]], long_tail: set[Item], k: int | None = None
) -> dict[User, float]:
    """APLT per user: share of the user's list that is long-tail (Abdollahpouri et al., 2017)."""
    out = {}
    for user, ranked in recommendations.items():
        top = list(_top(list(ranked), k))
        if top:
            out[user] = sum(1 for i in top if i in long_tail) / len(top)
    return out


def beyond_accuracy_metrics(
    recommendations: Mapping[User, Sequence[Item]],
    catalogue: Sequence[Item],
    popularity: Mapping[Item, float] | None = None,
    k: int | None = 10,
    *,
    head_fraction: float = 0.2,
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Coverage, Gini, entropy (bootstrapped over users) and ARP/APLT (means over users)."""
    users = list(recommendations)
    catalogue = list(catalogue)
    index = {item: j for j, item in enumerate(catalogue)}
    rows = [np.array([index[i] for i in _top(list(recommendations[u]), k) if i in index], dtype=int) for u in users]
    lengths = np.array([r.size for r in rows])
    flat = np.concatenate(rows) if rows else np.array([], dtype=int)
    offsets = np.concatenate([[0], np.cumsum(lengths)])

    def counts_of(idx: np.ndarray) -> np.ndarray:
        if flat.size == 0:
            return np.zeros(len(catalogue))
        picked = np.concatenate([flat[offsets[u] : offsets[u + 1]] for u in idx]) if idx.size else flat[:0]
        return np.bincount(picked, minlength=len(catalogue)).astype(float)

    def entropy_of(idx: np.ndarray) -> float:
        c = counts_of(idx)
        c = c[c > 0]
        p = c / c.sum()
        return float(-(p * np.log(p)).sum())

    out = {
        "coverage": statistic_aggregate(len(users), lambda idx: float((counts_of(idx) > 0).mean()), resamples=resamples),
        "gini": statistic_aggregate(len(users), lambda idx: gini_from_counts(counts_of(idx)), resamples=resamples),
        "entropy": statistic_aggregate(len(users), entropy_of, resamples=resamples),
    }
    if popularity is not None:
        tail = long_tail_items({i: popularity.get(i, 0.0) for i in catalogue}, head_fraction)
        out["arp"] = mean_aggregate(
            list(average_recommendation_popularity(recommendations, popularity, k).values()), resamples=resamples
        )
        out["aplt"] = mean_aggregate(
            list(average_percentage_long_tail(recommendations, tail, k).values()), resamples=resamples
        )
    return out


# --------------------------------------------------------------------------------------------
# exposure (Singh & Joachims 2018; expected exposure, Diaz et al. 2020)


def position_exposure(n: int, model: str = "log2", gamma: float = 0.5) -> np.ndarray:
    """Exposure of ranks 1..n: ``log2`` v_j = 1/log2(1+j) (Singh & Joachims) or ``rbp`` gamma^(j-1)."""
    if model == "log2":
        return _discounts(n, "log2")
    if model == "rbp":
        return np.power(gamma, np.arange(n, dtype=float))
    raise ValueError(f"unknown exposure model {model!r}; use 'log2' or 'rbp'")


def group_exposure(
    ranked: Sequence[Item],
    item_group: Mapping[Item, Hashable],
    relevance: Mapping[Item, float] | None = None,
    *,
    model: str = "log2",
    gamma: float = 0.5,
) -> dict[Hashable, dict[str, float]]:
    """Per group of items in one ranking: mean exposure per item, exposure share of the list
    (AWRF-style), and, given relevance, mean utility and exposure per unit of utility."""
    v = position_exposure(len(ranked), model, gamma)
    per_group: dict[Hashable, list[tuple[float, float]]] = defaultdict(list)
    for rank, item in enumerate(ranked):
        rel = float(relevance.get(item, 0.0)) if relevance is not None else math.nan
        per_group[item_group[item]].append((float(v[rank]), rel))
    total = float(v.sum())
    out: dict[Hashable, dict[str, float]] = {}
    for group, entries in per_group.items():
        exposures = np.array([e for e, _ in entries])
        row = {"exposure": float(exposures.mean()), "share": float(exposures.sum() / total), "n_items": len(entries)}
        if relevance is not None:
            utility = float(np.mean([r for _, r in entries]))
            row["utility"] = utility
            row["exposure_per_utility"] = row["exposure"] / utility if utility else math.nan
        out[group] = row
    return out


def disparate_treatment_ratio(exposure: Mapping[Hashable, Mapping[str, float]], a: Hashable, b: Hashable) -> float:
    """(Exposure_a / Utility_a) / (Exposure_b / Utility_b); 1 is exposure proportional to merit."""
    return exposure[a]["exposure_per_utility"] / exposure[b]["exposure_per_utility"]


def expected_exposure(
    rankings: Sequence[Sequence[Item]],
    relevance: Mapping[Item, float],
    *,
    gamma: float = 0.5,
) -> dict[str, float]:
    """Expected exposure (Diaz et al., 2020) under RBP browsing for a stochastic ranker given by
    sampled ``rankings`` of the same items: EE-L = ||e - e*||^2, EE-D = ||e||^2, EE-R = 2 e.e*,
    with the target e* spreading each relevance grade's exposure evenly over its items."""
    items = list(rankings[0])
    index = {item: j for j, item in enumerate(items)}
    n = len(items)
    v = position_exposure(n, "rbp", gamma)
    e = np.zeros(n)
    for ranking in rankings:
        for rank, item in enumerate(ranking):
            e[index[item]] += v[rank]
    e /= len(rankings)
    # Ideal: items sorted by grade; items of one grade share the exposure of their rank block.
    grades = np.array([float(relevance.get(i, 0.0)) for i in items])
    order = np.argsort(-grades, kind="stable")
    target = np.zeros(n)
    start = 0
    for grade in sorted(set(grades.tolist()), reverse=True):
        members = order[grades[order] == grade]
        block = v[start : start + members.size]
        target[members] = block.mean() if grade > 0 else 0.0
        start += members.size
    return {
        "EE_L": float(((e - target) ** 2).sum()),
        "EE_D": float((e**2).sum()),
        "EE_R": float(2 * (e * target).sum()),
    }


def exposure_by_group(
    recommendations: Mapping[User, Sequence[Item]],
    item_group: Mapping[Item, Hashable],
    k: int | None = None,
    *,
    model: str = "log2",
    gamma: float = 0.5,
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Across users: each group's share of all exposure handed out (``exposure_share[g]``) and
    mean exposure per list position it holds (``exposure[g]``), bootstrapped over users."""
    users = list(recommendations)
    groups = sorted({item_group[i] for r in recommendations.values() for i in _top(list(r), k)}, key=str)
    gidx = {g: j for j, g in enumerate(groups)}
    sums = np.zeros((len(users), len(groups)))
    cnts = np.zeros((len(users), len(groups)))
    for u, user in enumerate(users):
        top = list(_top(list(recommendations[user]), k))
        v = position_exposure(len(top), model, gamma)
        for rank, item in enumerate(top):
            sums[u, gidx[item_group[item]]] += v[rank]
            cnts[u, gidx[item_group[item]]] += 1
    out: dict[str, Aggregate] = {}
    for g, name in enumerate(groups):
        out[f"exposure_share[{name}]"] = statistic_aggregate(
            len(users), lambda idx, g=g: float(sums[idx, g].sum() / sums[idx].sum()), resamples=resamples
        )
        out[f"exposure[{name}]"] = statistic_aggregate(
            len(users),
            lambda idx, g=g: float(sums[idx, g].sum() / cnts[idx, g].sum()) if cnts[idx, g].sum() else math.nan,
            resamples=resamples,
        )
    return out


# --------------------------------------------------------------------------------------------
# calibration (Steck, RecSys 2018)


def _genre_distribution(
    items: Sequence[Item], item_genres: Mapping[Item, Sequence[Hashable]], weights: np.ndarray
) -> dict[Hashable, float]:
    dist: dict[Hashable, float] = defaultdict(float)
    total = 0.0
    for item, w in zip(items, weights, strict=True):
        genres = list(item_genres.get(item, ()))
        if not genres:
            continue
        for g in genres:
            dist[g] += w / len(genres)  # p(g|i) uniform over the item's genres
        total += w
    return {g: v / total for g, v in dist.items()} if total else {}


def calibration_kl(
    history: Sequence[Item],
    recommended: Sequence[Item],
    item_genres: Mapping[Item, Sequence[Hashable]],
    *,
    alpha: float = 0.01,
    rank_weighted: bool = False,
) -> float:
    """Steck's miscalibration C_KL(p, q) = sum_g p(g|u) log(p(g|u) / q~(g|u)) with the smoothing
    q~ = (1 - alpha) q + alpha p (alpha = 0.01 in the paper), so KL stays finite when the list
    misses a genre the user watched. p from the history, q from the list (optionally weighted
    1/rank). NaN when the history has no genre."""
    p = _genre_distribution(history, item_genres, np.ones(len(history)))
    if not p:
        return math.nan
    w = 1.0 / np.arange(1, len(recommended) + 1) if rank_weighted else np.ones(len(recommended))
    q = _genre_distribution(recommended, item_genres, w)
    kl = 0.0
    for g, pg in p.items():
        if pg <= 0:
            continue
        q_smooth = (1 - alpha) * q.get(g, 0.0) + alpha * pg
        kl += pg * math.log(pg / q_smooth)
    return kl


def calibration(
    recommendations: Mapping[User, Sequence[Item]],
    histories: Mapping[User, Sequence[Item]],
    item_genres: Mapping[Item, Sequence[Hashable]],
    k: int | None = 10,
    *,
    alpha: float = 0.01,
    rank_weighted: bool = False,
    resamples: int = 1000,
) -> tuple[Aggregate, dict[User, float]]:
    """Mean miscalibration over users with a history, and the per-user values."""
    per_user = {}
    for user, ranked in recommendations.items():
        if user in histories:
            value = calibration_kl(
                list(histories[user]), list(_top(list(ranked), k)), item_genres, alpha=alpha, rank_weighted=rank_weighted
            )
            if not math.isnan(value):
                per_user[user] = value
    return mean_aggregate(list(per_user.values()), resamples=resamples), per_user


# --------------------------------------------------------------------------------------------
# user-group gaps


def group_gaps(
    per_user: Mapping[User, float],
    user_group: Mapping[User, Hashable],
    *,
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Per user group: the metric's mean (``mean[g]``); across groups: the gap between the best
    and worst group mean (``gap``) and their ratio worst/best (``ratio``), each bootstrapped
    over users (resamples missing a group are left out of the interval)."""
    users = [u for u in per_user if u in user_group and not math.isnan(per_user[u])]
    values = np.array([per_user[u] for u in users], dtype=float)
    groups = sorted({user_group[u] for u in users}, key=str)
    labels = np.array([groups.index(user_group[u]) for u in users])
    out: dict[str, Aggregate] = {}
    for g, name in enumerate(groups):
        out[f"mean[{name}]"] = mean_aggregate(values[labels == g], resamples=resamples)

    def means(idx: np.ndarray) -> np.ndarray:
        sums = np.bincount(labels[idx], weights=values[idx], minlength=len(groups))
        counts = np.bincount(labels[idx], minlength=len(groups))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def gap(idx: np.ndarray) -> float:
        m = means(idx)
        return math.nan if np.isnan(m).any() else float(m.max() - m.min())

    def ratio(idx: np.ndarray) -> float:
        m = means(idx)
        return math.nan if np.isnan(m).any() or m.max() == 0 else float(m.min() / m.max())

    if len(groups) >= 2:
        out["gap"] = statistic_aggregate(len(users), gap, resamples=resamples)
        out["ratio"] = statistic_aggregate(len(users), ratio, resamples=resamples)
    return out
