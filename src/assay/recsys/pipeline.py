"""The steps the CLI, the demo and the benchmark share: load a dataset by name, train and save,
load the served model (checked against the registry when it is registered), evaluate."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from assay.config import settings
from assay.data import movielens
from assay.errors import BadInput
from assay.recsys.model import DEFAULT_NAME, Recommender, TrainConfig, train
from assay.recsys.split import Split, temporal_split


def load_dataset(name: str = "ml-latest-small", users: int | None = None) -> movielens.MovieLens:
    """``ml-latest-small`` (data directory), an official archive name (``ml-100k``, ``ml-1m``,
    ``ml-25m``; downloaded beforehand with ``assay recsys download``), or a path to an unpacked
    release folder or a release zip. ``users`` keeps only the first N users (small runs)."""
    path = Path(name)
    if name == "ml-latest-small" or name in movielens.ARCHIVES:
        data = movielens.load(name, download=False)
    elif path.is_dir():
        data = movielens.load_directory(path)
    elif path.is_file() and path.suffix == ".zip":
        data = movielens.load_archive(path)
    else:
        raise BadInput(
            f"unknown dataset {name!r}: use ml-latest-small, {', '.join(movielens.ARCHIVES)}, or a path to a MovieLens folder or zip"
        )
    return data.slice_users(users) if users else data


def model_folder(name: str = DEFAULT_NAME) -> Path:
    return settings().home / "recsys" / name


def train_and_save(
    dataset: str = "ml-latest-small",
    *,
    users: int | None = None,
    config: TrainConfig = TrainConfig(),
    name: str = DEFAULT_NAME,
    progress: Callable[[str], None] | None = None,
) -> tuple[Recommender, Split, Path]:
    data = load_dataset(dataset, users)
    rec, split = train(data, config, progress)
    rec.meta["dataset"].update(source=dataset, users=users)
    folder = rec.save(model_folder(name), name=name)
    return rec, split, folder


def load_served(name: str = DEFAULT_NAME, *, check_registry: bool = True) -> Recommender:
    """The saved model, refused if any file differs from model.json or from the registry."""
    expected = None
    if check_registry:
        from assay.recsys.governance import registered_hashes

        expected = registered_hashes(name)
    return Recommender.load(model_folder(name), expected=expected, name=name)


def held_out_split(rec: Recommender) -> Split:
    """Re-derive the split the model was trained with (deterministic) from its dataset record."""
    ds = rec.meta.get("dataset", {})
    data = load_dataset(ds.get("source", "ml-latest-small"), ds.get("users"))
    return temporal_split(data.ratings, rec.config.test_fraction, rec.config.valid_fraction)


def evaluate_saved(
    rec: Recommender, k: int = 10, resamples: int = 500, max_users: int | None = None
) -> Any:
    from assay.recsys.evaluation import evaluate

    ev = evaluate(rec, held_out_split(rec).test, k=k, resamples=resamples, max_users=max_users)
    out = model_folder(rec.meta.get("name", DEFAULT_NAME)) / "evaluation.json"
    out.write_text(json.dumps(ev.to_dict(), indent=2, default=float), encoding="utf-8")
    return ev


def quick_config(config: TrainConfig = TrainConfig()) -> TrainConfig:
    """A smaller model for demos and smoke tests (figures are not comparable)."""
    return replace(config, rounds=60, factors=32, als_iterations=10)
