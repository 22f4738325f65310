"""Only provable records are accepted: what RFC 8785 cannot carry exactly is refused at append,
naming the field and the row; everything accepted proves, and its proof's JSON is what the
reference library (``rfc8785``) writes for it."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pyarrow as pa
import pytest
import rfc8785
from trace_helpers import make_decisions

from assay.errors import BadInput
from assay.records import Event
from assay.trace import TraceLog, canonical, proofs
from assay.trace.bench import synthetic_decisions


@pytest.fixture
def log(tmp_path):
    with TraceLog.open(tmp_path / "log") as opened:
        yield opened


def _with(table: pa.Table, name: str, values: list) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, canonical.DECISION_SCHEMA.field(name).type))


@pytest.mark.parametrize(("attribution", "message"), [
    ('{"a": 9007199254740992}', "decision row 1: attribution cannot be written as RFC 8785 JSON exactly"),
    ('{"a": -9007199254740992}', "decision row 1: attribution cannot be written as RFC 8785 JSON exactly"),
    ('{"a": NaN}', "decision row 1: attribution is not valid JSON"),
    ('{"a": Infinity}', "decision row 1: attribution is not valid JSON"),
    ('{"a": 1e400}', "decision row 1: attribution cannot be written as RFC 8785 JSON exactly"),
    ('{"a": "\\ud800"}', "decision row 1: attribution cannot be written as RFC 8785 JSON exactly"),
    ('{"a": 1, "a": 2}', "decision row 1: attribution is not valid JSON: the key 'a' appears twice"),
    ('[1, 2]', "decision row 1: attribution must be a JSON object"),
    ('{"a": ', "decision row 1: attribution is not valid JSON"),
])
def test_unprovable_attributions_are_refused_naming_the_row(log, attribution, message) -> None:
    table = _with(synthetic_decisions(3), "attribution", [None, attribution, None])
    with pytest.raises(BadInput, match=message.replace("(", r"\(")):
        log.append_table(table)
    assert log.size == 0


def test_attribution_text_is_stored_in_its_canonical_form_and_proves(log) -> None:
    table = _with(synthetic_decisions(3), "attribution", ['{ "b": 1.0, "a": [2, 1E2] }', None, '{"x":9007199254740991}'])
    log.append_table(table)
    for index in (0, 2):
        bundle = log.prove_inclusion(index)
        assert "included" in proofs.check_bundle(bundle, log.verifier)
        record = json.loads(bundle["record_json"])
        assert hashlib.sha256(rfc8785.dumps(record)).hexdigest() == bundle["record_hash"]
    assert log.record(0)["attribution"] == '{"a":[2,100],"b":1}'
    assert log.why(log.record(0)["item_id"], table.column("subject_id")[0].as_py())["attribution"] == {"a": [2, 100], "b": 1}


def test_text_utf8_cannot_carry_is_refused_naming_field_and_row(log) -> None:
    good = synthetic_decisions(4)
    # Raw bytes that are not UTF-8 (a lone surrogate in CESU-8): Arrow holds them if built from buffers.
    items = [b"item-a", b"item-b", b"item-\xed\xa0\x80", b"item-d"]
    offsets = pa.py_buffer(pa.array([0, 6, 12, 20, 26], pa.int32()).buffers()[1])
    broken = pa.Array.from_buffers(pa.string(), 4, [None, offsets, pa.py_buffer(b"".join(items))])
    with pytest.raises(BadInput, match="decision row 2: item_id is not valid UTF-8"):
        log.append_table(good.set_column(good.schema.get_field_index("item_id"), "item_id", broken))
    rules = pa.ListArray.from_arrays(pa.array([0, 0, 1, 1, 2], pa.int32()),
                                     pa.Array.from_buffers(pa.string(), 2, [None, pa.py_buffer(pa.array([0, 3, 8], pa.int32()).buffers()[1]),
                                                                            pa.py_buffer(b"r-1r-\xed\xa0\x80")]))
    with pytest.raises(BadInput, match="decision row 3: rule_ids is not valid UTF-8"):
        log.append_table(good.set_column(good.schema.get_field_index("rule_ids"), "rule_ids", rules))
    decisions = make_decisions(3)
    with pytest.raises(BadInput, match="decision row 1: item_id holds a lone surrogate"):
        log.append([decisions[0], dataclasses.replace(decisions[1], item_id="x\ud800"), decisions[2]])
    with pytest.raises(BadInput, match="decision row 2: reasons holds a lone surrogate"):
        log.append([decisions[0], decisions[1], dataclasses.replace(decisions[2], reasons=("ok", "\udfff"))])
    with pytest.raises(BadInput, match="decision row 0: attribution cannot be written as RFC 8785 JSON exactly"):
        log.append([dataclasses.replace(decisions[0], attribution={"a": 2**53})])
    assert log.size == 0


def test_numbers_json_cannot_carry_are_refused(log) -> None:
    decisions = make_decisions(2)
    for field, value, message in (("rank_before", 2**53, "decision row 1: rank_before = 9007199254740992 is outside"),
                                  ("score_before", 2.0**53, "decision row 1: score_before = 9007199254740992.0 is written"),
                                  ("ts", -1e16, "decision row 1: ts = -1e[+]16 is written in JSON as an integer"),
                                  ("attribution", {"a": 1e20}, "decision row 1: attribution cannot be written"),
                                  ("rank_after", -(2**53), "decision row 1: rank_after = -9007199254740992 is outside"),
                                  ("score_before", float("nan"), "decision row 1: score_before is nan"),
                                  ("score_after", float("inf"), "decision row 1: score_after is inf"),
                                  ("ts", float("-inf"), "decision row 1: ts is -inf")):
        with pytest.raises(BadInput, match=message):
            log.append([decisions[0], dataclasses.replace(decisions[1], **{field: value})])
    table = synthetic_decisions(3)
    for name, values in (("rank_before", [0, 2**60, 1]), ("score_after", [0.1, float("nan"), 0.2])):
        with pytest.raises(BadInput, match=f"decision row 1: {name}"):
            log.append_table(_with(table, name, values))
    assert log.size == 0


def test_events_that_cannot_be_proved_are_refused(log) -> None:
    d = make_decisions(1)[0]
    cases = ((Event("ok", 1.0, "s", payload={"n": 2**53}), "event row 1 ('ok'): payload cannot be written"),
             (Event("ok", 1.0, "s", payload={"x": float("nan")}), "event row 1 ('ok'): payload cannot be written"),
             (Event("k\ud800", 1.0, "s"), "event row 1 .*: kind holds a lone surrogate"),
             (Event("ok", float("inf"), "s"), "event row 1 ('ok'): ts must be a finite number"),
             (Event("ok", 1e16, "s"), "event row 1 ('ok'): ts = 1e[+]16 is written"),
             (Event("ok", 1.0, "s", payload={"big": 2.0**60}), "event row 1 ('ok'): payload cannot be written"))
    for event, message in cases:
        with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)") if ".*" not in message else message):
            log.append([d, event])
    assert log.size == 0


def test_the_largest_exact_values_round_trip(log) -> None:
    """At the edges of what is accepted, append, prove and why agree byte for byte with the reference."""
    d = make_decisions(1)[0]
    edge = dataclasses.replace(d, rank_before=2**53 - 1, rank_after=-(2**53 - 1), score_before=1e21, score_after=5e-324,
                               ts=2.0**53 - 1, attribution={"max": 2**53 - 1, "big": 1e300, "tiny": -0.0,
                                                            "text": "\u2028\U0001f600"})
    log.append([edge, Event("edge", 9007199254740991.0, "s", payload={"n": -(2**53 - 1), "x": 1.5e-7})])
    for index in (0, 1):
        bundle = log.prove_inclusion(index)
        assert "included" in proofs.check_bundle(bundle, log.verifier)
        assert rfc8785.dumps(json.loads(bundle["record_json"])).decode() == bundle["record_json"]
    answer = log.why(d.item_id, d.subject_id)
    assert answer["rank_before"] == 2**53 - 1 and answer["score_after"] == 5e-324 and answer["ts"] == 2.0**53 - 1
    assert log.verify().ok
