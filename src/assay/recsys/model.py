"""The reference two-stage recommender: ALS retrieval (``implicit``) + LightGBM LambdaMART ranker.

Training (:func:`train`), all on a per-user time split (:mod:`assay.recsys.split`):

1. fit ALS and the feature state on each user's *base* interactions;
2. retrieve ``candidates`` films per user, label them with that user's *validation*
   interactions (2 = rated >= 4 stars, 1 = rated lower, 0 = not rated) and fit the ranker;
3. refit ALS and the feature state on everything before each user's *test* part; that, with the
   ranker from step 2, is the served model. The test part is only ever used for evaluation.

Saved files (under ``ASSAY_HOME/recsys/<name>/``): ``ranker.txt`` (LightGBM text model),
``als_factors.npz``, ``feature_state.npz`` and ``model.json`` (params, feature names, dataset
manifest, and the sha256 of every file). :meth:`Recommender.load` refuses any file whose hash
differs from the one recorded at training time or registered in the governance registry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from assay.config import settings
from assay.data.movielens import MovieLens
from assay.errors import AssayError, BadInput
from assay.recsys.features import (
    FEATURE_NAMES,
    POSITIVE_RATING,
    FeatureState,
    UserProfile,
    build_state,
    check_frame,
    compute,
    profile_from_history,
    profile_of,
)
from assay.recsys.split import Split, temporal_split

DEFAULT_NAME = "movielens-ref"
MODEL_FILES = ("ranker.txt", "als_factors.npz", "feature_state.npz")


class ModelIntegrityError(AssayError):
    """A model file does not match the hash recorded or registered for it: refuse to serve it."""


@dataclass(frozen=True)
class TrainConfig:
    factors: int = 64
    als_iterations: int = 15
    als_regularization: float = 0.05
    als_alpha: float = 2.0
    candidates: int = 200  # retrieved per user when serving and evaluating
    train_candidates: int = 100  # retrieved per user for the ranker's training set
    rounds: int = 100
    learning_rate: float = 0.05
    num_leaves: int = 15
    max_depth: int = 4  # shallow trees keep per-request TreeSHAP of 1,000 candidates within budget
    min_data_in_leaf: int = 50
    test_fraction: float = 0.2
    valid_fraction: float = 0.2
    seed: int = 20261129


@dataclass
class Slate:
    """One answered request: ranked films with their scores and the features behind them."""

    user_id: int | None
    item_ids: np.ndarray  # ranked, best first
    scores: np.ndarray
    features: np.ndarray  # (n, len(FEATURE_NAMES)) rows aligned with item_ids
    cold_start: (
        bool  # True when the user had no history: popularity candidates, no personal signals
    )
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.features, columns=list(self.feature_names))
        df.insert(0, "score", self.scores)
        df.insert(0, "item_id", self.item_ids)
        return df


@dataclass
class Recommender:
    state: FeatureState
    user_factors: np.ndarray
    item_factors: np.ndarray
    booster: Any  # lightgbm.Booster
    config: TrainConfig
    meta: dict[str, Any] = field(default_factory=dict)
    _als: Any = None

    # ------------------------------------------------------------------ identity
    @property
    def version(self) -> str:
        """``name@sha12`` of the ranker file: what a Decision records as the model version."""
        sha = self.meta.get("files", {}).get("ranker.txt", "")
        return f"{self.meta.get('name', DEFAULT_NAME)}@{sha[:12] or 'unsaved'}"

    # ------------------------------------------------------------------ serving
    def _profile(
        self, user_id: int | None, history: list[tuple[int, float]] | None
    ) -> tuple[UserProfile, np.ndarray]:
        """The user's profile and the catalogue positions to exclude (already seen)."""
        if history is not None:
            if not history:
                return profile_from_history(
                    self.state, np.array([], np.int64), np.array([]), None
                ), np.array([], np.int64)
            ids = np.array([int(i) for i, _ in history], np.int64)
            stars = np.array([float(r) for _, r in history], np.float32)
            if ((stars < 0.5) | (stars > 5.0)).any():
                raise BadInput("history ratings must be between 0.5 and 5 stars")
            pos = self.state.item_index(ids)
            row = sp.csr_matrix(
                (stars, (np.zeros_like(pos), pos)), shape=(1, self.state.n_items), dtype=np.float32
            )
            factors = self._als_model().recalculate_user(0, row)
            return profile_from_history(
                self.state, pos, stars, np.asarray(factors, np.float32)
            ), pos
        if user_id is None:
            return profile_of(self.state, None, None), np.array([], np.int64)
        upos = self.state.user_index(int(user_id))
        if upos is None:
            return profile_of(self.state, None, None), np.array([], np.int64)
        seen = self.state.history[upos].indices
        return profile_of(self.state, upos, self.user_factors[upos]), seen

    def _als_model(self) -> Any:
        if self._als is None:
            import warnings

            from implicit.cpu.als import AlternatingLeastSquares

            with (
                warnings.catch_warnings()
            ):  # the BLAS thread-pool advice is about fit(), not fold-in
                warnings.simplefilter("ignore", RuntimeWarning)
                als = AlternatingLeastSquares(
                    factors=self.item_factors.shape[1],
                    regularization=self.config.als_regularization,
                    alpha=self.config.als_alpha,
                    num_threads=1,
                )
            als.user_factors = self.user_factors
            als.item_factors = self.item_factors
            self._als = als
        return self._als

    def retrieve(self, profile: UserProfile, exclude: np.ndarray, n: int) -> np.ndarray:
        """Catalogue positions of the top-``n`` films for the profile: ALS scores for a known user,
        recent popularity for a cold-start one. Seen films and never-rated films are excluded."""
        if profile.factors is not None:
            scores = self.item_factors @ profile.factors
        else:
            scores = self.state.item_trend.astype(np.float64) * 1e6 + self.state.item_count
        scores = scores.astype(np.float64)
        scores[self.state.item_count == 0] = -np.inf
        if exclude.size:
            scores[exclude] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        if n <= 0:
            return np.array([], np.int64)
        top = np.argpartition(-scores, n - 1)[:n]
        return top[np.argsort(-scores[top], kind="stable")]

    def features(
        self,
        user_id: int | None = None,
        item_ids: list[int] | np.ndarray | None = None,
        *,
        history: list[tuple[int, float]] | None = None,
        n: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(item_ids, feature matrix, cold_start) for a request: the given candidates, or the
        retrieved ones when ``item_ids`` is None."""
        profile, seen = self._profile(user_id, history)
        cold = profile.factors is None
        if item_ids is None:
            pos = self.retrieve(profile, seen, n or self.config.candidates)
        else:
            pos = self.state.item_index(np.asarray(item_ids, np.int64))
        return self.state.item_ids[pos], compute(self.state, profile, pos, self.item_factors), cold

    def score(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Ranker scores. A DataFrame must have exactly the named feature columns (NaN allowed)."""
        matrix = (
            check_frame(features)
            if isinstance(features, pd.DataFrame)
            else np.asarray(features, np.float32)
        )
        if matrix.ndim != 2 or matrix.shape[1] != len(FEATURE_NAMES):
            raise BadInput(
                f"feature matrix must have shape (n, {len(FEATURE_NAMES)}); got {matrix.shape}"
            )
        if matrix.shape[0] == 0:
            return np.zeros(0)
        return self.booster.predict(matrix, num_threads=1)

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """TreeSHAP contributions (n, n_features + 1; last column = expected value) via LightGBM."""
        if features.shape[0] == 0:
            return np.zeros((0, len(FEATURE_NAMES) + 1))
        return self.booster.predict(features, pred_contrib=True, num_threads=1)

    def recommend(
        self,
        user_id: int | None = None,
        k: int = 10,
        *,
        history: list[tuple[int, float]] | None = None,
        candidates: list[int] | None = None,
        strict: bool = False,
    ) -> Slate:
        """Top-``k`` films for a user.

        - a known user: ALS candidates (seen films excluded), re-ranked by the ranker;
        - ``history`` given: the user is folded in from that history at request time;
        - an unknown user or an empty history (cold start): the most popular recent films, ranked
          with the personal features missing, and ``cold_start=True`` on the slate; with
          ``strict=True`` an unknown user is an error instead.
        """
        if k <= 0:
            raise BadInput(f"k must be positive; got {k}")
        if (
            strict
            and history is None
            and (user_id is None or self.state.user_index(int(user_id)) is None)
        ):
            raise BadInput(
                f"unknown user {user_id!r}: the model knows {self.state.user_ids.size} users",
                hint="pass a request-time history, or drop strict to get the cold-start (popularity) slate",
            )
        ids, matrix, cold = self.features(user_id, candidates, history=history)
        scores = self.score(matrix)
        order = np.argsort(-scores, kind="stable")[:k]
        return Slate(user_id, ids[order], scores[order], matrix[order], cold)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path | str | None = None, name: str = DEFAULT_NAME) -> Path:
        folder = Path(folder) if folder else settings().path("recsys", name, "x").parent
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ranker.txt").write_text(self.booster.model_to_string(), encoding="utf-8")
        np.savez(
            folder / "als_factors.npz",
            user_factors=self.user_factors,
            item_factors=self.item_factors,
            user_ids=self.state.user_ids,
            item_ids=self.state.item_ids,
        )
        np.savez(folder / "feature_state.npz", **self.state.to_arrays())
        from assay.data import sha256_file

        self.meta.update(
            name=name,
            files={f: sha256_file(folder / f) for f in MODEL_FILES},
            features=list(FEATURE_NAMES),
            config=asdict(self.config),
        )
        (folder / "model.json").write_text(
            json.dumps(self.meta, indent=2, sort_keys=True, default=float), encoding="utf-8"
        )
        return folder

    @classmethod
    def load(
        cls,
        folder: Path | str | None = None,
        *,
        expected: dict[str, str] | None = None,
        name: str = DEFAULT_NAME,
    ) -> Recommender:
        """Load a saved model after checking every file's sha256 against ``model.json`` and,
        when given, against ``expected`` (file name -> sha256, e.g. from the registry)."""
        folder = Path(folder) if folder else settings().home / "recsys" / name
        meta_path = folder / "model.json"
        if not meta_path.is_file():
            raise BadInput(
                f"no trained recommender at {folder} (model.json missing)",
                hint="run `assay recsys train` first",
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        from assay.data import sha256_file

        recorded: dict[str, str] = meta.get("files", {})
        for fname in MODEL_FILES:
            path = folder / fname
            if not path.is_file():
                raise BadInput(f"model file missing: {path}")
            actual = sha256_file(path)
            if fname in recorded and actual != recorded[fname]:
                raise ModelIntegrityError(
                    f"{path} has sha256 {actual[:16]}…, but model.json recorded {recorded[fname][:16]}…: refusing to load a modified model file",
                    hint="retrain, or restore the file that was trained",
                )
            if expected is not None and fname in expected and actual != expected[fname]:
                raise ModelIntegrityError(
                    f"{path} has sha256 {actual[:16]}…, but the registry holds {expected[fname][:16]}… for it: refusing to load a model that is not the registered one",
                    hint="register the new weights (assay govern) or restore the registered files",
                )
        if meta.get("features") != list(FEATURE_NAMES):
            raise BadInput(
                f"{folder} was trained with features {meta.get('features')}; this version computes {list(FEATURE_NAMES)}",
                hint="retrain with `assay recsys train`",
            )
        import lightgbm as lgb

        booster = lgb.Booster(model_str=(folder / "ranker.txt").read_text(encoding="utf-8"))
        with np.load(folder / "als_factors.npz", allow_pickle=False) as f:
            user_factors, item_factors = f["user_factors"], f["item_factors"]
        with np.load(folder / "feature_state.npz", allow_pickle=False) as f:
            state = FeatureState.from_arrays({k: f[k] for k in f.files})
        config = TrainConfig(**meta.get("config", {}))
        return cls(state, user_factors, item_factors, booster, config, meta)

    def files(self, folder: Path | str | None = None) -> dict[str, str]:
        """``{path: sha256}`` of the saved model files (what the registry records as weights)."""
        folder = (
            Path(folder)
            if folder
            else settings().home / "recsys" / self.meta.get("name", DEFAULT_NAME)
        )
        return {str(folder / f): h for f, h in self.meta.get("files", {}).items()}


# ---------------------------------------------------------------------- training


def _fit_als(history: sp.csr_matrix, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(
        1, "blas"
    ):  # implicit warns (and slows) when BLAS runs its own thread pool
        als = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.als_regularization,
            alpha=config.als_alpha,
            iterations=config.als_iterations,
            random_state=config.seed,
            num_threads=1,
        )
        als.fit(history, show_progress=False)
    return np.asarray(als.user_factors, np.float32), np.asarray(als.item_factors, np.float32)


def _state_for(ratings: pd.DataFrame, data: MovieLens) -> FeatureState:
    """Feature state from ``ratings``, with each user's tags cut at that user's last rating."""
    last = ratings.groupby("user_id")["ts"].max()
    tags = data.tags[data.tags["user_id"].isin(last.index)]
    tags = tags[tags["ts"].to_numpy() <= last.loc[tags["user_id"]].to_numpy()]
    return build_state(ratings, data.movies, tags)


def grades(ratings: pd.Series) -> np.ndarray:
    """Relevance grade of a held-out rating: 2 for a liked film (>= 4 stars), 1 otherwise."""
    return np.where(ratings.to_numpy() >= POSITIVE_RATING, 2, 1).astype(np.int32)


def _ranker_training_set(
    rec: Recommender, labels: pd.DataFrame, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(features, grades, group sizes, candidate recall) over users with a held-out positive."""
    label_map = {
        (u, i): g
        for u, i, g in zip(
            labels["user_id"], labels["item_id"], grades(labels["rating"]), strict=True
        )
    }
    by_user = labels.groupby("user_id")["item_id"].apply(set).to_dict()
    xs, ys, groups = [], [], []
    hit = total = 0
    for user_id in sorted(by_user):
        ids, matrix, cold = rec.features(int(user_id), n=n)
        if cold or ids.size == 0:
            continue
        y = np.array([label_map.get((user_id, int(i)), 0) for i in ids], np.int32)
        hit += int((y > 0).sum())
        total += len(by_user[user_id])
        if y.max() == 0:
            continue
        xs.append(matrix)
        ys.append(y)
        groups.append(ids.size)
    if not xs:
        raise BadInput(
            "no user has a validation interaction among the retrieved candidates: the data is too small to train a ranker"
        )
    return np.vstack(xs), np.concatenate(ys), np.array(groups), hit / max(total, 1)


def train(
    data: MovieLens,
    config: TrainConfig = TrainConfig(),
    progress: Callable[[str], None] | None = None,
) -> tuple[Recommender, Split]:
    """Train the two-stage model on ``data`` (see module doc). Returns the served model (not yet
    saved) and the split, so the caller can evaluate it on ``split.test``."""
    import lightgbm as lgb

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    split = temporal_split(data.ratings, config.test_fraction, config.valid_fraction)
    if split.valid.empty:
        raise BadInput(
            f"{data.name}: no user has enough ratings to hold out a validation part (need >= 5 each)"
        )

    say("fitting retrieval (ALS) on each user's earliest interactions")
    state_a = _state_for(split.base, data)
    uf, itf = _fit_als(state_a.history, config)
    stage_a = Recommender(state_a, uf, itf, None, config)
    say(f"building ranker training set ({config.train_candidates} candidates per user)")
    x, y, group, recall = _ranker_training_set(stage_a, split.valid, config.train_candidates)

    say(f"training LambdaMART ranker on {x.shape[0]:,} rows, {len(group)} users")
    params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves, "max_depth": config.max_depth, "min_data_in_leaf": config.min_data_in_leaf, "feature_fraction": 0.9,
        "bagging_fraction": 0.8, "bagging_freq": 1, "lambdarank_truncation_level": 20,
        "seed": config.seed, "deterministic": True, "force_row_wise": True, "num_threads": 1, "verbose": -1,
    }  # fmt: skip
    dataset = lgb.Dataset(
        x, label=y, group=group, feature_name=list(FEATURE_NAMES), free_raw_data=True
    )
    booster = lgb.train(params, dataset, num_boost_round=config.rounds)

    say("refitting retrieval and features on everything before each user's test part")
    state_b = _state_for(split.before_test, data)
    uf_b, itf_b = _fit_als(state_b.history, config)
    elapsed = time.perf_counter() - started
    meta = {
        "dataset": {"name": data.name, "manifest": data.manifest},
        "trained_at": time.time(),
        "train_s": round(elapsed, 3),
        "training": {"rows": int(x.shape[0]), "users": len(group), "candidate_recall_valid": round(recall, 4), "ref_ts": state_b.ref_ts},
        "split": {"kind": "per-user temporal", "test_fraction": config.test_fraction, "valid_fraction": config.valid_fraction,
                  "base": len(split.base), "valid": len(split.valid), "test": len(split.test)},
    }  # fmt: skip
    return Recommender(state_b, uf_b, itf_b, booster, config, meta), split
