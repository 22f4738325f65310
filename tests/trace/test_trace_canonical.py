"""The column-wise RFC 8785 builder equals the reference library on every record."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.errors import BadInput
from assay.records import Decision
from assay.trace import canonical

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
# The reference library refuses integral floats beyond 2^53, so stay below it; tiny and
# exponent-formatted values (>= 1e10, < 1e-6) are inside this range.
floats = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15) | st.sampled_from(
    [0.0, -0.0, 1e10, 1.5e10, 9999999999.5, 1e-7, 5e-324, 1764443470.123456]
)
decisions = st.builds(
    Decision,
    request_id=text,
    ts=floats,
    surface=text,
    subject_id=text,
    item_id=text,
    rank_before=st.integers(-(2**53) + 1, 2**53 - 1),
    rank_after=st.integers(-1, 1000),
    action=st.sampled_from(["allow", "drop", "demote", "label", "cap"]),
    rule_ids=st.lists(text, max_size=3).map(tuple),
    reasons=st.lists(text, max_size=2).map(tuple),
    shadow_rule_ids=st.lists(text, max_size=2).map(tuple),
    bundle_hash=text,
    bundle_version=text,
    model_versions=st.lists(text, max_size=2).map(tuple),
    breaker_state=st.sampled_from(["closed", "open", "half-open"]),
    score_before=st.none() | floats,
    score_after=st.none() | floats,
    attribution=st.none() | st.dictionaries(text, floats, max_size=3),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(decisions, min_size=1, max_size=20))
def test_columnwise_equals_reference(batch: list[Decision]) -> None:
    table = canonical.decisions_to_table(batch)
    got = canonical.canonical_decisions(table).to_pylist()
    for decision, value in zip(batch, got, strict=True):
        want = canonical.jcs({**decision.to_dict(), "type": "decision"}).decode()
        assert value == want
    hashes = canonical.hash_strings(canonical.canonical_decisions(table))
    assert hashes == [hashlib.sha256(v.encode()).digest() for v in got]
    # The append path hashes from the column pieces without building the JSON.
    assert canonical.decision_hashes(table) == b"".join(hashes)


def test_bad_values_are_named() -> None:
    d = Decision("r", float("nan"), "for_you", "u", "i", 0, 0, "allow")
    with pytest.raises(BadInput, match="row 0: ts"):
        canonical.canonical_decisions(canonical.decisions_to_table([d]))
    import pyarrow as pa

    with pytest.raises(BadInput, match="required column 'surface'"):
        canonical.normalise_decision_table(pa.table({"request_id": ["r"], "ts": [1.0]}))
    with pytest.raises(BadInput, match="row 1: required field 'surface'"):
        canonical.normalise_decision_table(
            pa.table({"request_id": ["r", "s"], "ts": [1.0, 2.0], "surface": ["a", None], "subject_id": ["u", "u"],
                      "item_id": ["i", "j"], "rank_before": [0, 1], "rank_after": [0, 1], "action": ["allow", "allow"]})
        )


def test_parallel_slices_equal_serial() -> None:
    from assay.trace import bench

    table = bench.synthetic_decisions(canonical.PARALLEL_MIN_ROWS + 123)
    serial = canonical.canonical_decisions(table, workers=1)
    parallel = canonical.canonical_decisions(table, workers=3)
    assert parallel.equals(serial)
    assert serial[5].as_py() == canonical.jcs({**table.slice(5, 1).to_pylist()[0], "type": "decision",
                                               "attribution": None}).decode()


@settings(max_examples=30, deadline=None)
@given(st.lists(decisions, min_size=1, max_size=4), st.integers(65, 140), st.none() | st.lists(text, min_size=1, max_size=1))
def test_large_batches_equal_reference(base: list[Decision], n: int, one: list[str] | None) -> None:
    # Batches over 64 rows take the paths for few distinct values: escaping once per distinct
    # value, a column holding one value as a constant, every list holding exactly one string.
    import dataclasses

    batch = [base[i % len(base)] for i in range(n)]
    if one is not None:
        batch = [dataclasses.replace(d, model_versions=tuple(one), rule_ids=(d.request_id,)) for d in batch]
    table = canonical.decisions_to_table(batch)
    got = canonical.canonical_decisions(table).to_pylist()
    want = [canonical.jcs({**d.to_dict(), "type": "decision"}).decode() for d in batch]
    assert got == want
    assert canonical.decision_hashes(table) == b"".join(hashlib.sha256(w.encode()).digest() for w in want)
