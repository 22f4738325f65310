"""Shilling attacks on MovieLens against the reference recommender: injection, detectors, and the
3% attack with the prediction shift measured before and after mitigation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assay.errors import BadInput
from assay.redteam.shilling import ATTACKS, AttackConfig, evaluate_detectors, inject, to_matrix
from assay.stats import rate_interval


@pytest.fixture(scope="module")
def movielens():
    from assay.data import movielens

    return movielens.load_latest_small()


def test_attack_profiles_have_the_configured_size_and_shape(movielens):
    ratings = movielens.ratings
    n_users = ratings["user_id"].nunique()
    for kind in ATTACKS:
        inj = inject(ratings, AttackConfig(kind=kind, attack_size=0.03, filler_size=0.01), movies=movielens.movies)
        fake = inj.ratings[inj.ratings["user_id"].isin(inj.fake_users)]
        assert inj.fake_users.size == round(0.03 * n_users) == 18
        per_user = fake.groupby("user_id")
        assert (per_user.size() >= 0.01 * movielens.movies.shape[0]).all()
        # every fake profile pushes every target with the maximum rating
        pushed = fake[fake["item_id"].isin(inj.targets)]
        assert len(pushed) == inj.fake_users.size * inj.targets.size and (pushed["rating"] == 5.0).all()
        assert fake["rating"].between(0.5, 5.0).all() and (fake["rating"] * 2 % 1 == 0).all()
        assert len(inj.ratings) == len(ratings) + len(fake)
    with pytest.raises(BadInput, match="attack_size"):
        AttackConfig(attack_size=0)
    with pytest.raises(BadInput, match="unknown shilling attack"):
        AttackConfig(kind="nuke")
    with pytest.raises(BadInput, match="not in the ratings"):
        inject(ratings, AttackConfig(), targets=[-5])


def test_detectors_report_auroc_precision_recall(movielens):
    inj = inject(movielens.ratings, AttackConfig(kind="segment", attack_size=0.03), movies=movielens.movies)
    reports, flags = evaluate_detectors(to_matrix(inj.ratings), inj.fake_users)
    by = {r.name: r for r in reports}
    assert set(by) == {"rdma", "wdma", "degsim", "length_variance", "pca", "combined"}
    assert by["rdma"].auroc > 0.95 and by["rdma"].recall == 1.0  # deviation from item means gives them away
    assert by["degsim"].auroc > 0.95  # segment profiles are near-identical to each other
    for r in reports:
        assert 0.0 <= r.auroc <= 1.0 and 0.0 <= r.precision <= 1.0 and 0.0 <= r.recall <= 1.0
    assert flags["combined"].sum() == by["combined"].flagged


def test_shilling_at_three_percent_with_mitigation(movielens):
    from assay.recsys.model import TrainConfig
    from assay.redteam.recsys import run_shilling

    cfg = TrainConfig(factors=16, als_iterations=5, rounds=30, train_candidates=40, candidates=80)
    report = run_shilling(movielens, AttackConfig(kind="average", attack_size=0.03, filler_size=0.02), train_config=cfg,
                          max_users=60, n_reference=30)
    out = report.to_dict()
    assert out["attack"]["fake_profiles"] == 18
    assert out["clean"]["prediction_shift"] == 0.0 and out["clean"]["raw_score_shift"] == 0.0
    for name in ("attacked", "mitigated"):
        m = out[name]
        assert m["pairs"] > 100
        for key in ("prediction_shift", "control_shift", "raw_score_shift", "rank_percentile", "hit_ratio"):
            assert math.isfinite(m[key])
        # the hit ratio is a share of the measured users: its interval is the project's rate interval
        hits = round(m["hit_ratio"] * out["users_measured"])
        assert (m["hit_ratio_low"], m["hit_ratio_high"]) == rate_interval(hits, out["users_measured"])
    # the mitigation removed the injected profiles it was built to find
    assert out["removed"]["fake"] == 18 and out["removed"]["fake_total"] == 18
    # shift measured on the same (user, target) pairs before and after
    assert out["attacked"]["pairs"] == out["mitigated"]["pairs"]
    assert not np.isclose(out["attacked"]["raw_score_shift"], out["mitigated"]["raw_score_shift"])
