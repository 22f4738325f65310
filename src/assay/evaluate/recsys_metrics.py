"""Recommender metrics: ranking accuracy, beyond-accuracy, popularity bias, exposure, calibration
and user-group gaps.

Written here rather than imported because no single maintained library covers this set with
the conventions we need and agrees with the public peer vectors (``recsys_peer_vectors``):
each library picks different defaults (log base, IDCG truncation, user averaging, Gini
normaliser). Every convention is explicit below, selectable where a user needs a peer's (see
:class:`Conventions` and the table in docs/recsys-conventions.md), and tested against
pytrec_eval (trec_eval's own code) and ranx run side by side on random cases, and against the
MS Recommenders, RecBole, LensKit and Evidently vectors and trec_eval's own test collection.

Conventions (defaults; ``Conventions()``):

- ``ndcg``: DCG = sum_i gain_i / log2(i + 1), i the 1-based rank; linear gain (the grade, as
  trec_eval and ranx's ``ndcg``; ``gain="exponential"`` is ranx's ``ndcg_burges``,
  ``gain="binary"`` RecBole's); negative grades count as 0 in DCG and IDCG (trec_eval, ranx and
  LensKit agree); IDCG uses the min(|R|, k) best gains of the user's whole truth set
  (``discount="lenskit"`` gives LensKit's 1/log2(max(rank, 2))).
- ``precision@k`` divides by k even when the list is shorter (trec_eval, ranx, RecBole).
- ``map@k`` (AP) normalises by min(|R|, k) (RecBole, MS Recommenders; by |R| when k is None);
  ``ap_denominator="relevant"`` divides by |R| always (trec_eval's ``map_cut_k``, ranx ``map@k``).
- ``mrr`` is the reciprocal rank of the first relevant item within k, 0 when none.
- Users with no relevant item are left out of the mean (RecBole, MS Recommenders, Evidently);
  ``no_relevant="zero"`` scores them 0 and keeps them, as trec_eval and ranx do.
- Users with relevant items but no recommendation list are left out (trec_eval without ``-c``);
  ``no_run="zero"`` scores them 0 (trec_eval ``-c``, ranx ``make_comparable=True``).
- A list that repeats an item is refused (``BadInput``, exit 2, naming the user and the item), as
  trec_eval refuses such a run; ``duplicates="first"`` keeps each item's best-ranked occurrence
  (the later ones are removed and the list closes up). An item is never counted twice: recall,
  NDCG and MAP above 1 are impossible.
- TREC runs are ordered by score descending, ties by docno descending (trec_eval); a run file
  that repeats (qid, docno) is refused, or deduplicated by ``duplicates="first"`` (the best-ranked
  row) or ``"last"`` (the last row in the file, as ranx's reader keeps).

Every aggregate is an :class:`assay.evaluate.stats.Aggregate` (value, n, 95% interval: binomial for
the hit rate, a bootstrap over users otherwise).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from assay.errors import BadInput
from assay.evaluate.stats import (
    Aggregate,
    mean_aggregate,
    mean_aggregates,
    rate_aggregate,
    statistic_aggregate,
)
from assay.files import check_regular

Item = Hashable
User = Hashable
Truth = Mapping[Item, float]  # item -> gain (binary relevance: 1.0)

RANKING_METRICS = ("ndcg", "recall", "precision", "mrr", "map", "hit_rate", "rprec")


@dataclass(frozen=True)
class Conventions:
    """The choices on which recommender-metric libraries differ, one switch each. The defaults
    are assay's; :data:`PEER_CONVENTIONS` holds each peer's (``Conventions.of("trec_eval")``)."""

    gain: str = "linear"  # linear | exponential | binary
    discount: str = "log2"  # log2 | lenskit
    ap_denominator: str = "min"  # min: min(|R|, k) | relevant: |R|
    no_relevant: str = "drop"  # drop | zero: users with no relevant item
    no_run: str = "drop"  # drop | zero: users with relevant items but no list
    duplicates: str = "error"  # error | first: an item repeated in one list

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "gain": ("linear", "exponential", "binary"),
        "discount": ("log2", "lenskit"),
        "ap_denominator": ("min", "relevant"),
        "no_relevant": ("drop", "zero"),
        "no_run": ("drop", "zero"),
        "duplicates": ("error", "first"),
    }

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in self.CHOICES[f.name]:
                raise BadInput(f"unknown {f.name} convention {value!r}; use one of {', '.join(self.CHOICES[f.name])}")

    @classmethod
    def of(cls, peer: str, **overrides: str) -> Conventions:
        """A peer's conventions (``assay``, ``trec_eval``, ``trec_eval-c``, ``ranx``, ``recbole``)."""
        if peer not in PEER_CONVENTIONS:
            raise BadInput(f"unknown peer {peer!r}; use one of {', '.join(PEER_CONVENTIONS)}")
        return replace(PEER_CONVENTIONS[peer], **overrides)


PEER_CONVENTIONS: dict[str, Conventions] = {
    "assay": Conventions(),
    # trec_eval (and pytrec_eval): map_cut_k over |R|; a topic with no relevant document scores 0;
    # without -c a topic missing from the run is not evaluated
    "trec_eval": Conventions(ap_denominator="relevant", no_relevant="zero"),
    "trec_eval-c": Conventions(ap_denominator="relevant", no_relevant="zero", no_run="zero"),
    # ranx: map@k over |R|; no relevant -> 0; a qrels query missing from the run -> 0 with
    # make_comparable=True (without it ranx raises)
    "ranx": Conventions(ap_denominator="relevant", no_relevant="zero", no_run="zero"),
    # RecBole: binary relevance, MAP over min(|R|, k); only users with test items are evaluated
    "recbole": Conventions(gain="binary"),
}


def _conventions(conventions: Conventions | str | None, **overrides: str | None) -> Conventions:
    base = Conventions.of(conventions) if isinstance(conventions, str) else (conventions or Conventions())
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **chosen) if chosen else base


def check_list(ranked: Sequence[Item], user: User | None = None, duplicates: str = "error") -> list[Item]:
    """The list with each item once: refuse a repeated item (``"error"``) naming the user and the
    item, or keep each item's first (best-ranked) occurrence (``"first"``)."""
    if duplicates not in ("error", "first"):
        raise BadInput(f"unknown duplicates rule {duplicates!r}; use 'error' or 'first'")
    ranked = list(ranked)
    seen: dict[Item, int] = {}
    repeated = False
    for rank, item in enumerate(ranked, start=1):
        if item in seen:
            if duplicates == "error":
                who = "" if user is None else f"user {user!r}: "
                raise BadInput(
                    f"{who}item {item!r} appears twice in one recommendation list (ranks {seen[item]} and {rank}); "
                    "a repeated item would be counted twice",
                    hint="deduplicate the list, or pass duplicates='first' to keep each item's best-ranked occurrence",
                )
            repeated = True
        else:
            seen[item] = rank
    return list(seen) if repeated else ranked


def check_lists(recommendations: Mapping[User, Sequence[Item]], duplicates: str = "error") -> dict[User, list[Item]]:
    """:func:`check_list` for every user."""
    return {user: check_list(ranked, user, duplicates) for user, ranked in recommendations.items()}


# --------------------------------------------------------------------------------------------
# per-user ranking metrics


def _discounts(n: int, discount: str) -> np.ndarray:
    ranks = np.arange(1, n + 1, dtype=float)
    if discount == "log2":
        return 1.0 / np.log2(ranks + 1.0)
    if discount == "lenskit":
        return 1.0 / np.log2(np.maximum(ranks, 2.0))
    raise BadInput(f"unknown discount {discount!r}; use 'log2' or 'lenskit'")


def _gain(values: np.ndarray, gain: str) -> np.ndarray:
    values = np.clip(values, 0.0, None)
    if gain == "linear":
        return values
    if gain == "exponential":
        return np.power(2.0, values) - 1.0
    if gain == "binary":
        return (values > 0).astype(float)
    raise BadInput(f"unknown gain {gain!r}; use 'linear', 'exponential' or 'binary'")


def _top(ranked: Sequence[Item], k: int | None) -> Sequence[Item]:
    return ranked if k is None else ranked[:k]


def _relevant(truth: Truth) -> set[Item]:
    return {item for item, g in truth.items() if g > 0}


# The metric bodies below take a list already checked for repeated items and the user's
# relevant set; the public functions check first. per_user_metrics checks each list once.


def _ndcg(ranked: Sequence[Item], truth: Truth, rel: set[Item], k: int | None, gain: str, discount: str) -> float:
    if not rel:
        return math.nan
    top = _top(ranked, k)
    gains = _gain(np.array([float(truth.get(i, 0.0)) for i in top]), gain)
    ideal = _gain(np.sort(np.array([float(g) for g in truth.values()]))[::-1], gain)
    ideal = ideal[ideal > 0]
    if k is not None:
        ideal = ideal[:k]
    idcg = float((ideal * _discounts(ideal.size, discount)).sum())
    dcg = float((gains * _discounts(gains.size, discount)).sum()) if gains.size else 0.0
    return dcg / idcg


def _recall(ranked: Sequence[Item], rel: set[Item], k: int | None) -> float:
    if not rel:
        return math.nan
    return sum(1 for i in _top(ranked, k) if i in rel) / len(rel)


def _precision(ranked: Sequence[Item], rel: set[Item], k: int | None) -> float:
    if not rel:
        return math.nan
    top = _top(ranked, k)
    denominator = k if k is not None else len(top)
    if denominator == 0:
        return 0.0
    return sum(1 for i in top if i in rel) / denominator


def _reciprocal_rank(ranked: Sequence[Item], rel: set[Item], k: int | None) -> float:
    if not rel:
        return math.nan
    for rank, item in enumerate(_top(ranked, k), start=1):
        if item in rel:
            return 1.0 / rank
    return 0.0


def _average_precision(ranked: Sequence[Item], rel: set[Item], k: int | None, denominator: str = "min") -> float:
    if not rel:
        return math.nan
    hits = 0
    total = 0.0
    for rank, item in enumerate(_top(ranked, k), start=1):
        if item in rel:
            hits += 1
            total += hits / rank
    return total / (len(rel) if k is None or denominator == "relevant" else min(len(rel), k))


def _hit_rate(ranked: Sequence[Item], rel: set[Item], k: int | None) -> float:
    if not rel:
        return math.nan
    return 1.0 if any(i in rel for i in _top(ranked, k)) else 0.0


def _r_precision(ranked: Sequence[Item], rel: set[Item], k: int | None) -> float:
    if not rel:
        return math.nan
    return sum(1 for i in ranked[: len(rel)] if i in rel) / len(rel)


def ndcg(
    ranked: Sequence[Item],
    truth: Truth,
    k: int | None = None,
    *,
    gain: str = "linear",
    discount: str = "log2",
    duplicates: str = "error",
) -> float:
    """Normalised DCG of one ranked list; NaN when the user has no positive gain."""
    return _ndcg(check_list(ranked, None, duplicates), truth, _relevant(truth), k, gain, discount)


def recall(ranked: Sequence[Item], truth: Truth, k: int | None = None, *, duplicates: str = "error") -> float:
    """Relevant items retrieved in the top k over all relevant items; NaN without relevant."""
    return _recall(check_list(ranked, None, duplicates), _relevant(truth), k)


def precision(ranked: Sequence[Item], truth: Truth, k: int | None = None, *, duplicates: str = "error") -> float:
    """Relevant items in the top k over k (over the list length when k is None)."""
    return _precision(check_list(ranked, None, duplicates), _relevant(truth), k)


def reciprocal_rank(ranked: Sequence[Item], truth: Truth, k: int | None = None, *, duplicates: str = "error") -> float:
    """1 / rank of the first relevant item within k, 0 when none; NaN without relevant."""
    return _reciprocal_rank(check_list(ranked, None, duplicates), _relevant(truth), k)


def average_precision(
    ranked: Sequence[Item], truth: Truth, k: int | None = None, *, denominator: str = "min", duplicates: str = "error",
) -> float:
    """AP@k normalised by min(|R|, k) (``denominator="relevant"``: by |R|, as trec_eval's
    ``map_cut`` and ranx); by |R| when k is None, as trec_eval's map."""
    return _average_precision(check_list(ranked, None, duplicates), _relevant(truth), k, denominator)


def hit_rate(ranked: Sequence[Item], truth: Truth, k: int | None = None, *, duplicates: str = "error") -> float:
    """1 when any relevant item is in the top k, else 0; NaN without relevant."""
    return _hit_rate(check_list(ranked, None, duplicates), _relevant(truth), k)


def r_precision(ranked: Sequence[Item], truth: Truth, k: int | None = None, *, duplicates: str = "error") -> float:
    """Precision at rank |R| (trec_eval ``Rprec``); ``k`` is ignored."""
    return _r_precision(check_list(ranked, None, duplicates), _relevant(truth), k)


_PER_USER = {
    "ndcg": None,  # needs gain and discount: computed by _ndcg
    "recall": _recall,
    "precision": _precision,
    "mrr": _reciprocal_rank,
    "map": None,  # needs the AP denominator: computed by _average_precision
    "hit_rate": _hit_rate,
    "rprec": _r_precision,
}


def per_user_metrics(
    recommendations: Mapping[User, Sequence[Item]],
    truth: Mapping[User, Truth],
    k: int | None = 10,
    metrics: Iterable[str] = RANKING_METRICS,
    *,
    conventions: Conventions | str | None = None,
    gain: str | None = None,
    discount: str | None = None,
    duplicates: str | None = None,
) -> dict[str, dict[User, float]]:
    """Per-user values under ``conventions`` (assay's by default, a peer's by name: see
    :class:`Conventions`; ``gain``, ``discount`` and ``duplicates`` override single switches).

    Users with a list and at least one relevant item always count; a user with no relevant item
    counts as 0 under ``no_relevant="zero"``; a user in ``truth`` with a relevant item but no
    list counts as 0 under ``no_run="zero"``.
    """
    c = _conventions(conventions, gain=gain, discount=discount, duplicates=duplicates)
    names = list(metrics)
    unknown = [m for m in names if m not in _PER_USER]
    if unknown:
        raise BadInput(f"unknown ranking metric(s) {unknown}; known: {sorted(_PER_USER)}")
    out: dict[str, dict[User, float]] = {m: {} for m in names}
    for user, ranked in recommendations.items():
        user_truth = truth.get(user) or {}
        rel = _relevant(user_truth)
        if not rel:
            if c.no_relevant == "zero" and user in truth:
                check_list(ranked, user, c.duplicates)
                for m in names:
                    out[m][user] = 0.0
            continue
        ranked = check_list(ranked, user, c.duplicates)
        for m in names:
            if m == "ndcg":
                out[m][user] = _ndcg(ranked, user_truth, rel, k, c.gain, c.discount)
            elif m == "map":
                out[m][user] = _average_precision(ranked, rel, k, c.ap_denominator)
            else:
                out[m][user] = _PER_USER[m](ranked, rel, k)
    if c.no_run == "zero":
        for user, user_truth in truth.items():
            if user not in recommendations and (_relevant(user_truth) or c.no_relevant == "zero"):
                for m in names:
                    out[m][user] = 0.0
    return out


def ranking_metrics(
    recommendations: Mapping[User, Sequence[Item]],
    truth: Mapping[User, Truth],
    k: int | None = 10,
    metrics: Iterable[str] = RANKING_METRICS,
    *,
    conventions: Conventions | str | None = None,
    gain: str | None = None,
    discount: str | None = None,
    duplicates: str | None = None,
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Mean over users of each ranking metric, with n users and a 95% interval: binomial for
    ``hit_rate`` (a share of users), bootstrap over users for the others."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise BadInput(f"the cut-off k must be a whole number of at least 1 (or none: the whole list), got {k!r}")
    per_user = per_user_metrics(recommendations, truth, k, metrics, conventions=conventions, gain=gain,
                                discount=discount, duplicates=duplicates)
    means = mean_aggregates({name: list(values.values()) for name, values in per_user.items() if name != "hit_rate"},
                            resamples=resamples)
    return {name: rate_aggregate(list(values.values())) if name == "hit_rate" else means[name] for name, values in per_user.items()}


# --------------------------------------------------------------------------------------------
# TREC files (trec_eval layout)


def _trec_rows(path: str | Path, layout: str, value_field: int) -> Iterable[tuple[int, list[str], float]]:
    """(line, fields, numeric field) of each non-blank line; a malformed line is ``path:line``."""
    fields_wanted = len(layout.split())
    name = layout.split()[value_field]
    check_regular(path, "qrels" if layout == QRELS_LAYOUT else "run")  # a FIFO would hang here, /dev/zero never end
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != fields_wanted:
                    raise BadInput(f"{path}:{lineno}: expected '{layout}', got {len(parts)} fields")
                try:
                    value = float(parts[value_field])
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise BadInput(f"{path}:{lineno}: {name} {parts[value_field]!r} is not a finite number")
                yield lineno, parts, value
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read {path}: {e}") from None


def _first_line(path: str | Path, layout: str, value_field: int, qid: str, doc: str) -> int:
    """The line that first names (qid, docno): for the message about a repeat (error path only)."""
    return next(n for n, parts, _ in _trec_rows(path, layout, value_field) if parts[0] == qid and parts[2] == doc)


QRELS_LAYOUT = "qid iter docno rel"
RUN_LAYOUT = "qid Q0 docno rank score tag"


def read_trec_qrels(path: str | Path, *, duplicates: str = "error") -> dict[str, dict[str, float]]:
    """``qid iter docno rel`` lines -> {qid: {docno: rel}} (all judgements, incl. 0). A repeated
    (qid, docno) is refused as trec_eval refuses it, or ``duplicates="last"`` keeps the last
    line's grade (ranx's reader)."""
    if duplicates not in ("error", "last"):
        raise BadInput(f"unknown duplicates rule {duplicates!r} for qrels; use 'error' or 'last'")
    qrels: dict[str, dict[str, float]] = defaultdict(dict)
    for lineno, parts, grade in _trec_rows(path, QRELS_LAYOUT, 3):
        judged = qrels[parts[0]]
        if parts[2] in judged and duplicates == "error":
            first = _first_line(path, QRELS_LAYOUT, 3, parts[0], parts[2])
            raise BadInput(f"{path}:{lineno}: user {parts[0]!r}: item {parts[2]!r} is judged twice (first at line {first})",
                           hint="trec_eval refuses repeated judgements; the duplicates rule 'last' keeps the last one, as ranx does")
        judged[parts[2]] = grade
    return dict(qrels)


def read_trec_run(path: str | Path, *, duplicates: str = "error") -> dict[str, list[str]]:
    """``qid Q0 docno rank score tag`` lines -> {qid: [docno, ...]} ordered as trec_eval does
    (score descending, ties by docno descending; the rank column is ignored).

    A repeated (qid, docno) is refused (``BadInput`` naming the file, line, user and item), as
    trec_eval refuses such a run; ``duplicates="first"`` keeps the best-ranked row of the item,
    ``duplicates="last"`` the last row in the file (what ranx's reader keeps).
    """
    if duplicates not in ("error", "first", "last"):
        raise BadInput(f"unknown duplicates rule {duplicates!r} for a run; use 'error', 'first' or 'last'")
    rows: dict[str, dict[str, float]] = defaultdict(dict)
    for lineno, parts, score in _trec_rows(path, RUN_LAYOUT, 4):
        seen = rows[parts[0]]
        doc = parts[2]
        if doc in seen:
            if duplicates == "error":
                first = _first_line(path, RUN_LAYOUT, 4, parts[0], doc)
                raise BadInput(f"{path}:{lineno}: user {parts[0]!r}: item {doc!r} appears twice in the run (first at line {first})",
                               hint="trec_eval refuses such a run; choose a duplicates rule: 'first' (the best-ranked row) or 'last' (the last row, as ranx)")
            if duplicates == "first":
                score = max(score, seen[doc])
        seen[doc] = score
    # (score, docno) tuples sorted descending: score first, ties by docno descending (trec_eval)
    return {qid: [doc for _, doc in sorted(zip(entries.values(), entries.keys(), strict=True), reverse=True)]
            for qid, entries in rows.items()}


def evaluate_trec(
    qrels_path: str | Path,
    run_path: str | Path,
    k: int | None = 10,
    metrics: Iterable[str] = RANKING_METRICS,
    *,
    conventions: Conventions | str | None = None,
    duplicates: str = "error",
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """A TREC run against its qrels, end to end (what ``assay eval trec`` prints). ``duplicates``
    applies to both files: "error" (trec_eval), "first" (the best-ranked row of a repeated item;
    a repeated judgement is then refused still) or "last" (the last row of either file, as ranx)."""
    qrels = read_trec_qrels(qrels_path, duplicates="last" if duplicates == "last" else "error")
    run = read_trec_run(run_path, duplicates=duplicates)
    return ranking_metrics(run, qrels, k, metrics, conventions=conventions, resamples=resamples)


# --------------------------------------------------------------------------------------------
# beyond accuracy: coverage, concentration, popularity


def _item_counts(recommendations: Mapping[User, Sequence[Item]], k: int | None, duplicates: str = "error") -> Counter:
    counts: Counter = Counter()
    for user, ranked in recommendations.items():
        counts.update(_top(check_list(ranked, user, duplicates), k))
    return counts


def _catalogue_counts(counts: Mapping[Item, int], catalogue: Iterable[Item] | int) -> np.ndarray:
    if isinstance(catalogue, int):
        values = list(counts.values())
        if len(values) > catalogue:
            raise BadInput(f"{len(values)} distinct items recommended but the catalogue has {catalogue}")
        return np.array(values + [0] * (catalogue - len(values)), dtype=float)
    return np.array([counts.get(i, 0) for i in catalogue], dtype=float)


def item_coverage(
    recommendations: Mapping[User, Sequence[Item]], catalogue: Iterable[Item] | int, k: int | None = None,
    *, duplicates: str = "error",
) -> float:
    """Share of the catalogue recommended to at least one user."""
    counts = _catalogue_counts(_item_counts(recommendations, k, duplicates), catalogue)
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
    raise BadInput(f"unknown Gini convention {convention!r}; use recbole, elliot or evidently")


def gini_index(
    recommendations: Mapping[User, Sequence[Item]],
    catalogue: Iterable[Item] | int,
    k: int | None = None,
    convention: str = "recbole",
    *,
    duplicates: str = "error",
) -> float:
    """Concentration of recommendations over the catalogue (0 = even, -> 1 = one item)."""
    return gini_from_counts(_catalogue_counts(_item_counts(recommendations, k, duplicates), catalogue), convention)


ENTROPY_CONVENTIONS = ("textbook", "recbole")


def entropy_from_counts(counts: np.ndarray, convention: str = "textbook") -> float:
    """Entropy (nats) of the shares of the recommendation slots each item gets: ``textbook``
    -sum p ln p; ``recbole`` divides that by the number of distinct items recommended (RecBole's
    ShannonEntropy). NaN with no recommendation."""
    c = np.asarray(counts, dtype=float)
    c = c[c > 0]
    if c.size == 0:
        return math.nan
    p = c / c.sum()
    h = float(-(p * np.log(p)).sum())
    if convention == "textbook":
        return h
    if convention == "recbole":
        return h / c.size
    raise BadInput(f"unknown entropy convention {convention!r}; use one of {', '.join(ENTROPY_CONVENTIONS)}")


def shannon_entropy(
    recommendations: Mapping[User, Sequence[Item]], k: int | None = None, *, convention: str = "textbook",
    duplicates: str = "error",
) -> float:
    """Entropy (nats) of the share of recommendations each item gets (see :func:`entropy_from_counts`)."""
    return entropy_from_counts(np.array(list(_item_counts(recommendations, k, duplicates).values()), dtype=float), convention)


TAIL_CONVENTIONS = ("head-fraction", "recbole")


def long_tail_items(
    popularity: Mapping[Item, float], head_fraction: float = 0.2, *, convention: str = "head-fraction", tail_ratio: float = 0.1,
) -> set[Item]:
    """The long-tail items.

    ``head-fraction`` (default): items outside the short head, the head being the top
    ``head_fraction`` of items by popularity (Abdollahpouri et al., 2019); ties at the boundary go
    to the head. ``recbole`` (RecBole's TailPercentage): with ``tail_ratio`` <= 1, the
    max(floor(n * tail_ratio), 1) least popular items (ties by item id ascending); with
    ``tail_ratio`` > 1, every item with popularity <= tail_ratio.
    """
    if convention == "recbole":
        if tail_ratio > 1:
            return {item for item, pop in popularity.items() if pop <= tail_ratio}
        try:
            ascending = sorted(popularity.items(), key=lambda kv: (kv[1], kv[0]))
        except TypeError:  # ids of mixed types: compare them as strings
            ascending = sorted(popularity.items(), key=lambda kv: (kv[1], str(kv[0])))
        return {item for item, _ in ascending[: max(int(len(ascending) * tail_ratio), 1)]} if ascending else set()
    if convention != "head-fraction":
        raise BadInput(f"unknown long-tail convention {convention!r}; use one of {', '.join(TAIL_CONVENTIONS)}")
    ordered = sorted(popularity.items(), key=lambda kv: kv[1], reverse=True)
    head_size = math.ceil(head_fraction * len(ordered))
    if head_size and head_size < len(ordered):
        threshold = ordered[head_size - 1][1]
        return {item for item, pop in ordered if pop < threshold}
    return {item for item, _ in ordered[head_size:]}


def average_recommendation_popularity(
    recommendations: Mapping[User, Sequence[Item]], popularity: Mapping[Item, float], k: int | None = None,
    *, duplicates: str = "error",
) -> dict[User, float]:
    """ARP per user: mean training popularity of the items in the user's list."""
    out = {}
    for user, ranked in recommendations.items():
        top = list(_top(check_list(ranked, user, duplicates), k))
        if top:
            out[user] = float(np.mean([popularity.get(i, 0.0) for i in top]))
    return out


def average_percentage_long_tail(
    recommendations: Mapping[User, Sequence[Item]], long_tail: set[Item], k: int | None = None,
    *, duplicates: str = "error",
) -> dict[User, float]:
    """APLT per user: share of the user's list that is long-tail (Abdollahpouri et al., 2017;
    RecBole's TailPercentage with its tail)."""
    out = {}
    for user, ranked in recommendations.items():
        top = list(_top(check_list(ranked, user, duplicates), k))
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
    entropy: str = "textbook",
    tail: str = "head-fraction",
    tail_ratio: float = 0.1,
    duplicates: str = "error",
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Coverage, Gini, entropy (bootstrapped over users) and ARP/APLT (means over users).
    ``entropy`` and ``tail`` select the entropy and long-tail conventions (RecBole's: "recbole")."""
    recommendations = check_lists(recommendations, duplicates)
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
        return entropy_from_counts(counts_of(idx), entropy)

    out = {
        "coverage": statistic_aggregate(len(users), lambda idx: float((counts_of(idx) > 0).mean()), resamples=resamples),
        "gini": statistic_aggregate(len(users), lambda idx: gini_from_counts(counts_of(idx)), resamples=resamples),
        "entropy": statistic_aggregate(len(users), entropy_of, resamples=resamples),
    }
    if popularity is not None:
        long_tail = long_tail_items({i: popularity.get(i, 0.0) for i in catalogue}, head_fraction, convention=tail, tail_ratio=tail_ratio)
        out["arp"] = mean_aggregate(
            list(average_recommendation_popularity(recommendations, popularity, k).values()), resamples=resamples
        )
        out["aplt"] = mean_aggregate(
            list(average_percentage_long_tail(recommendations, long_tail, k).values()), resamples=resamples
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
    raise BadInput(f"unknown exposure model {model!r}; use 'log2' or 'rbp'")


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
    duplicates: str = "error",
    resamples: int = 1000,
) -> dict[str, Aggregate]:
    """Across users: each group's share of all exposure handed out (``exposure_share[g]``) and
    mean exposure per list position it holds (``exposure[g]``), bootstrapped over users."""
    recommendations = check_lists(recommendations, duplicates)
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
    duplicates: str = "error",
    resamples: int = 1000,
) -> tuple[Aggregate, dict[User, float]]:
    """Mean miscalibration over users with a history, and the per-user values."""
    recommendations = check_lists(recommendations, duplicates)
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
    over users (a resample missing a group is undefined: counted, and past 2.5% of resamples
    the interval is unavailable)."""
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
