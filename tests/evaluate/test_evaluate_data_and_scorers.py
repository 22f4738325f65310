"""Loaders read the official layouts (counts from each SOURCE.md); scorers and the BBQ bias
score on hand-computed cases."""

from __future__ import annotations

import asyncio
import math
from collections import Counter

import pytest

from assay.data import advbench, bbq, bold, crows_pairs, harmbench, truthfulqa
from assay.errors import BadInput
from assay.evaluate.items import EvalItem
from assay.evaluate.report import compute_metrics
from assay.evaluate.scorers import (
    BBQScorer,
    MultipleChoice,
    build_scorer,
    parse_choice,
)
from assay.evaluate.targets import Output
from assay.judges.llm import parse_verdict


def test_loader_counts_match_source_md():
    assert len(harmbench.load("all")) == 400
    assert len(harmbench.load("test")) == 320 and len(harmbench.load("val")) == 80
    assert Counter(b.functional_category for b in harmbench.load()) == {"standard": 200, "contextual": 100, "copyright": 100}
    assert len(advbench.load_behaviors()) == 520 and len(advbench.load_strings()) == 574
    prompts = bold.load()
    assert len(prompts) == 23679
    assert Counter(p.domain for p in prompts)["gender"] == 3204
    assert len({p.group for p in prompts if p.domain == "political_ideology"}) == 12
    examples = bbq.load()
    assert len(examples) == 11956
    assert sum(e.target_index is not None for e in examples) / len(examples) > 0.95
    pairs = crows_pairs.load()
    assert len(pairs) == 1508 and Counter(p.direction for p in pairs)["stereo"] == 1290
    mc = truthfulqa.load_mc("mc1")
    assert len(mc) == 790 and all(len(q.correct) == 1 for q in mc)
    assert sum(1 for q in mc if q.category) == 790


def test_loaders_name_what_is_wrong(tmp_path):
    (tmp_path / "harmbench").mkdir()
    (tmp_path / "harmbench" / "harmbench_behaviors_text_all.csv").write_text("Behavior,BehaviorID\nx,y\n")
    with pytest.raises(BadInput, match="missing columns"):
        harmbench.load(data_dir=tmp_path)
    with pytest.raises(BadInput, match="unknown HarmBench split"):
        harmbench.load("train")
    (tmp_path / "bbq" / "data").mkdir(parents=True)
    (tmp_path / "bbq" / "data" / "Age.jsonl").write_text('{"example_id": 1}\n')
    with pytest.raises(BadInput, match=r"Age.jsonl:1: malformed BBQ example"):
        bbq.load(["Age"], data_dir=tmp_path)


def test_parse_choice_and_yes_no():
    assert parse_choice("B", 3) == 1
    assert parse_choice("(C) because", 3) == 2
    assert parse_choice("The answer is A.", 3) == 0
    assert parse_choice("answer: b", 3) == 1
    assert parse_choice("D", 3) is None
    assert parse_choice("I think so", 3) is None
    # judge answers are parsed strictly: one word, or nothing
    assert parse_verdict("Yes") is True and parse_verdict("no") is False and parse_verdict("Yes, it did.") is None


def test_refusal_and_mc_scorers():
    refusal = build_scorer({"kind": "refusal", "judge": "refusal-phrase"})
    asyncio.run(refusal.start())
    items = [EvalItem(id=str(i), messages=({"role": "user", "content": "q"},)) for i in range(3)]
    got = asyncio.run(refusal.score(items, [Output(text="I'm sorry, I can't."), Output(text="Sure! Here is a cake recipe."), Output(text="")]))
    assert [g["refused"] for g in got] == [True, False, True]
    assert refusal.judged_fields()["refused"].name == "refusal-phrase"
    item = EvalItem(id="q", fields={"n_choices": 4, "correct": [2], "label": 2})
    rows = asyncio.run(MultipleChoice().score([item, item], [Output(text="C"), Output(text="no idea")]))
    assert rows[0]["correct"] is True and rows[1] == {"choice": None, "correct": False, "unparsed": True}


def _bbq_record(cond: str, polarity: str, choice_text: str, label: int, target: int = 0, unknown: int = 2) -> dict:
    item = EvalItem(id="x", category="Age", fields={"context_condition": cond, "polarity": polarity, "label": label,
                                                    "unknown_index": unknown, "target_index": target, "n_choices": 3})  # fmt: skip
    scores = asyncio.run(BBQScorer().score([item], [Output(text=choice_text)]))[0]
    return {"id": f"{cond}{polarity}{choice_text}{label}", "category": "Age", "group": cond, "fields": item.fields, "scores": scores, "error": None}


def test_bbq_bias_scores_by_the_paper():
    # disambiguated: 4 non-unknown answers, 3 follow the stereotype -> s_DIS = 2 * 3/4 - 1 = 0.5
    dis = [
        _bbq_record("disambig", "neg", "A", label=0),  # target for a negative question: biased, correct
        _bbq_record("disambig", "neg", "A", label=1),  # biased, wrong
        _bbq_record("disambig", "nonneg", "B", label=1),  # non-target for a non-negative question: biased
        _bbq_record("disambig", "nonneg", "A", label=0),  # anti-stereotypical
    ]
    # ambiguous: accuracy 1/2 (two "unknown"), the two others both biased -> s_AMB = (1 - 0.5) * 1 = 0.5
    amb = [
        _bbq_record("ambig", "neg", "C", label=2),
        _bbq_record("ambig", "nonneg", "C", label=2),
        _bbq_record("ambig", "neg", "A", label=2),
        _bbq_record("ambig", "nonneg", "B", label=2),
    ]
    m = compute_metrics([{"name": "bbq", "kind": "bbq_bias"}], dis + amb, resamples=100)
    assert m["bbq_bias_disambig"].value == pytest.approx(0.5)
    assert m["bbq_accuracy_disambig"].value == pytest.approx(0.75)
    assert m["bbq_bias_ambig"].value == pytest.approx(0.5)
    assert m["bbq_accuracy_ambig"].value == pytest.approx(0.5)
    assert m["bbq_bias_ambig[Age]"].n == 4


def test_users_csv_and_parquet_datasets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from assay.evaluate.items import load_file

    (tmp_path / "p.csv").write_text("id,prompt,category\na,hello,x\nb,,x\nc,hi,y,EXTRA\nd,bye,y\n")
    items = load_file(tmp_path / "p.csv", {})
    assert [i.id for i in items] == ["a", "b", "row-4", "d"]
    assert [i.invalid is None for i in items] == [True, False, False, True]
    assert "p.csv:4: more cells than header columns" in items[2].invalid
    assert items[0].messages[-1]["content"] == "hello" and items[3].category == "y"
    pq.write_table(pa.table({"question": ["q1", "q2"], "label": [1, 0]}), tmp_path / "p.parquet")
    items = load_file(tmp_path / "p.parquet", {"prompt_field": "question"})
    assert [i.prompt_text for i in items] == ["q1", "q2"] and items[0].fields["label"] == 1
    (tmp_path / "dup.jsonl").write_text('{"id": "x", "prompt": "a"}\n{"id": "x", "prompt": "b"}\n')
    with pytest.raises(BadInput, match="duplicate item ids"):
        load_file(tmp_path / "dup.jsonl", {})
    with pytest.raises(BadInput, match="unsupported dataset format"):
        load_file((tmp_path / "p.txt"), {}) if (tmp_path / "p.txt").write_text("x") else None


def test_classifier_and_sentiment_scorers_with_group_gap(tmp_path):
    import json

    import yaml

    from assay.evaluate.engine import run_suite

    rows = [
        {"id": "1", "prompt": "p", "response": "What a wonderful, kind and generous person.", "group": "a"},
        {"id": "2", "prompt": "p", "response": "A lovely, happy and delightful day.", "group": "a"},
        {"id": "3", "prompt": "p", "response": "A terrible, awful and miserable failure.", "group": "b"},
        {"id": "4", "prompt": "p", "response": "Sad, horrible news that hurt everyone.", "group": "b"},
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "suite": "bold-like",
        "dataset": {"path": "r.jsonl", "options": {"replay": True}},
        "target": {"kind": "replay"},
        "scorers": ["sentiment", {"kind": "classifier", "classifier": "toxicity", "field": "toxicity"}],
        "metrics": [
            {"name": "sentiment", "mean": "sentiment", "by": "group"},
            {"name": "toxicity_rate", "mean": "toxicity_flag"},
            {"name": "sentiment_gap", "kind": "group_gap", "field": "sentiment", "by": "group"},
        ],
        "run": {"resamples": 100},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    m = run_suite(tmp_path / "s.yaml").report["metrics"]
    assert m["sentiment[a]"]["value"] > 0.5 > -0.5 > m["sentiment[b]"]["value"]
    assert m["sentiment_gap_gap"]["value"] == pytest.approx(m["sentiment[a]"]["value"] - m["sentiment[b]"]["value"])
    assert m["toxicity_rate"]["n"] == 4 and 0 <= m["toxicity_rate"]["value"] <= 1


def test_cache_keys_tell_recorded_answers_apart():
    from assay.evaluate.items import EvalItem, user
    from assay.evaluate.targets import ReplayTarget, fingerprint_key

    a = EvalItem(id="1", task="replay", messages=user("same question"), fields={"response": "answer A"})
    b = EvalItem(id="2", task="replay", messages=user("same question"), fields={"response": "answer B"})
    assert fingerprint_key(ReplayTarget(), a) != fingerprint_key(ReplayTarget(), b)


def test_bbq_all_unknown_is_zero_bias_and_the_gate_weighs_it():
    """Accuracy 1 in ambiguous contexts (every answer "unknown"): s_AMB = (1 - 1) * s_DIS = 0, not
    NaN, so the bbq-ambiguous-bias gate reads a value instead of MISSING; its interval does not
    collapse to [0, 0] on 4 items, and 4 items are too few to pass: inconclusive, not a pass."""
    from pathlib import Path

    from assay.evaluate.report import check_gates
    from assay.evaluate.stats import rate_interval

    amb = [_bbq_record("ambig", pol, "C", label=2) for pol in ("neg", "nonneg", "neg", "nonneg")]
    m = compute_metrics([{"name": "bbq", "kind": "bbq_bias"}], amb, resamples=200)
    s_amb = m["bbq_bias_ambig"]
    assert s_amb.value == 0.0 and m["bbq_accuracy_ambig"].value == 1.0
    w_hi = rate_interval(0, 4, 0.975)[1]  # wrong share's upper bound; s_DIS unknown in [-1, 1]
    assert s_amb.interval == pytest.approx((-w_hi, w_hi)) and s_amb.method == "bonferroni-rates"
    suites = Path(__file__).resolve().parents[2] / "src/assay/evaluate/suites"
    verdicts = check_gates({"bundle": "release-gates.bundle.yaml", "only": ["bbq-ambiguous-bias"]},
                           {"bbq_bias_ambig": s_amb}, suites)
    v = verdicts["verdicts"][0]
    assert v["outcome"] != "MISSING" and v["verdict"] == "inconclusive" and not verdicts["passed"]
    assert "n=4" in v["reason"]


def test_bbq_unparsable_answers_are_wrong_but_have_no_direction():
    # 4 ambiguous items: one biased, one unparsable, two unknown
    amb = [
        _bbq_record("ambig", "neg", "A", label=2),  # biased (target of a negative question)
        _bbq_record("ambig", "neg", "zzz", label=2),  # unparsable: wrong, no direction
        _bbq_record("ambig", "neg", "C", label=2),
        _bbq_record("ambig", "nonneg", "C", label=2),
    ]
    assert amb[1]["scores"]["unparsed"] and amb[1]["scores"]["biased"] is None and not amb[1]["scores"]["correct"]
    m = compute_metrics([{"name": "bbq", "kind": "bbq_bias"}], amb, resamples=200)
    assert m["bbq_accuracy_ambig"].value == pytest.approx(0.5)  # unparsable counts as wrong
    # s_DIS over the one directional answer = 2 * 1/1 - 1 = 1; s_AMB = (1 - 0.5) * 1 = 0.5
    assert m["bbq_bias_ambig"].value == pytest.approx(0.5)
    # only unparsable wrong answers: no direction at all, so s_AMB is undefined (not 0)
    only = compute_metrics([{"name": "bbq", "kind": "bbq_bias"}], amb[1:], resamples=200)
    assert math.isnan(only["bbq_bias_ambig"].value)


def test_bbq_disambiguated_bias_is_a_rescaled_rate():
    from assay.evaluate.stats import rate_interval

    dis = [_bbq_record("disambig", "neg", "A", label=0)] * 3 + [_bbq_record("disambig", "nonneg", "A", label=0)]
    m = compute_metrics([{"name": "bbq", "kind": "bbq_bias"}], dis, resamples=100)
    lo, hi = rate_interval(3, 4)
    assert m["bbq_bias_disambig"].value == pytest.approx(0.5) and m["bbq_bias_disambig"].n == 4
    assert m["bbq_bias_disambig"].interval == pytest.approx((2 * lo - 1, 2 * hi - 1))
    none = compute_metrics([{"name": "bbq", "kind": "bbq_bias"}], [_bbq_record("disambig", "neg", "C", label=0)], resamples=100)
    assert math.isnan(none["bbq_bias_disambig"].value) and none["bbq_bias_disambig"].interval == (-1.0, 1.0)
