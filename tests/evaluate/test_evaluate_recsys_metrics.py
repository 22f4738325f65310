"""Recommender metrics against the public peer vectors and trec_eval's own test collection."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from assay.evaluate import recsys_metrics as rm

TOL = 1e-4
PEER_DIR = Path(os.environ["ASSAY_DATA_DIR"]) / "recsys_peer_vectors"


@pytest.fixture(scope="module")
def peer() -> dict:
    return json.loads((PEER_DIR / "vectors.json").read_text())


def test_ms_recommenders_fixture_at_k10(peer):
    case = peer["ms_recommenders_fixture"]
    truth: dict = defaultdict(dict)
    for u, i in zip(case["rating_true"]["user"], case["rating_true"]["item"], strict=True):
        truth[u][i] = 1.0
    scored: dict = defaultdict(list)
    p = case["rating_pred"]
    for u, i, s in zip(p["user"], p["item"], p["prediction"], strict=True):
        scored[u].append((s, i))
    recs = {u: [i for _, i in sorted(v, key=lambda t: -t[0])] for u, v in scored.items()}
    got = rm.ranking_metrics(recs, truth, k=10, resamples=200)
    expected = case["expected_at_k10"]
    assert got["precision"].value == pytest.approx(expected["precision"], abs=TOL)
    assert got["recall"].value == pytest.approx(expected["recall"], abs=TOL)
    assert got["ndcg"].value == pytest.approx(expected["ndcg_binary"], abs=TOL)
    assert got["map"].value == pytest.approx(expected["map_at_k"], abs=TOL)
    assert got["mrr"].value == pytest.approx(expected["mrr_first_hit"], abs=TOL)
    for agg in got.values():
        assert agg.n == 3
        assert agg.ci_low <= agg.value <= agg.ci_high


def test_wikipedia_dcg_example(peer):
    case = peer["wikipedia_dcg_example"]
    truth = dict(enumerate(case["true_gains_by_item"]))
    assert rm.ndcg(case["ranking"], truth, k=case["k"]) == pytest.approx(case["expected_ndcg"], abs=1e-3)


def _recbole_users(case):
    """RecBole gives hit flags + |R|; build item lists with the same hits and relevant-set size."""
    recs, truth = {}, {}
    for u, (hits, n_rel) in enumerate(zip(case["pos_index"], case["pos_len"], strict=True)):
        ranked = [f"u{u}-r{j}" for j in range(len(hits))]
        relevant = {ranked[j] for j, h in enumerate(hits) if h}
        relevant |= {f"u{u}-extra{j}" for j in range(n_rel - len(relevant))}
        recs[u], truth[u] = ranked, dict.fromkeys(relevant, 1.0)
    return recs, truth


@pytest.mark.parametrize(
    ("metric", "key"),
    [("ndcg", "ndcg"), ("mrr", "mrr"), ("recall", "recall"), ("precision", "precision"), ("map", "map")],
)
def test_recbole_topk_per_user(peer, metric, key):
    case = peer["recbole_topk"]
    recs, truth = _recbole_users(case)
    per_user = rm.per_user_metrics(recs, truth, k=3, metrics=[metric])[metric]
    expected = case[f"expected_{key}_at_3_per_user"]
    assert [per_user[u] for u in range(4)] == pytest.approx(expected, abs=1e-9)


def test_recbole_coverage_and_gini_conventions(peer):
    case = peer["recbole_topk"]
    recs = dict(enumerate(case["item_matrix"]))
    catalogue = list(range(case["num_items"]))
    assert rm.item_coverage(recs, catalogue) == pytest.approx(case["expected_item_coverage"], abs=TOL)
    assert rm.gini_index(recs, catalogue) == pytest.approx(case["expected_gini_recbole"], abs=1e-9)
    cross = peer["gini_cross_library_same_input"]
    assert rm.gini_index(recs, catalogue) == pytest.approx(cross["recbole_GiniIndex_and_lenskit_ListGini"], abs=TOL)
    assert rm.gini_index(recs, catalogue, convention="elliot") == pytest.approx(
        cross["elliot_Gini_reports_1_minus_G_over_n_minus_1"], abs=TOL
    )
    assert rm.gini_index(recs, catalogue, convention="evidently") == pytest.approx(
        cross["evidently_PopularityBias_gini_recommended_items_only_n_minus_1"], abs=TOL
    )
    # the textbook entropy noted in the vectors
    assert rm.shannon_entropy(recs) == pytest.approx(1.84136, abs=TOL)
    agg = rm.beyond_accuracy_metrics(recs, catalogue, k=None, resamples=200)
    assert agg["coverage"].value == pytest.approx(0.875)
    assert agg["gini"].value == pytest.approx(case["expected_gini_recbole"])
    assert agg["gini"].n == 5 and agg["gini"].ci_low <= agg["gini"].ci_high


def test_lenskit_negative_gains_and_empty_truth(peer):
    case = peer["lenskit_ndcg"]["negative_gains_case"]
    truth = dict(zip(case["recs"], case["truth_gain"], strict=True))
    assert rm.ndcg(case["recs"], truth, discount="lenskit") == pytest.approx(case["expected"], abs=TOL)
    assert math.isnan(rm.ndcg([1, 2], {}))


def test_evidently_drops_users_without_feedback(peer):
    data = peer["evidently_ndcg"]["data"]
    recs: dict = defaultdict(list)
    truth: dict = defaultdict(dict)
    for u, r, t in sorted(zip(data["user"], data["rank"], data["target"], strict=True), key=lambda x: (x[0], x[1])):
        recs[u].append(f"{u}{r}")
        if t:
            truth[u][f"{u}{r}"] = 1.0
    for k, expected in peer["evidently_ndcg"]["expected"].items():
        got = rm.ranking_metrics(recs, truth, k=int(k), metrics=["ndcg"], resamples=100)["ndcg"]
        assert got.value == pytest.approx(expected, abs=TOL)
        assert got.n == 2


def test_ranx_jarvelin(peer):
    case = peer["ranx_ndcg_jarvelin"]
    truth = {doc: float(g) for doc, g in case["qrels"]}
    for name, run in case["runs"].items():
        assert rm.ndcg(run, truth, k=case["k"]) == pytest.approx(case["expected"][name], abs=TOL)


def _trec_expected(path: Path) -> dict[str, dict[str, float]]:
    out: dict = defaultdict(dict)
    for line in path.read_text().splitlines():
        name, qid, value = line.split()
        try:
            out[qid][name] = float(value)
        except ValueError:  # runid, relstring
            continue
    return out


def test_trec_eval_test_collection_per_query_and_all():
    d = PEER_DIR / "trec_eval_test"
    qrels = rm.read_trec_qrels(d / "qrels.test")
    run = rm.read_trec_run(d / "results.test")
    expected = _trec_expected(d / "out.test.aq")
    queries = sorted(set(run) & set(qrels))
    assert len(queries) == int(expected["all"]["num_q"])
    measures = {
        "map": lambda r, t: rm.average_precision(r, t),
        "P_10": lambda r, t: rm.precision(r, t, 10),
        "P_5": lambda r, t: rm.precision(r, t, 5),
        "P_100": lambda r, t: rm.precision(r, t, 100),
        "recip_rank": lambda r, t: rm.reciprocal_rank(r, t),
        "ndcg": lambda r, t: rm.ndcg(r, t),
        "ndcg_cut_10": lambda r, t: rm.ndcg(r, t, 10),
        "Rprec": lambda r, t: rm.r_precision(r, t),
        "recall_10": lambda r, t: rm.recall(r, t, 10),
    }
    checked = 0
    for name, fn in measures.items():
        values = []
        for q in queries:
            value = fn(run[q], qrels[q])
            values.append(value)
            if name in expected[q]:
                assert round(value, 4) == pytest.approx(expected[q][name], abs=1e-9), (name, q)
                checked += 1
        if name in expected["all"]:
            assert round(float(np.mean(values)), 4) == pytest.approx(expected["all"][name], abs=1e-9), name
            checked += 1
    assert checked >= 25


def test_singh_joachims_exposure_toy(peer):
    case = peer["exposure_toy_singh_joachims"]
    relevance = {f"A{j}": r for j, r in enumerate(case["relevance"]["A"])}
    relevance |= {f"B{j}": r for j, r in enumerate(case["relevance"]["B"])}
    ranking = sorted(relevance, key=lambda i: -relevance[i])
    groups = {i: i[0] for i in ranking}
    exp = rm.group_exposure(ranking, groups, relevance)
    e = case["expected"]
    assert exp["A"]["exposure"] == pytest.approx(e["exposure_A"], abs=TOL)
    assert exp["B"]["exposure"] == pytest.approx(e["exposure_B"], abs=TOL)
    assert exp["B"]["exposure"] / exp["A"]["exposure"] == pytest.approx(e["exposure_ratio_B_over_A"], abs=TOL)
    assert exp["A"]["utility"] == pytest.approx(e["utility_A"], abs=TOL)
    assert exp["B"]["utility"] == pytest.approx(e["utility_B"], abs=TOL)
    assert rm.disparate_treatment_ratio(exp, "A", "B") == pytest.approx(e["DTR_A_over_B"], abs=TOL)
    assert exp["B"]["share"] == pytest.approx(e["awrf_share_B_log_weights"], abs=TOL)
    assert abs(exp["B"]["share"] - 0.5) == pytest.approx(e["awrf_abs_gap_to_0.5"], abs=TOL)
    ee = rm.expected_exposure([ranking], dict.fromkeys(ranking, 1.0), gamma=0.5)
    for key, value in case["expected_exposure_rbp_gamma_0.5_all_six_equally_relevant"].items():
        assert ee[key] == pytest.approx(value, abs=1e-3)
    # across users: one list per user, the same ranking -> the same share, n = users
    multi = rm.exposure_by_group({1: ranking, 2: ranking}, groups, resamples=50)
    assert multi["exposure_share[B]"].value == pytest.approx(e["awrf_share_B_log_weights"], abs=TOL)
    assert multi["exposure[A]"].value == pytest.approx(e["exposure_A"], abs=TOL)
    assert multi["exposure[A]"].n == 2


def test_popularity_bias_arp_aplt_hand_computed(peer):
    case = peer["recbole_topk"]
    recs = dict(enumerate(case["item_matrix"]))
    pop = {int(k): float(v) for k, v in case["item_count_train"].items()} | {7: 0.0, 0: 0.0}
    arp = rm.average_recommendation_popularity(recs, pop)
    # user 0 gets items 5, 7, 3 -> (4 + 0 + 2) / 3
    assert arp[0] == pytest.approx(2.0)
    assert arp[3] == pytest.approx((0 + 3 + 5) / 3)
    tail = rm.long_tail_items(pop, head_fraction=0.2)  # 8 items -> head = top 2 (6, 5)
    assert tail == {0, 1, 2, 3, 4, 7}
    aplt = rm.average_percentage_long_tail(recs, tail)
    assert aplt[0] == pytest.approx(2 / 3)  # 7 and 3 are tail, 5 is head
    assert aplt[3] == pytest.approx(2 / 3)  # 1 and 4 are tail, 6 is head
    agg = rm.beyond_accuracy_metrics(recs, list(range(8)), pop, k=None, head_fraction=0.2, resamples=100)
    assert agg["arp"].value == pytest.approx(np.mean(list(arp.values())))
    assert agg["aplt"].value == pytest.approx(np.mean(list(aplt.values())))
    assert agg["arp"].n == 5


def test_steck_calibration_with_smoothing():
    genres = {"a": ["drama"], "b": ["comedy"], "c": ["drama", "comedy"], "d": ["drama"]}
    # history: p(drama) = (1 + 0 + 1/2) / 3 = 0.5 = p(comedy); list is all drama -> q(comedy) = 0
    value = rm.calibration_kl(["a", "b", "c"], ["a", "d"], genres, alpha=0.01)
    q_drama = 0.99 * 1.0 + 0.01 * 0.5
    q_comedy = 0.99 * 0.0 + 0.01 * 0.5
    assert value == pytest.approx(0.5 * math.log(0.5 / q_drama) + 0.5 * math.log(0.5 / q_comedy), abs=1e-12)
    assert rm.calibration_kl(["a", "b"], ["c"], genres) == pytest.approx(0.0, abs=1e-12)
    agg, _per_user = rm.calibration({1: ["a", "d"], 2: ["c"]}, {1: ["a", "b", "c"], 2: ["a", "b"]}, genres, resamples=50)
    assert agg.n == 2 and agg.value == pytest.approx((value + 0.0) / 2)
    # without smoothing the missing genre would make KL infinite; alpha keeps it finite
    assert math.isfinite(rm.calibration_kl(["b"], ["a"], genres))


def test_user_group_gaps():
    per_user = {1: 1.0, 2: 0.8, 3: 0.2, 4: 0.4, 5: math.nan}
    groups = {1: "old", 2: "old", 3: "young", 4: "young", 5: "young"}
    out = rm.group_gaps(per_user, groups, resamples=300)
    assert out["mean[old]"].value == pytest.approx(0.9)
    assert out["mean[young]"].value == pytest.approx(0.3)
    assert out["mean[young]"].n == 2
    assert out["gap"].value == pytest.approx(0.6)
    assert out["ratio"].value == pytest.approx(1 / 3)
    assert out["gap"].n == 4
    # with two users per group, a resample often misses a group (the gap is undefined there):
    # counted, and past (1 - level) / 2 of the resamples the interval is unavailable, not conditional
    assert out["gap"].resamples == 300 and out["gap"].undefined > 0.025 * 300
    assert not out["gap"].available and "undefined in" in out["gap"].note
    many = {u: v for u, v in enumerate([1.0, 0.8, 0.9, 0.7] * 10 + [0.2, 0.4, 0.3, 0.1] * 10)}
    big = rm.group_gaps(many, {u: "old" if u < 40 else "young" for u in many}, resamples=300)
    assert big["gap"].undefined == 0 and big["gap"].ci_low <= 0.6 <= big["gap"].ci_high
