"""A small trained reference recommender shared by the recsys tests (trained once per session)."""

from __future__ import annotations

from dataclasses import replace

import pytest


@pytest.fixture(scope="session")
def small_data():
    from assay.data.movielens import load_latest_small

    return load_latest_small().slice_users(80)


@pytest.fixture(scope="session")
def trained(small_data, tmp_path_factory):
    """(recommender, split, folder) trained on the first 80 users with a small config."""
    from assay.recsys.model import TrainConfig, train

    rec, split = train(small_data, replace(TrainConfig(), rounds=40, factors=24, als_iterations=8))
    folder = rec.save(tmp_path_factory.mktemp("model") / "movielens-ref")
    return rec, split, folder
