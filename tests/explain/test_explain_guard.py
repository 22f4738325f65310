"""Guard explanations: the rule that fired with its actual values, and counterfactuals that really
flip the action under the policy's own evaluator."""

from __future__ import annotations

import json

import pytest

from assay.errors import BadInput
from assay.explain.guard import explain_guard
from assay.policy import load_bundle
from assay.policy.slate import decide_records

BUNDLE = """\
bundle: t
version: "1"
attributes:
  rules:
    request.user.age: int
    item.labels.mature: double
    item.labels.violence: double
    item.creator: string
rules:
  - id: teen-mature-drop
    surface: [for_you]
    when: request.user.age < 18 && item.labels.mature >= 0.7
    action: drop
    reason: mature content is not recommended to minors
  - id: violence-demote
    surface: [for_you]
    when: item.labels.violence > 0.5
    action: demote(0.5)
    reason: violent content is shown less
  - id: careful-skip
    surface: [search]
    when: item.labels.mature * 2.0 > 1.3
    action: drop
    on_missing: skip
    reason: a non-literal boundary (0.65)
"""


@pytest.fixture
def bundle(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(BUNDLE)
    return load_bundle(path)


def action_of(bundle, surface, candidate):
    compiled = bundle.compile_rules(surface)
    context = {k: v for k, v in candidate.items() if k != "item"}
    return decide_records(compiled, context, [candidate["item"]], evaluator="reference").candidate(0).action


def with_label(candidate, label, value):
    item = {**candidate["item"], "labels": {**candidate["item"]["labels"], label: value}}
    return {**candidate, "item": item}


def test_drop_with_values_and_the_smallest_flip(bundle):
    cand = {"request": {"user": {"age": 15}}, "item": {"labels": {"mature": 0.82, "violence": 0.3}}}
    exp = explain_guard(bundle, "for_you", cand)
    assert exp.action == "drop" and exp.rule_ids == ["teen-mature-drop"]
    assert exp.conditions[0]["values"] == {"request.user.age": 15, "item.labels.mature": 0.82}
    cf = exp.counterfactuals[0]
    assert cf.label == "item.labels.mature" and cf.boundary == 0.7 and cf.strict
    assert 0.7 - 1e-5 < cf.value < 0.7 and cf.action == "allow"
    assert action_of(bundle, "for_you", with_label(cand, "mature", cf.value)) == "allow"
    assert "below 0.7" in exp.text() and "request.user.age = 15" in exp.text()


def test_allow_shows_what_would_trigger_a_rule(bundle):
    cand = {"request": {"user": {"age": 15}}, "item": {"labels": {"mature": 0.5, "violence": 0.1}}}
    exp = explain_guard(bundle, "for_you", cand)
    assert exp.action == "allow" and exp.rule_ids == []
    by_label = {c.label: c for c in exp.counterfactuals}
    assert by_label["item.labels.mature"].value == 0.7 and not by_label["item.labels.mature"].strict
    assert by_label["item.labels.mature"].action == "drop"
    assert by_label["item.labels.violence"].action == "demote"
    assert exp.counterfactuals[0].label == "item.labels.mature"  # 0.2 away beats 0.4 away


def test_non_literal_boundary_is_found_by_bisection(bundle):
    cand = {"request": {"user": {"age": 30}}, "item": {"labels": {"mature": 0.9}}}
    exp = explain_guard(bundle, "search", cand)
    assert exp.action == "drop"
    cf = exp.counterfactuals[0]
    assert cf.value == pytest.approx(0.65, abs=1e-5) and cf.action == "allow"
    assert action_of(bundle, "search", with_label(cand, "mature", cf.value)) == "allow"


def test_missing_label_fails_closed_and_says_what_value_would_do(bundle):
    cand = {"request": {"user": {"age": 15}}, "item": {"labels": {"violence": 0.1}}}
    exp = explain_guard(bundle, "for_you", cand)
    assert exp.action == "drop" and exp.fail_closed
    assert exp.conditions[0]["values"]["item.labels.mature"] is None
    cf = exp.counterfactuals[0]
    assert cf.current is None and cf.action == "allow"
    assert "missing" in exp.text()


def test_bad_input(bundle):
    with pytest.raises(BadInput, match="surface 'home'"):
        explain_guard(bundle, "home", {"item": {"labels": {}}})
    with pytest.raises(BadInput, match="'item' mapping"):
        explain_guard(bundle, "for_you", {"item": "x"})


def test_cli_guard(tmp_path, capsys):
    from assay.cli.main import main

    path = tmp_path / "b.yaml"
    path.write_text(BUNDLE)
    cand = json.dumps(
        {"request": {"user": {"age": 15}}, "item": {"labels": {"mature": 0.9, "violence": 0}}}
    )
    assert (
        main(
            [
                "explain",
                "guard",
                "--bundle",
                str(path),
                "--surface",
                "for_you",
                "--input",
                cand,
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["action"] == "drop" and out["counterfactuals"][0]["boundary"] == 0.7
    assert (
        main(
            ["explain", "guard", "--bundle", str(path), "--surface", "for_you", "--input", "{oops"]
        )
        == 2
    )
    assert (
        main(
            [
                "explain",
                "guard",
                "--bundle",
                str(path),
                "--surface",
                "for_you",
                "--input",
                "@missing.json",
            ]
        )
        == 2
    )


def test_cli_guard_refuses_hostile_input_files_with_exit_2(tmp_path, capsys):
    """``--input @file`` is read bounded and parsed as every JSON input of the command line is
    (``assay.files.read_json``): a probe's invalid UTF-8, JSON nested 100,000 deep and 5,000-digit
    integer were tracebacks (exit 1)."""
    from assay.cli.main import main

    path = tmp_path / "b.yaml"
    path.write_text(BUNDLE)
    hostile = {"utf8.json": b'{"item": "\xff"}', "deep.json": b"[" * 100_000 + b"]" * 100_000,
               "digits.json": b'{"item": {"labels": {"mature": ' + b"9" * 5000 + b"}}}"}
    for name, data in hostile.items():
        (tmp_path / name).write_bytes(data)
        assert main(["explain", "guard", "--bundle", str(path), "--surface", "for_you", "--input", f"@{tmp_path / name}"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and name in err and "--input" in err, err
    assert main(["explain", "guard", "--bundle", str(path), "--surface", "for_you", "--input", "[" * 100_000]) == 2
    assert "nested too deeply" in capsys.readouterr().err
