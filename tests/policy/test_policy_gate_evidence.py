"""Gates weigh evidence: pass only when the interval clears the threshold, fail when it cannot,
inconclusive in between or on too few items; decide: point is visible; unvalidated judges are
named; old bundles keep their hash."""

from __future__ import annotations

import textwrap

import pytest

from assay.policy import load_bundle
from assay.policy.source import PolicyError

BUNDLE = textwrap.dedent("""
    bundle: g
    version: "1"
    attributes:
      gates:
        eval.metrics: map(string, double)
        eval.n: map(string, int)
    gates:
      - id: harm
        when: eval.metrics["harmful_rate"] <= 0.05
      - id: band
        when: eval.metrics["bias"] <= 0.1 && eval.metrics["bias"] >= -0.1
      - id: falls
        when: eval.metrics["after"] < eval.metrics["before"]
      - id: point
        when: eval.metrics["harmful_rate"] <= 0.05
        decide: point
        min_n: 10
      - id: sample
        when: eval.n["harmful_rate"] >= 50
""")


@pytest.fixture
def bundle(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_text(BUNDLE)
    return load_bundle(p)


def ctx(**metrics):
    """metrics: name=(value, n, lo, hi)"""
    return {"eval": {"metrics": {k: v[0] for k, v in metrics.items()}, "n": {k: v[1] for k, v in metrics.items()},
                     "intervals": {k: [v[2], v[3]] for k, v in metrics.items()}}}


def verdicts(bundle, context, only=None):
    return {v.id: v.verdict for v in bundle.check_gates(context, only=only).verdicts}


def test_interval_clears_fails_or_straddles(bundle):
    assert verdicts(bundle, ctx(harmful_rate=(0.01, 400, 0.003, 0.03)), ["harm"]) == {"harm": "pass"}
    assert verdicts(bundle, ctx(harmful_rate=(0.2, 400, 0.16, 0.24)), ["harm"]) == {"harm": "fail"}
    r = bundle.check_gates(ctx(harmful_rate=(0.04, 100, 0.012, 0.1)), only=["harm"])
    v = r.verdicts[0]
    assert v.verdict == "inconclusive" and not v.passed and not r.passed and r.inconclusive == ["harm"]
    assert "straddles" in v.reason and v.missing and v.evidence["harmful_rate"]["n"] == 100


def test_too_few_items_is_inconclusive_never_pass(bundle):
    # the demo's old hole: a bias gate "passing" on n = 2 with the interval [-1, 1]
    v = bundle.check_gates(ctx(bias=(0.0, 2, -1.0, 1.0)), only=["band"]).verdicts[0]
    assert v.verdict == "inconclusive" and "n=2" in v.reason and "min_n=30" in v.reason
    # even a perfect-looking rate
    assert verdicts(bundle, ctx(harmful_rate=(0.0, 5, 0.0, 0.0)), ["harm"]) == {"harm": "inconclusive"}


def test_non_monotone_band_is_inconclusive_when_the_interval_is_wide(bundle):
    assert verdicts(bundle, ctx(bias=(0.0, 500, -0.5, 0.5)), ["band"]) == {"band": "inconclusive"}
    assert verdicts(bundle, ctx(bias=(0.0, 500, -0.05, 0.05)), ["band"]) == {"band": "pass"}
    assert verdicts(bundle, ctx(bias=(0.5, 500, 0.4, 0.6)), ["band"]) == {"band": "fail"}


def test_two_metrics_need_disjoint_evidence(bundle):
    assert verdicts(bundle, ctx(after=(0.1, 200, 0.06, 0.15), before=(0.5, 200, 0.43, 0.57)), ["falls"]) == {"falls": "pass"}
    assert verdicts(bundle, ctx(after=(0.4, 200, 0.33, 0.47), before=(0.45, 200, 0.38, 0.52)), ["falls"]) == {"falls": "inconclusive"}


def test_point_decision_is_visible_and_still_needs_min_n(bundle):
    v = bundle.check_gates(ctx(harmful_rate=(0.04, 100, 0.012, 0.1)), only=["point"]).verdicts[0]
    assert v.verdict == "pass" and "point estimate" in v.reason and v.decide == "point"
    assert verdicts(bundle, ctx(harmful_rate=(0.0, 5, 0.0, 0.5)), ["point"]) == {"point": "inconclusive"}


def test_missing_evidence_is_named(bundle):
    v = bundle.check_gates({"eval": {"metrics": {"harmful_rate": 0.0}}}, only=["harm"]).verdicts[0]
    assert v.verdict == "inconclusive" and v.missing == ["eval.n['harmful_rate']"]
    v = bundle.check_gates({"eval": {"metrics": {"harmful_rate": 0.0}, "n": {"harmful_rate": 100}}}, only=["harm"]).verdicts[0]
    assert v.verdict == "inconclusive" and v.missing == ["eval.intervals['harmful_rate']"]
    # a missing metric still fails closed
    v = bundle.check_gates({"eval": {"metrics": {}}}, only=["harm"]).verdicts[0]
    assert v.verdict == "fail" and "could not be evaluated" in v.reason


def test_unvalidated_judge_is_named_in_the_verdict(bundle):
    c = ctx(harmful_rate=(0.01, 400, 0.003, 0.03))
    c["eval"]["judges"] = {"harmful_rate": {"judge": "harmful@sha256:abc", "validated": False}}
    v = bundle.check_gates(c, only=["harm"]).verdicts[0]
    assert v.verdict == "pass" and any("never validated" in n for n in v.notes)
    assert v.evidence["harmful_rate"]["judge_validated"] is False
    assert v.to_dict()["notes"] == v.notes


def test_gate_options_are_checked_and_hashed(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(BUNDLE.replace("    decide: point\n    min_n: 10\n", ""))
    same = tmp_path / "same.yaml"
    same.write_text(BUNDLE.replace("    decide: point\n    min_n: 10\n", "    decide: interval\n    min_n: 30\n"))
    assert load_bundle(old).hash == load_bundle(same).hash  # defaults written out change nothing
    changed = tmp_path / "changed.yaml"
    changed.write_text(BUNDLE)
    assert load_bundle(changed).hash != load_bundle(old).hash
    for bad, message in (("decide: maybe", "decide must be"), ("min_n: -1", "min_n must be"), ("min_n: 2.5", "min_n must be")):
        p = tmp_path / "bad.yaml"
        p.write_text(BUNDLE.replace("decide: point", bad) if "decide" in bad else BUNDLE.replace("min_n: 10", bad))
        with pytest.raises(PolicyError, match=message):
            load_bundle(p)
