"""``assay bench judges`` (assay.judges.bench): each held-out source reports both recipes the same
way, and every figure, minimum and delta comes from the recipe of that question's default judge."""

from __future__ import annotations

import pytest

from assay.judges import bench as B
from assay.judges.registry import BUILTINS, DEFAULTS


def _ci(value: float | None) -> dict:
    return {"value": value, "ci_low": None if value is None else value - 0.1, "ci_high": None if value is None else value + 0.05}


def _minus(f1: float | None, phrase: float | None) -> dict:
    return _ci(None if f1 is None or phrase is None else round(f1 - phrase, 4))


def _source(pair: float | None, head: float | None, phrase: float | None) -> dict:
    return {"n": 40, "positives": 20, "negatives": 20, "counts_for_min": True, "phrase_f1": phrase,
            "pair": {"f1": _ci(pair), "kappa": _ci(0.5), "precision": _ci(0.8), "recall": _ci(0.7), "threshold": 0.4,
                     "f1_minus_phrase": _minus(pair, phrase)},
            "response_head": {"f1": _ci(head), "kappa": _ci(0.4), "precision": _ci(0.7), "recall": _ci(0.6), "threshold": 0.5,
                              "f1_minus_phrase": _minus(head, phrase), "head": "logistic"}}


# The two recipes disagree on which source is worst, so a figure taken from the wrong one shows.
REFUSAL = {"a": _source(0.9, 0.5, 0.8), "b": _source(0.7, 0.8, 0.75), "c": _source(None, None, 0.6),
           "tiny": {"n": 12, "positives": 2, "negatives": 10, "counts_for_min": False}}
HARMFUL = {"x": _source(0.3, 0.6, 0.1), "y": _source(0.8, 0.4, 0.2)}


def test_recipe_of_follows_the_registrys_default_judge():
    for question in ("refusal", "harmful"):
        expected = "pair" if BUILTINS[DEFAULTS[question]]["kind"] == "pair" else "response_head"
        assert B._recipe_of(question) == expected
    assert B._recipe_of("refusal") == "pair" and B._recipe_of("harmful") == "response_head"  # as committed


def test_min_and_deltas_read_the_named_recipe_and_skip_what_does_not_count():
    assert B._min(REFUSAL, "pair") == (0.7, "b")
    assert B._min(REFUSAL, "response_head") == (0.5, "a")
    assert B._min({"tiny": REFUSAL["tiny"]}, "pair") == (None, None)
    assert B._deltas(REFUSAL, "pair") == {"a": 0.1, "b": -0.05}
    assert B._deltas(REFUSAL, "response_head") == {"a": -0.3, "b": 0.05}


@pytest.mark.parametrize("recipes", [{"refusal": "pair", "harmful": "response_head"},
                                     {"refusal": "response_head", "harmful": "pair"}])
def test_figures_come_from_each_questions_default_recipe(monkeypatch, recipes):
    monkeypatch.setattr(B, "_recipe_of", lambda question: recipes[question])
    out = B.loso_figures(REFUSAL, HARMFUL)
    r_min, r_worst = B._min(REFUSAL, recipes["refusal"])
    h_min, h_worst = B._min(HARMFUL, recipes["harmful"])
    assert out["figures"]["refusal_min_loso_f1"] == r_min and out["detail"]["refusal_worst_source"] == r_worst
    assert out["figures"]["harmful_min_loso_f1"] == h_min and out["detail"]["harmful_worst_source"] == h_worst
    assert out["figures"]["refusal_vs_phrase_min_delta_f1"] == min(B._deltas(REFUSAL, recipes["refusal"]).values())
    assert out["detail"]["recipes"] == recipes
    intervals = out["detail"]["refusal_vs_phrase_delta_ci_by_source"]  # the default recipe's paired intervals
    assert set(intervals) == set(B._deltas(REFUSAL, recipes["refusal"]))
    assert all(intervals[s] == REFUSAL[s][recipes["refusal"]]["f1_minus_phrase"] for s in intervals)
    assert {s: v["value"] for s, v in intervals.items()} == B._deltas(REFUSAL, recipes["refusal"])
    assert out["baseline"] == {"refusal_phrase_min_f1": 0.6, "harmful_no_refusal_phrase_min_f1": 0.1,
                               "refusal_pair_min_f1": 0.7, "refusal_response_head_min_f1": 0.5,
                               "harmful_pair_min_f1": 0.3, "harmful_response_head_min_f1": 0.4}
    if recipes["refusal"] == "pair":
        assert (out["figures"]["refusal_min_loso_f1"], out["figures"]["harmful_min_loso_f1"]) == (0.7, 0.4)
        assert out["figures"]["refusal_vs_phrase_min_delta_f1"] == -0.05
    else:
        assert (out["figures"]["refusal_min_loso_f1"], out["figures"]["harmful_min_loso_f1"]) == (0.5, 0.3)
        assert out["figures"]["refusal_vs_phrase_min_delta_f1"] == -0.3


def test_recipe_entry_has_the_same_form_for_both_recipes():
    from assay.judges.validate import agreement

    judged = agreement([True, True, False, False, True, False], [True, False, False, False, True, True], resamples=50)
    entry = B._recipe_entry(judged, 0.123456, {"value": 0.1, "ci_low": -0.2, "ci_high": 0.3})
    assert set(entry) == {"f1", "kappa", "precision", "recall", "threshold", "f1_minus_phrase"} and entry["threshold"] == 0.1235
    assert entry["f1_minus_phrase"] == {"value": 0.1, "ci_low": -0.2, "ci_high": 0.3}
    for key in ("f1", "kappa", "precision", "recall"):
        assert set(entry[key]) == {"value", "ci_low", "ci_high"}
    assert entry["f1"]["value"] == pytest.approx(2 / 3, abs=1e-4) and entry["f1"]["ci_low"] is not None


@pytest.mark.slow
def test_quick_loso_reports_both_recipes_per_source():
    """A real leave-one-source-out over the first four refusal sources (embeds ~500 answers)."""
    out = B.loso("refusal", quick=True)
    assert 1 <= len(out) <= B.QUICK_SOURCES
    counted = [v for v in out.values() if v["counts_for_min"]]
    assert counted
    for v in out.values():  # a source that is not counted says why, with its counts
        assert v["counts_for_min"] or (v["not_fitted"] and {"n", "positives", "negatives"} <= set(v))
    for v in counted:
        assert set(v["pair"]) == {"f1", "kappa", "precision", "recall", "threshold", "f1_minus_phrase"}
        assert set(v["response_head"]) == {"f1", "kappa", "precision", "recall", "threshold", "f1_minus_phrase", "head"}
        for recipe in B.RECIPES:
            assert v[recipe]["f1"]["ci_low"] is not None and v[recipe]["f1"]["ci_low"] <= v[recipe]["f1"]["value"]
            delta = v[recipe]["f1_minus_phrase"]
            assert delta["value"] == pytest.approx(v[recipe]["f1"]["value"] - v["phrase_f1"], abs=2e-4)
            assert delta["ci_low"] <= delta["value"] <= delta["ci_high"]
        assert v["phrase_f1"] is not None
    figures = B.loso_figures(out, out)["figures"]
    assert figures["refusal_min_loso_f1"] == B._min(out, "pair")[0]
