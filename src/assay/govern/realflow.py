"""The governance flow on real public data, shared by the demo and the end-to-end test.

1. Register the MovieLens ratings (purposes recommendation, research) and the Davidson tweets
   (purpose safety_classification, restriction research_only).
2. Train something real from each: a LightGBM LambdaRank ranker on MovieLens ratings and a
   TF-IDF + logistic-regression classifier on a slice of the Davidson tweets. Both write plain
   weights files (LightGBM's text model; the classifier's coefficients as .npz + its vocabulary
   as JSON, no pickles) that are registered by sha256.
3. Record the ranker's held-out nDCG@10 as an ``EvaluationResult`` on the exact weights.

The classifier engineer owns the production (MiniLM) classifiers; this one exists only so that
a model really derived from the Davidson data is in the registry.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.records import EvaluationResult
from assay.store import Store
from assay.store.schema import Asset

from .registry import Actor, register_dataset, register_evaluation, register_model, resolve


@dataclass
class Flow:
    movielens: dict[str, Any]
    davidson: dict[str, Any]
    ranker: dict[str, Any]
    classifier: dict[str, Any]
    ranker_metrics: dict[str, float]
    classifier_metrics: dict[str, float]
    ranker_weights: Path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def train_ranker(ratings_csv: Path, out_dir: Path, n_users: int) -> tuple[Path, dict[str, float]]:
    """LightGBM LambdaRank on per-user candidate lists; features are item/user statistics from
    the training users only; relevance is the held-out rating (>= 4 relevant)."""
    import lightgbm as lgb
    import pandas as pd
    from sklearn.metrics import ndcg_score

    ratings = pd.read_csv(ratings_csv)
    users = np.sort(ratings["userId"].unique())[:n_users]
    ratings = ratings[ratings["userId"].isin(users)]
    rng = np.random.default_rng(0)
    test_users = set(rng.choice(users, size=max(2, len(users) // 5), replace=False).tolist())
    train = ratings[~ratings["userId"].isin(test_users)]
    item_stats = train.groupby("movieId")["rating"].agg(["mean", "count"]).rename(columns={"mean": "item_mean", "count": "item_n"})
    user_stats = ratings.groupby("userId")["rating"].agg(["mean", "count"]).rename(columns={"mean": "user_mean", "count": "user_n"})

    def features(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[int]]:
        f = frame.join(item_stats, on="movieId").join(user_stats, on="userId").fillna({"item_mean": 3.5, "item_n": 0})
        f = f.sort_values("userId")
        x = f[["item_mean", "item_n", "user_mean", "user_n"]].to_numpy(np.float32)
        y = np.clip(np.floor(f["rating"].to_numpy()) - 1, 0, 4).astype(int)
        return x, y, f.groupby("userId", sort=True).size().tolist()

    x_train, y_train, g_train = features(train)
    test = ratings[ratings["userId"].isin(test_users)]
    x_test, y_test, g_test = features(test)
    model = lgb.LGBMRanker(n_estimators=40, num_leaves=15, learning_rate=0.1, min_child_samples=10, verbose=-1,
                           random_state=0, n_jobs=1)
    model.fit(x_train, y_train, group=g_train)
    scores = model.predict(x_test)
    ndcgs, start = [], 0
    for size in g_test:
        if size >= 2:
            ndcgs.append(ndcg_score([y_test[start:start + size]], [scores[start:start + size]], k=10))
        start += size
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "ranker.txt"
    model.booster_.save_model(str(path))
    from assay.stats import mean_aggregate

    agg = mean_aggregate(ndcgs)  # the interval the deployment gate weighs (bootstrap over users)
    return path, {"ndcg@10": float(np.mean(ndcgs)), "users_tested": float(len(ndcgs)), "ndcg@10_ci": [agg.ci_low, agg.ci_high]}


def train_classifier(tweets_csv: Path, out_dir: Path, n_rows: int) -> tuple[list[Path], dict[str, float]]:
    """TF-IDF + logistic regression on a slice of the tweets (3 classes); weights as .npz + JSON."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    frame = pd.read_csv(tweets_csv).sample(n=n_rows, random_state=0)
    split = int(len(frame) * 0.8)
    vectoriser = TfidfVectorizer(min_df=2, max_features=5000, ngram_range=(1, 2))
    x_train = vectoriser.fit_transform(frame["tweet"].iloc[:split])
    clf = LogisticRegression(max_iter=300, class_weight="balanced")
    clf.fit(x_train, frame["class"].iloc[:split])
    predicted = clf.predict(vectoriser.transform(frame["tweet"].iloc[split:]))
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "classifier.npz"
    with open(weights, "wb") as f:  # np.savez would name the file itself; keep the exact path
        np.savez(f, coef=clf.coef_, intercept=clf.intercept_, idf=vectoriser.idf_)
    vocab = out_dir / "vocabulary.json"
    vocab.write_text(json.dumps({k: int(v) for k, v in sorted(vectoriser.vocabulary_.items())}))
    return [weights, vocab], {"macro_f1": float(f1_score(frame["class"].iloc[split:], predicted, average="macro"))}


def run_flow(store: Store, actor: Actor, data_dir: Path, work_dir: Path, quick: bool = True) -> Flow:
    """Register both datasets, train and register both models, record the ranker's evaluation.
    Re-runnable: reuses registered assets whose files have not changed."""
    ratings_csv = data_dir / "movielens_latest_small" / "ml-latest-small" / "ratings.csv"
    tweets_csv = data_dir / "davidson_hate_speech" / "data" / "labeled_data.csv"
    movielens = _dataset_once(store, actor, "movielens-ratings", ratings_csv, ["recommendation", "research"], [],
                              "MovieLens usage licence (GroupLens), research and non-commercial")
    davidson = _dataset_once(store, actor, "davidson-tweets", tweets_csv, ["safety_classification"], ["research_only"], "MIT")
    size = "quick" if quick else "full"
    ranker_path, ranker_metrics = _trained_once(work_dir / f"ranker-{size}", ["ranker.txt"],
                                                lambda d: train_ranker(ratings_csv, d, 200 if quick else 610))  # quick: 40 held-out users, enough for the gate's min_n
    clf_paths, clf_metrics = _trained_once(work_dir / f"classifier-{size}", ["classifier.npz", "vocabulary.json"],
                                           lambda d: train_classifier(tweets_csv, d, 3000 if quick else 24783))
    ranker_path = ranker_path[0]
    ranker = _model_once(store, actor, "movielens-ranker", [ranker_path], "lightgbm", movielens["id"], "train-ranker")
    classifier = _model_once(store, actor, "davidson-classifier", clf_paths, "scikit-learn", davidson["id"], "train-classifier")
    result = EvaluationResult(
        run_id=f"ranker-eval-{_sha(ranker_path)[:12]}", suite="movielens-heldout-users", target=ranker["id"],
        metrics={"ndcg@10": ranker_metrics["ndcg@10"]},
        intervals={"ndcg@10": tuple(ranker_metrics["ndcg@10_ci"])} if "ndcg@10_ci" in ranker_metrics else {},
        n={"ndcg@10": int(ranker_metrics["users_tested"])},
        gate_verdicts={}, dataset_hashes={"movielens-ratings": movielens["content_hash"]},
        model_hashes={"ranker.txt": _sha(ranker_path)})
    with store.session() as s:
        done = s.scalar(sa.select(Asset.id).where(Asset.kind == "evaluation", Asset.subject_id == ranker["id"],
                                                  Asset.name == f"{result.suite}:{result.run_id}"))
    if done is None:
        register_evaluation(store, actor, result, ranker["id"])
    return Flow(movielens, davidson, ranker, classifier, ranker_metrics, clf_metrics, ranker_path)


def _trained_once(folder: Path, names: list[str], train) -> tuple[list[Path], dict[str, float]]:
    """Train into ``folder`` unless a previous run left the weights and their metrics there."""
    metrics_file = folder / "metrics.json"
    paths = [folder / n for n in names]
    if metrics_file.is_file() and all(p.is_file() for p in paths):
        return paths, json.loads(metrics_file.read_text())
    produced, metrics = train(folder)
    metrics_file.write_text(json.dumps(metrics))
    return (produced if isinstance(produced, list) else [produced]), metrics


def _dataset_once(store: Store, actor: Actor, name: str, path: Path, purposes, restrictions, licence) -> dict[str, Any]:
    from .registry import asset_view, file_manifest, manifest_hash

    with store.session() as s:
        try:
            current = resolve(s, f"dataset:{name}")
        except Exception:
            current = None
        if current is not None and current.content_hash == manifest_hash(file_manifest(path)) \
                and current.purposes == sorted(purposes) and current.restrictions == sorted(restrictions):
            return asset_view(s, current)
    return register_dataset(store, actor, name=name, uri=str(path), purposes=purposes, restrictions=restrictions,
                            licence=licence)


def _model_once(store: Store, actor: Actor, name: str, weights: list[Path], framework: str, dataset_id: str,
                run: str) -> dict[str, Any]:
    from .registry import asset_view, file_manifest, manifest_hash

    root = weights[0].parent
    with store.session() as s:
        try:
            current = resolve(s, f"model:{name}")
        except Exception:
            current = None
        if current is not None and current.content_hash == manifest_hash(file_manifest(root, [w.name for w in weights])):
            return asset_view(s, current)
    return register_model(store, actor, name=name, weights=weights, uri=str(root), framework=framework,
                          trained_on=[dataset_id], training_run=run)
