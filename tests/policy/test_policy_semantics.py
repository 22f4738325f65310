"""What rules, gates, purposes and alerts mean: first hard match wins, soft actions stack,
fail-closed drops, shadow and rollout record without acting, deny beats allow."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from assay.policy import Batch, ListValues, Outcome, load_bundle
from assay.policy.slate import decide_records, in_rollout

BUNDLE = """\
attributes:
  rules:
    request.age: int
    item.x: double
    item.y: double
    item.tags: list(string)
    item.creator: string
  gates:
    eval.metrics: map(string, double)
  purposes:
    dataset.purposes: list(string)
    dataset.restrictions: list(string)
    deployment.purpose: string
  alerts:
    window.drop_rate: double
rules:
  - id: demote-x
    when: item.x > 0.5
    action: demote(0.5)
  - id: label-x
    when: item.x > 0.6
    action: label("warning")
  - id: allow-vip
    when: item.creator == "vip"
    action: allow
  - id: drop-y
    when: item.y > 0.5
    action: drop
  - id: demote-tag
    when: '"meh" in item.tags'
    action: demote(0.5)
  - id: shadow-drop
    when: item.x > 0.9
    action: drop
    shadow: true
  - id: skip-missing
    when: request.age < 18 && item.x > 0.99
    action: drop
    on_missing: skip
gates:
  - id: tox
    when: eval.metrics["tox"] <= 0.01
  - id: opt
    when: eval.metrics["bias"] <= 0.1
    on_missing: skip
purposes:
  - id: rec-ok
    when: '"recommendation" in dataset.purposes && deployment.purpose == "recommendation"'
    effect: allow
  - id: research-only
    when: '"research_only" in dataset.restrictions && deployment.purpose != "research"'
    effect: deny
alerts:
  - id: surge
    when: window.drop_rate > 0.1
"""


@pytest.fixture
def bundle(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text(textwrap.dedent(BUNDLE))
    return load_bundle(p)


def decide(bundle, items, context=None):
    compiled = bundle.compile_rules("*")
    batch = Batch.from_records(context or {"request": {"age": 30}}, items)
    outcomes = compiled.evaluate(batch)
    assert np.array_equal(outcomes, compiled.evaluate_reference(batch))
    res = decide_records(compiled, context or {"request": {"age": 30}}, items)
    return [res.candidate(j) for j in range(len(items))]


def test_soft_actions_stack_and_hard_actions_end_the_walk(bundle):
    base = {"y": 0.0, "tags": [], "creator": "c"}
    d = decide(bundle, [
        {**base, "x": 0.7, "tags": ["meh"]},            # demote + label + demote-tag
        {**base, "x": 0.7, "y": 0.9},                   # demote + label, then drop
        {**base, "x": 0.7, "creator": "vip", "y": 0.9},  # allow before drop: drop never reached
        {**base, "x": 0.1},                             # nothing
    ])
    assert d[0].action == "demote" and d[0].factor == pytest.approx(0.25) and d[0].labels == ["warning"]
    assert d[0].rule_ids == ["demote-x", "label-x", "demote-tag"]
    assert d[1].action == "drop" and d[1].rule_ids[-1] == "drop-y"
    assert d[2].action == "demote" and "drop-y" not in d[2].rule_ids and d[2].rule_ids[-1] == "allow-vip"
    assert d[3].action == "allow" and d[3].rule_ids == []


def test_missing_labels_fail_closed_unless_the_rule_skips(bundle):
    d = decide(bundle, [{"x": 0.1, "tags": [], "creator": "c"}])  # y missing
    assert d[0].action == "drop" and d[0].fail_closed and d[0].rule_ids[-1] == "drop-y"
    # a missing value that the other side of && already decides is not missing at all
    d = decide(bundle, [{"x": 0.1, "y": 0.0, "tags": [], "creator": "c"}], context={"request": {}})
    assert d[0].action == "allow"


def test_shadow_records_without_acting(bundle):
    d = decide(bundle, [{"x": 0.95, "y": 0.0, "tags": [], "creator": "c"}])
    assert "shadow-drop" in d[0].shadow_rule_ids and d[0].action != "drop"


def test_a_rule_outside_its_rollout_records_without_acting(tmp_path):
    """rollout: 30 acts for the subjects whose crc32 bucket of (rule id, subject) is below 3,000
    of 10,000, and is recorded as shadow for the others."""
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(BUNDLE).replace("  - id: drop-y\n    when: item.y > 0.5\n    action: drop",
                                                 "  - id: drop-y\n    when: item.y > 0.5\n    action: drop\n    rollout: 30"))
    compiled = load_bundle(p).compile_rules("*")
    subjects = [f"user-{k}" for k in range(200)]
    inside = [u for u in subjects if in_rollout("drop-y", u, 30)]
    assert 30 < len(inside) < 90  # about 30% of subjects
    for user in (inside[0], next(u for u in subjects if u not in inside)):
        d = decide_records(compiled, {"request": {"age": 30, "user": {"id": user}}}, [{"x": 0.0, "y": 0.9, "tags": [], "creator": "c"}])
        c = d.candidate(0)
        if user in inside:
            assert c.action == "drop" and c.rule_ids == ["drop-y"] and c.shadow_rule_ids == []
        else:
            assert c.action == "allow" and c.rule_ids == [] and c.shadow_rule_ids == ["drop-y"]


def test_columnar_lists_and_masks(bundle):
    compiled = bundle.compile_rules("*")
    batch = Batch.from_columns(
        3,
        {"item.x": np.array([0.7, 0.0, 0.0]), "item.y": np.array([0.0, 0.0, 0.9]),
         "item.tags": ListValues.from_lists([["meh"], [], ["a", "meh"]]), "item.creator": np.array(["c", "vip", "c"])},
        missing={"item.y": np.array([False, True, False])},
        scalars={"request.age": 12},
    )
    out = compiled.evaluate(batch)
    assert np.array_equal(out, compiled.evaluate_reference(batch))
    assert out[[r.id for r in compiled.rules].index("drop-y")].tolist() == [Outcome.FALSE, Outcome.MISSING, Outcome.TRUE]


def _evidence(metrics: dict, n: int = 500, half: float = 0.005) -> dict:
    return {"eval": {"metrics": metrics, "n": {k: n for k in metrics},
                     "intervals": {k: [v - half, v + half] for k, v in metrics.items()}}}


def test_gates(bundle):
    assert bundle.check_gates(_evidence({"tox": 0.0, "bias": 0.0})).passed
    report = bundle.check_gates(_evidence({"tox": 0.5}))
    assert not report.passed and report.failed == ["tox"]  # bias missing but skip
    assert report.verdicts[0].verdict == "fail"
    report = bundle.check_gates(_evidence({"bias": 0.0}))
    assert report.failed == ["tox"] and "could not be evaluated" in report.verdicts[0].reason
    # values without the evidence behind them decide nothing
    report = bundle.check_gates({"eval": {"metrics": {"tox": 0.0, "bias": 0.0}}})
    assert not report.passed and set(report.inconclusive) == {"tox", "opt"}


def test_purposes_deny_by_default_and_deny_beats_allow(bundle):
    v = bundle.check_purposes({"dataset": {"purposes": ["recommendation"], "restrictions": []}, "deployment": {"purpose": "recommendation"}})
    assert v.allowed and v.deciding == ["rec-ok"]
    v = bundle.check_purposes({"dataset": {"purposes": ["recommendation"], "restrictions": ["research_only"]}, "deployment": {"purpose": "recommendation"}})
    assert not v.allowed and v.deciding == ["research-only"] and v.matched_allow == ["rec-ok"]
    v = bundle.check_purposes({"dataset": {"purposes": ["ads"], "restrictions": []}, "deployment": {"purpose": "recommendation"}})
    assert not v.allowed and v.deciding == ["default-deny"]
    # a deny rule that cannot be evaluated fails closed
    v = bundle.check_purposes({"dataset": {"purposes": ["recommendation"]}, "deployment": {"purpose": "recommendation"}})
    assert not v.allowed and v.deciding == ["research-only"]


def test_alerts(bundle):
    assert [a.id for a in bundle.check_alerts({"window": {"drop_rate": 0.5}})] == ["surge"]
    assert bundle.check_alerts({"window": {"drop_rate": 0.05}}) == []
    assert bundle.check_alerts({"window": {}}) == []  # alerts skip on missing by default


def test_int_overflow_and_map_keys_are_errors_in_both_evaluators(tmp_path):
    p = tmp_path / "o.yaml"
    p.write_text(textwrap.dedent("""\
        attributes:
          rules:
            item.i: int
            item.m: map(string, double)
        rules:
          - id: overflow
            when: item.i + 9223372036854775807 > 0
            action: drop
          - id: key
            when: item.m["k"] > 0.5 || item.i > 5
            action: drop
        """))
    compiled = load_bundle(p).compile_rules("*")
    batch = Batch.from_records({}, [{"i": 1, "m": {}}, {"i": -1, "m": {"k": 0.9}}, {"i": 10, "m": {}}])
    out = compiled.evaluate(batch)
    assert np.array_equal(out, compiled.evaluate_reference(batch))
    # overflow is an error; a missing map key is an error unless `||` is decided by the other side
    assert out.tolist() == [[Outcome.MISSING, Outcome.TRUE, Outcome.MISSING], [Outcome.MISSING, Outcome.TRUE, Outcome.TRUE]]


def test_list_columns_given_as_rows_refuse_what_is_not_a_list_of_strings(bundle):
    compiled = bundle.compile_rules("*")
    rows = [["meh"], "meh", None, ["a", None], ["ok"]]
    batch = Batch.from_columns(5, {"item.x": np.zeros(5), "item.y": np.zeros(5), "item.tags": rows,
                                   "item.creator": np.array(["c"] * 5)}, scalars={"request.age": 30})
    out = compiled.evaluate(batch)
    assert np.array_equal(out, compiled.evaluate_reference(batch))
    tag_rule = [r.id for r in compiled.rules].index("demote-tag")
    assert out[tag_rule].tolist() == [Outcome.TRUE, Outcome.MISSING, Outcome.MISSING, Outcome.MISSING, Outcome.FALSE]


def test_list_rows_of_clean_strings_take_the_fast_path_and_bytes_do_not(bundle):
    """Clean rows are flattened in one pass; a bytes element (which coerce() refuses) sends the
    column to the per-row path, which marks its row missing."""
    from assay.policy.batch import string_lists

    compiled = bundle.compile_rules("*")
    assert string_lists([["meh"], [], None, ("ok", "meh")]) is not None
    rows = [["meh"], [b"meh"], ["ok"]]
    assert string_lists(rows) is None
    batch = Batch.from_columns(3, {"item.x": np.zeros(3), "item.y": np.zeros(3), "item.tags": rows,
                                   "item.creator": np.array(["c"] * 3)}, scalars={"request.age": 30})
    out = compiled.evaluate(batch)
    assert np.array_equal(out, compiled.evaluate_reference(batch))
    tag_rule = [r.id for r in compiled.rules].index("demote-tag")
    assert out[tag_rule].tolist() == [Outcome.TRUE, Outcome.MISSING, Outcome.FALSE]


def test_arrow_list_values_read_in_place_match_the_rows():
    """Offsets read from Arrow's buffer (list and large_list, sliced at either end, chunked) and
    the offsets array Arrow builds (a map array) give the same rows and null mask."""
    import pyarrow as pa

    from assay.policy.batch import list_values_from_arrow

    rows = [["a"], None, [], ["b", "c"], ["d"], None, ["e", "f", "g"], []]
    arrays = []
    for t in (pa.list_(pa.string()), pa.large_list(pa.string())):
        full = pa.array(rows, type=t)
        arrays += [full, full.slice(2), full.slice(1, 5), full.slice(0, 4), full.slice(3, 0), pa.chunked_array([full.slice(0, 3), full.slice(3)])]
    for arr in arrays:
        lists, nulls = list_values_from_arrow(arr)
        expected = arr.to_pylist()
        assert nulls.tolist() == [r is None for r in expected]
        assert lists.offsets.dtype == np.int64 and lists.offsets[0] == 0 and len(lists) == len(expected)
        assert len(lists.flat) == lists.offsets[-1]  # no values of rows sliced off
        assert [lists[i] if r is not None else None for i, r in enumerate(expected)] == expected
    as_map = pa.array([[("k", 1)], [], [("a", 2), ("b", 3)]], type=pa.map_(pa.string(), pa.int64())).slice(1)
    lists, nulls = list_values_from_arrow(as_map)
    assert lists.offsets.tolist() == [0, 0, 2] and not nulls.any()
