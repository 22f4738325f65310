"""Ranker attributions: the fast TreeSHAP equals LightGBM's pred_contrib, sums to the score, and
"why A above B" sums to the score gap on the request's own candidate set."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from assay.errors import BadInput
from assay.explain.ranking import attribute, contributions, explain_request, top_signals, why_above
from assay.explain.treeshap import compile_model
from assay.explain.treeshap import contributions as fast_contributions
from assay.recsys.features import FEATURE_NAMES


def test_fast_treeshap_equals_lightgbm_on_the_ranker(trained):
    rec, _split, _ = trained
    _ids, matrix, _ = rec.features(int(rec.state.user_ids[5]), n=300)
    _cold_ids, cold_matrix, cold = rec.features(None, n=100)
    assert cold and np.isnan(cold_matrix).any()  # missing values take LightGBM's default directions
    x = np.vstack([matrix, cold_matrix])
    reference = rec.contributions(x)
    fast = contributions(rec, x, "fast")
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast.sum(axis=1), rec.score(x), atol=1e-9)


@pytest.mark.parametrize("missing", ["nan", "zero"])
def test_fast_treeshap_equals_lightgbm_on_awkward_models(missing):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 6))
    x[:, 2] = np.round(x[:, 2])  # many exact zeros
    x[rng.random(x.shape) < 0.15] = np.nan
    y = (np.nan_to_num(x[:, 0]) + (x[:, 2] == 0) + rng.normal(scale=0.3, size=3000) > 0.5).astype(
        int
    )
    params = {"objective": "binary", "num_leaves": 12, "max_depth": 5, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5,
              "zero_as_missing": missing == "zero", "use_missing": True}  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(x, y), 30)
    q = np.vstack([x[:200], np.zeros((3, 6)), np.full((2, 6), np.nan)])
    np.testing.assert_allclose(
        fast_contributions(compile_model(booster), q),
        booster.predict(q, pred_contrib=True),
        atol=1e-9,
    )


def test_unsupported_models_fall_back_to_lightgbm():
    from assay.explain.ranking import shap_tables

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 6))
    deep = lgb.train(
        {
            "objective": "regression",
            "num_leaves": 64,
            "max_depth": -1,
            "min_data_in_leaf": 2,
            "verbose": -1,
            "num_threads": 1,
        },
        lgb.Dataset(x, x[:, 0] * x[:, 1] + x.sum(axis=1)),
        3,
    )
    with pytest.raises(BadInput, match="distinct features"):
        compile_model(deep, max_slots=2)
    x[:, 0] = rng.integers(0, 6, size=4000)
    categorical = lgb.train(
        {
            "objective": "regression",
            "verbose": -1,
            "num_threads": 1,
            "min_data_per_group": 5,
            "cat_smooth": 1,
        },
        lgb.Dataset(x, (x[:, 0] == 3) * 5.0 + x[:, 1], categorical_feature=[0]),
        5,
    )
    with pytest.raises(BadInput, match="categorical"):
        compile_model(categorical)
    assert shap_tables(categorical) is None


def test_request_attributions_and_pairs(trained):
    rec, _split, _ = trained
    user = int(rec.state.user_ids[2])
    att, cold = explain_request(rec, user)
    assert not cold and att.contributions.shape == (att.item_ids.size, len(FEATURE_NAMES))
    assert np.all(np.diff(att.scores) <= 0)
    np.testing.assert_allclose(
        att.contributions.sum(axis=1) + att.expected_value, att.scores, atol=1e-9
    )
    signals = top_signals(att, int(att.item_ids[0]), 3)
    assert len(signals) == 3 and abs(signals[0]["contribution"]) >= abs(signals[2]["contribution"])
    a, b = int(att.item_ids[0]), int(att.item_ids[7])
    pair = why_above(att, a, b)
    assert pair.a_above_b and pair.rank_a == 1 and pair.rank_b == 8
    assert sum(d["difference"] for d in pair.differences) == pytest.approx(
        pair.score_a - pair.score_b, abs=1e-9
    )
    assert set(att.as_dict(a)) == set(FEATURE_NAMES)
    with pytest.raises(BadInput, match="not in this request's candidate set"):
        why_above(att, a, 99999999)
    with pytest.raises(BadInput, match="two different"):
        why_above(att, a, a)


def test_pair_depends_on_the_candidate_set(trained):
    rec, _split, _ = trained
    user = int(rec.state.user_ids[2])
    att, _ = explain_request(rec, user)
    a, b = int(att.item_ids[0]), int(att.item_ids[1])
    small, _ = explain_request(rec, user, candidates=[a, b])
    rank_col = FEATURE_NAMES.index("retrieval_rank")
    assert small.values[:, rank_col].max() <= 1  # ranks are within the request's own candidates
    ids, matrix, _ = rec.features(user, [a, b])
    direct = attribute(rec, ids, matrix, "lightgbm")
    np.testing.assert_allclose(np.sort(direct.scores), np.sort(small.scores), atol=1e-9)
