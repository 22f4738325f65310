"""The ranker's named features, and the state they are computed from.

Every feature has a name a person can read in an explanation ("genre_affinity", not "f7"), a
group (the signal family a transparency report aggregates over) and a sentence saying what it
measures. They are computed from a :class:`FeatureState` built from the interactions before a
cut-off, so the ranker never sees the future it is evaluated on.

Missing values are NaN and mean "this signal does not exist for this pair" (a cold-start user
has no genre profile; an untagged film has no tag signal). LightGBM learns a direction for NaN
at every split, so a NaN is a defined input, not an error; a missing *column* is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from assay.errors import BadInput


@dataclass(frozen=True)
class Feature:
    name: str
    group: str  # signal family: user activity, genre affinity, popularity, recency, retrieval, tags
    description: str


FEATURES: tuple[Feature, ...] = (
    Feature("user_activity", "user activity", "log(1 + number of films the user has rated)"),
    Feature("user_mean_rating", "user activity", "the user's mean star rating"),
    Feature(
        "genre_affinity",
        "genre affinity",
        "cosine between the user's genre profile and the film's genres",
    ),
    Feature(
        "genre_match_share",
        "genre affinity",
        "share of the user's history in the film's best-matching genre",
    ),
    Feature("item_popularity", "item popularity", "log(1 + number of ratings the film has)"),
    Feature(
        "item_trend", "item popularity", "log(1 + ratings in the last 365 days before the cut-off)"
    ),
    Feature(
        "item_mean_rating",
        "item popularity",
        "the film's mean rating, shrunk towards the global mean",
    ),
    Feature("item_age_years", "recency", "years between the film's release and the cut-off"),
    Feature("item_last_rated_days", "recency", "days since anyone last rated the film"),
    Feature(
        "release_year_gap",
        "recency",
        "years between the film's release and the mean release year of the user's history",
    ),
    Feature(
        "retrieval_score",
        "retrieval",
        "ALS (implicit feedback) dot product of user and film factors",
    ),
    Feature(
        "retrieval_rank",
        "retrieval",
        "rank of the film in the request's candidate set by retrieval score (0 = first)",
    ),
    Feature(
        "tag_affinity",
        "tag signals",
        "cosine between the user's tag profile and the film's tags (TF-IDF)",
    ),
    Feature("item_tag_count", "tag signals", "log(1 + number of tag applications on the film)"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_GROUPS: dict[str, str] = {f.name: f.group for f in FEATURES}

POSITIVE_RATING = 4.0  # a rating at or above this is a "liked" signal for profiles and labels
_SHRINK = 10.0  # prior weight (in ratings) when shrinking a film's mean rating
_DAY = 86400.0


def _l2_rows(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norms > 0, m / np.where(norms > 0, norms, 1.0), 0.0)
    return out.astype(np.float32)


def _l2_rows_sparse(m: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ m, dtype=np.float32)


@dataclass
class FeatureState:
    """Everything the features need, as arrays indexed by catalogue position and user position."""

    item_ids: np.ndarray  # int64, sorted: the catalogue
    genres: np.ndarray  # str, genre names (columns of item_genres)
    item_genres: np.ndarray  # float32 (n_items, n_genres) multi-hot
    item_year: np.ndarray  # float32, NaN when unknown
    item_count: np.ndarray  # int32
    item_trend: np.ndarray  # int32
    item_mean_rating: np.ndarray  # float32 (shrunk)
    item_last_ts: np.ndarray  # float64, NaN when never rated
    item_tags: sp.csr_matrix  # float32 (n_items, n_tags), TF-IDF rows l2-normalised
    item_tag_count: np.ndarray  # int32
    tag_vocab: np.ndarray  # str
    user_ids: np.ndarray  # int64, sorted
    user_count: np.ndarray  # int32
    user_mean_rating: np.ndarray  # float32
    user_mean_year: np.ndarray  # float32
    user_genres: np.ndarray  # float32 (n_users, n_genres): share of history per genre
    user_tags: sp.csr_matrix  # float32 (n_users, n_tags) l2-normalised
    history: sp.csr_matrix  # float32 (n_users, n_items): rating of each seen film, 0 = unseen
    ref_ts: float  # the cut-off: features describe the world at this time

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    def item_index(self, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """Catalogue positions of ``item_ids``; raises ``BadInput`` naming ids not in the catalogue."""
        ids = np.asarray(item_ids, dtype=np.int64)
        pos = np.searchsorted(self.item_ids, ids)
        pos = np.clip(pos, 0, max(self.n_items - 1, 0))
        bad = self.item_ids[pos] != ids if self.n_items else np.ones(ids.shape, bool)
        if bad.any():
            shown = ", ".join(str(int(i)) for i in ids[bad][:5])
            raise BadInput(
                f"{int(bad.sum())} candidate item(s) are not in the catalogue: {shown}",
                hint="items must come from the catalogue the model was trained with; new items need a retrain or a catalogue refresh",
            )
        return pos

    def user_index(self, user_id: int) -> int | None:
        """Position of a known user, or None for a user the model has never seen (cold start)."""
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos < self.user_ids.size and self.user_ids[pos] == user_id:
            return pos
        return None

    # -------------------------------------------------------------- persistence (no pickle)
    def to_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, value in self.__dict__.items():
            if isinstance(value, sp.csr_matrix):
                out[f"{name}__data"], out[f"{name}__indices"] = value.data, value.indices
                out[f"{name}__indptr"], out[f"{name}__shape"] = (
                    value.indptr,
                    np.asarray(value.shape),
                )
            else:
                out[name] = np.asarray(value)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureState:
        kwargs: dict[str, object] = {}
        for name in cls.__dataclass_fields__:
            if f"{name}__data" in arrays:
                shape = tuple(int(x) for x in arrays[f"{name}__shape"])
                kwargs[name] = sp.csr_matrix(
                    (
                        arrays[f"{name}__data"],
                        arrays[f"{name}__indices"],
                        arrays[f"{name}__indptr"],
                    ),
                    shape=shape,
                )
            elif name in arrays:
                kwargs[name] = float(arrays[name]) if name == "ref_ts" else arrays[name]
            else:
                raise BadInput(f"feature state is missing the array {name!r}")
        return cls(**kwargs)  # type: ignore[arg-type]


def build_state(ratings: pd.DataFrame, movies: pd.DataFrame, tags: pd.DataFrame) -> FeatureState:
    """Feature state from the interactions in ``ratings`` (everything before the cut-off)."""
    item_ids = np.sort(movies["item_id"].to_numpy(np.int64))
    movies = movies.set_index("item_id").loc[item_ids]
    genres = np.array(sorted({g for gs in movies["genres"] for g in gs}), dtype=str)
    g_index = {g: i for i, g in enumerate(genres)}
    item_genres = np.zeros((item_ids.size, genres.size), np.float32)
    for row, gs in enumerate(movies["genres"]):
        for g in gs:
            item_genres[row, g_index[g]] = 1.0
    item_year = movies["year"].to_numpy(np.float32)

    ref_ts = float(ratings["ts"].max())
    ipos = np.searchsorted(item_ids, ratings["item_id"].to_numpy(np.int64))
    user_ids = np.sort(ratings["user_id"].unique().astype(np.int64))
    upos = np.searchsorted(user_ids, ratings["user_id"].to_numpy(np.int64))
    stars = ratings["rating"].to_numpy(np.float32)
    ts = ratings["ts"].to_numpy(np.float64)
    n_items, n_users = item_ids.size, user_ids.size

    item_count = np.bincount(ipos, minlength=n_items).astype(np.int32)
    recent = ts >= ref_ts - 365 * _DAY
    item_trend = np.bincount(ipos[recent], minlength=n_items).astype(np.int32)
    global_mean = float(stars.mean())
    sums = np.bincount(ipos, weights=stars, minlength=n_items)
    item_mean = ((sums + _SHRINK * global_mean) / (item_count + _SHRINK)).astype(np.float32)
    item_last = np.full(n_items, np.nan)
    order = np.argsort(ts, kind="stable")
    item_last[ipos[order]] = ts[order]  # last write wins = latest

    user_count = np.bincount(upos, minlength=n_users).astype(np.int32)
    user_mean = (
        np.bincount(upos, weights=stars, minlength=n_users) / np.maximum(user_count, 1)
    ).astype(np.float32)
    years = item_year[ipos]
    has_year = np.isfinite(years)
    ycount = np.bincount(upos[has_year], minlength=n_users)
    ysum = np.bincount(upos[has_year], weights=years[has_year], minlength=n_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        user_mean_year = np.where(ycount > 0, ysum / np.maximum(ycount, 1), np.nan).astype(
            np.float32
        )

    history = sp.csr_matrix((stars, (upos, ipos)), shape=(n_users, n_items), dtype=np.float32)
    history.sum_duplicates()
    seen = history.copy()
    seen.data[:] = 1.0
    genre_counts = np.asarray(seen @ item_genres)
    user_genres = (genre_counts / np.maximum(user_count, 1)[:, None]).astype(np.float32)

    # Tags: TF-IDF over films (a tag applied by many users to a film counts more), rows l2.
    tag_vocab = (
        np.array(sorted(tags["tag"].unique()), dtype=str) if len(tags) else np.array([], dtype=str)
    )
    if tag_vocab.size:
        t_items = np.searchsorted(item_ids, tags["item_id"].to_numpy(np.int64))
        valid = (t_items < n_items) & (
            item_ids[np.minimum(t_items, n_items - 1)] == tags["item_id"].to_numpy(np.int64)
        )
        t_cols = np.searchsorted(tag_vocab, tags["tag"].to_numpy(str))
        raw = sp.csr_matrix(
            (np.ones(int(valid.sum()), np.float32), (t_items[valid], t_cols[valid])),
            shape=(n_items, tag_vocab.size),
        )
        raw.sum_duplicates()
        df = np.bincount(raw.indices, minlength=tag_vocab.size)
        idf = np.log((1 + n_items) / (1 + df)).astype(np.float32) + 1.0
        tfidf = sp.csr_matrix(raw.multiply(idf[None, :]))
        item_tag_count = np.asarray(raw.sum(axis=1)).ravel().astype(np.int32)
    else:
        tfidf = sp.csr_matrix((n_items, 0), dtype=np.float32)
        item_tag_count = np.zeros(n_items, np.int32)
    item_tags = _l2_rows_sparse(tfidf)
    liked = sp.csr_matrix(history.multiply(history >= POSITIVE_RATING))
    liked.data[:] = 1.0
    user_tags = _l2_rows_sparse(sp.csr_matrix(liked @ item_tags))

    return FeatureState(
        item_ids=item_ids, genres=genres, item_genres=item_genres, item_year=item_year,
        item_count=item_count, item_trend=item_trend, item_mean_rating=item_mean, item_last_ts=item_last,
        item_tags=item_tags, item_tag_count=item_tag_count, tag_vocab=tag_vocab,
        user_ids=user_ids, user_count=user_count, user_mean_rating=user_mean, user_mean_year=user_mean_year,
        user_genres=user_genres, user_tags=user_tags, history=history, ref_ts=ref_ts,
    )  # fmt: skip


@dataclass
class UserProfile:
    """What the features know about the requesting user; ``None`` fields mean cold start."""

    count: int
    mean_rating: float
    mean_year: float
    genres: np.ndarray | None  # (n_genres,)
    tags: sp.csr_matrix | None  # (1, n_tags)
    factors: np.ndarray | None  # ALS user vector


def profile_of(
    state: FeatureState, user_pos: int | None, factors: np.ndarray | None
) -> UserProfile:
    if user_pos is None:
        return UserProfile(0, np.nan, np.nan, None, None, None)
    return UserProfile(
        int(state.user_count[user_pos]),
        float(state.user_mean_rating[user_pos]),
        float(state.user_mean_year[user_pos]),
        state.user_genres[user_pos],
        state.user_tags[user_pos],
        factors,
    )


def profile_from_history(
    state: FeatureState, item_pos: np.ndarray, stars: np.ndarray, factors: np.ndarray | None
) -> UserProfile:
    """Profile of a user given only a request-time history (catalogue positions + ratings)."""
    if item_pos.size == 0:
        return UserProfile(0, np.nan, np.nan, None, None, None)
    genres = state.item_genres[item_pos].sum(axis=0) / item_pos.size
    years = state.item_year[item_pos]
    liked = item_pos[stars >= POSITIVE_RATING]
    tags = (
        _l2_rows_sparse(sp.csr_matrix(state.item_tags[liked].sum(axis=0)))
        if liked.size
        else sp.csr_matrix((1, state.tag_vocab.size), dtype=np.float32)
    )
    mean_year = float(np.nanmean(years)) if np.isfinite(years).any() else np.nan
    return UserProfile(
        int(item_pos.size), float(stars.mean()), mean_year, genres.astype(np.float32), tags, factors
    )


def compute(
    state: FeatureState, user: UserProfile, item_pos: np.ndarray, item_factors: np.ndarray
) -> np.ndarray:
    """Feature matrix (n_candidates, len(FEATURES)) for one request, columns in FEATURE_NAMES order."""
    n = item_pos.size
    out = np.full((n, len(FEATURES)), np.nan, dtype=np.float32)
    out[:, 0] = np.log1p(user.count)
    out[:, 1] = user.mean_rating
    ig = state.item_genres[item_pos]
    if user.genres is not None:
        ug = user.genres
        norm = float(np.linalg.norm(ug))
        inorm = np.linalg.norm(ig, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, 2] = np.where(inorm > 0, (ig @ ug) / (inorm * max(norm, 1e-12)), np.nan)
        masked = np.where(ig > 0, ug[None, :], -1.0)
        best = masked.max(axis=1)
        out[:, 3] = np.where(best >= 0, best, np.nan)
    out[:, 4] = np.log1p(state.item_count[item_pos])
    out[:, 5] = np.log1p(state.item_trend[item_pos])
    out[:, 6] = state.item_mean_rating[item_pos]
    ref_year = 1970 + state.ref_ts / (365.25 * _DAY)
    out[:, 7] = ref_year - state.item_year[item_pos]
    out[:, 8] = (state.ref_ts - state.item_last_ts[item_pos]) / _DAY
    out[:, 9] = np.abs(state.item_year[item_pos] - user.mean_year)
    if user.factors is not None:
        scores = item_factors[item_pos] @ user.factors
        scores = np.where(
            state.item_count[item_pos] > 0, scores, np.nan
        )  # cold items: no retrieval signal
        out[:, 10] = scores
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    else:
        order = np.argsort(
            -state.item_count[item_pos], kind="stable"
        )  # cold user: popularity order
    ranks = np.empty(n, np.float32)
    ranks[order] = np.arange(n, dtype=np.float32)
    out[:, 11] = ranks
    has_tags = state.item_tag_count[item_pos] > 0
    if user.tags is not None and user.tags.nnz:
        sims = np.asarray((state.item_tags[item_pos] @ user.tags.T).todense()).ravel()
        out[:, 12] = np.where(has_tags, sims, np.nan)
    out[:, 13] = np.log1p(state.item_tag_count[item_pos])
    return out


def check_frame(frame: pd.DataFrame) -> np.ndarray:
    """A caller-supplied feature table as the ranker's matrix; raises ``BadInput`` naming any
    missing or unknown columns or non-numeric values. NaN cells are allowed (see module doc)."""
    missing = [f for f in FEATURE_NAMES if f not in frame.columns]
    extra = [c for c in frame.columns if c not in FEATURE_NAMES and c != "item_id"]
    if missing:
        raise BadInput(
            f"feature table is missing column(s): {', '.join(missing)}",
            hint=f"the ranker reads exactly: {', '.join(FEATURE_NAMES)}; use NaN for a value that is unknown",
        )
    if extra:
        raise BadInput(
            f"feature table has unknown column(s): {', '.join(extra)}",
            hint=f"the ranker reads exactly: {', '.join(FEATURE_NAMES)}",
        )
    try:
        return frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise BadInput(f"feature table has non-numeric values: {e}") from e
