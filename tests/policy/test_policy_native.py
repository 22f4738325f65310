"""The C rule evaluator (assay.policy._native): built, chosen for the rules it covers, equal to
the CEL library on the edge cases of its fast paths, and safe on malformed input. The random
agreement test (test_policy_agreement.py) runs it beside the numpy evaluator as well."""

from __future__ import annotations

import json

import numpy as np
import pytest

from assay.policy import Batch, ListValues, load_bundle
from assay.policy import vectorised as vec

DECLS = {"item.s": "string", "item.l": "list(string)", "item.d": "double", "item.i": "int", "item.t": "bool",
         "request.region": "string", "request.tags": "list(string)", "request.age": "int"}




def bundle_of(tmp_path, conditions: list[str]):
    doc = {"bundle": "native", "version": "1", "attributes": {"rules": DECLS},
           "rules": [{"id": f"r{i}", "when": c, "action": "drop"} for i, c in enumerate(conditions)]}
    path = tmp_path / "native.yaml"
    path.write_text(json.dumps(doc))
    return load_bundle(path)


def test_every_rule_of_the_feed_bundle_runs_in_c():
    from assay.guard.cli import resolve_bundle_path

    compiled = load_bundle(resolve_bundle_path("builtin:feed")).compile_rules("for_you")
    assert len(compiled.programs) == len(compiled.rules) == 25


def test_rules_outside_the_c_subset_stay_on_numpy(tmp_path):
    compiled = bundle_of(tmp_path, ["item.d + 1.0 > 2.0", "size(item.l) > 0", "item.d > 2.0 ? item.t : false",
                                    "item.s == 'a'"]).compile_rules("*")
    assert [p.row for p in compiled.programs] == [3]


EDGE_CONDITIONS = [
    'item.s == "toolongforthecolumn"', 'item.s != "toolongforthecolumn"', 'item.s == "a\\x00"', 'item.s == ""',
    'item.s in ["ab", "toolongforthecolumn", ""]', 'item.s in []', 'item.s.startsWith("toolongforthecolumn")',
    'item.s.startsWith("")', 'item.s.startsWith("a")', 'item.s.endsWith("b")', 'item.s.contains("é")',
    'item.s < "ab"', 'item.s >= "é"', '"b" in item.l', '"toolongforthecolumn" in item.l', 'item.s in item.l',
    'request.region in item.l', 'item.s in request.tags', 'request.region == item.s', '"x" in request.tags',
    'item.d >= 0.5 && request.age < 18', 'request.age >= 18 || item.t', '!(item.d < 0.5) && item.i != 3',
    'item.d == item.d', 'item.t == true', 'item.i in [1, 2, 3]', 'item.d in [0.5, 1.5]',
]


@pytest.mark.parametrize("request_ctx", [{"region": "ab", "tags": ["ab", "x"], "age": 15}, {"age": 40}, {}])
def test_fast_paths_agree_with_the_cel_library(tmp_path, request_ctx):
    """Fixed-width rows against constants longer than the column, holding a NUL or empty; lists
    with missing rows; object strings; shared values present and missing."""
    compiled = bundle_of(tmp_path, EDGE_CONDITIONS).compile_rules("*")
    assert len(compiled.programs) == len(EDGE_CONDITIONS)
    strings = ["ab", "a", "", "é", "ba", "abé"]
    lists = [["b"], [], ["ab", "x"], ["é", "b", "c"], [], ["a"]]
    missing_rows = np.array([False, False, True, False, False, True])
    columns = {
        "item.s": np.array(strings, dtype=str), "item.l": ListValues.from_lists(lists),
        "item.d": np.array([0.5, np.nan, 1.5, -0.0, 0.49, np.inf]), "item.i": np.array([1, 3, 5, 2**62, -1, 3]),
        "item.t": np.array([True, False, True, False, True, False]),
    }
    scalars = {f"request.{k}": v for k, v in request_ctx.items()}
    for cols in (columns, {**columns, "item.s": np.array(strings, dtype=object)}):
        batch = Batch.from_columns(6, cols, missing={"item.l": missing_rows, "item.d": missing_rows[::-1].copy()}, scalars=scalars)
        ref = compiled.evaluate_reference(batch)
        fast = compiled.evaluate(batch, native=True)
        for i, cond in enumerate(EDGE_CONDITIONS):
            assert fast[i].tolist() == ref[i].tolist(), f"{cond!r}: C {fast[i].tolist()} CEL {ref[i].tolist()}"
        assert np.array_equal(compiled.evaluate(batch, native=False), ref)


@pytest.mark.parametrize("form", ["list", "large_list", "sliced", "nul", "null_value"])
def test_arrow_string_lists_read_in_place_agree_with_the_cel_library(tmp_path, form):
    """Arrow list<string> columns are read by the C evaluator from Arrow's own buffers (UTF-8);
    a value holding a NUL or a null value sends the column down the per-row path."""
    import pyarrow as pa

    compiled = bundle_of(tmp_path, ['"b" in item.l', '"é" in item.l', 'request.region in item.l', 'item.s in item.l',
                                    '"toolongforthecolumn" in item.l', '!("" in item.l)']).compile_rules("*")
    rows = [["b"], [], None, ["é", "b", ""], ["ab"], ["😀", "x"]]
    if form == "nul":
        rows[4] = ["a\x00b"]
    if form == "null_value":
        rows[4] = ["a", None]
    arr = pa.array(rows, type=pa.large_list(pa.string()) if form == "large_list" else pa.list_(pa.string()))
    if form == "sliced":
        arr = pa.array([["zz"], *rows, ["b"]], type=pa.list_(pa.string())).slice(1, len(rows))
    strings = np.array(["b", "x", "", "é", "ab", "😀"], dtype=str)
    batch = Batch.from_columns(6, {"item.l": arr, "item.s": strings}, scalars={"request.region": "ab"})
    slot = vec._arrow_list_slot(arr, None, 6)
    assert (slot is None) == (form in ("nul", "null_value"))
    ref = compiled.evaluate_reference(Batch.from_columns(6, {"item.l": arr, "item.s": strings}, scalars={"request.region": "ab"}))
    assert compiled.evaluate(batch, native=True).tolist() == ref.tolist()


def test_a_column_of_another_type_is_missing_in_c_too(tmp_path):
    """Numbers where a string is declared (and the reverse) are ill-typed: MISSING in both
    evaluators, never numbers' bytes read as strings. (numpy compares a dtype with None as
    float64, which once let a float column through as fixed-width strings.)"""
    compiled = bundle_of(tmp_path, ['item.s == "a"', "item.d > 0.5", 'item.s != "a"']).compile_rules("*")
    batch = Batch.from_columns(3, {"item.s": np.array([0.5, 1.5, 2.5]), "item.d": np.array(["a", "b", "c"])})
    ref = compiled.evaluate_reference(batch)
    assert ref.tolist() == [[2, 2, 2]] * 3
    assert compiled.evaluate(batch, native=True).tolist() == ref.tolist()


def test_a_column_in_a_form_c_does_not_read_falls_back_to_numpy(tmp_path):
    compiled = bundle_of(tmp_path, ["item.i > 1", "item.d > 1.0"]).compile_rules("*")
    # int32 is not the int64 the C evaluator reads: that rule goes to numpy, the other stays in C
    batch = Batch.from_columns(3, {"item.i": np.array([1, 2, 3], dtype=np.int32), "item.d": np.array([0.5, 1.5, 2.5])})
    assert compiled.evaluate(batch, native=True).tolist() == [[0, 1, 1], [0, 1, 1]]


@pytest.mark.parametrize("slots, error", [
    (((3, np.zeros(2), None, 0),), ValueError),  # a column of 2 for a batch of 3
    (((3, np.zeros(3), np.zeros(2, dtype=bool), 0),), ValueError),  # a mask of the wrong length
    (((4, np.array(["a", "b", "c"]), None, 0),), ValueError),  # fixed-width strings without a width
    (((5, ["a", 1, "c"], None, 0),), TypeError),  # object strings holding an int
    (((6, 5, ["a"], None, 0, np.array([0, 2, 1, 1])),), ValueError),  # offsets that go backwards
    (((6, 8, (np.array([0, 5]), b"ab"), None, 0, np.array([0, 1, 1, 1])),), ValueError),  # UTF-8 offsets past the bytes
    (((6, 8, (np.array([0, 2, 1]), b"ab"), None, 0, np.array([0, 2, 2, 2])),), ValueError),  # offsets going back
    (((9, np.zeros(3), None, 0),), ValueError),  # an unknown kind
    (("not a tuple",), ValueError),
])
def test_malformed_slots_raise_and_write_nothing_out_of_bounds(slots, error):
    from assay.policy import _native

    program = (0, np.array([vec._OP_SLOT, 0, vec._OP_SLOT, 0, vec._OP_CMP, 4], dtype=np.int32).tobytes(), ())
    out = np.full((1, 3), 7, dtype=np.int8)
    with pytest.raises(error):
        _native.evaluate((program,), slots, 3, out)


@pytest.mark.parametrize("code, error", [
    ([vec._OP_SLOT, 2], IndexError),  # a slot that is not there
    ([vec._OP_CONST, 0], IndexError),  # a constant that is not there
    ([vec._OP_AND, 0], ValueError),  # stack underflow
    ([vec._OP_SLOT, 0, vec._OP_SLOT, 0], ValueError),  # leaves two values
    ([vec._OP_SLOT, 0, vec._OP_SKIP_AND, 0, vec._OP_NOT, 0], ValueError),  # jumps backwards
    ([42, 0], ValueError),  # an unknown instruction
    ([vec._OP_SLOT, 1, vec._OP_NOT, 0], TypeError),  # ! on a string column
    ([vec._OP_SLOT, 1, vec._OP_SLOT, 0, vec._OP_AND, 0], TypeError),  # && on a string column
    ([vec._OP_SLOT, 0, vec._OP_SLOT, 1, vec._OP_CMP, 4], TypeError),  # a bool compared with a string
])
def test_malformed_programs_raise(code, error):
    from assay.policy import _native

    out = np.zeros((1, 3), dtype=np.int8)
    slots = ((1, np.array([True, False, True]), None, 0), (5, ["a", "b", "c"], None, 0))
    with pytest.raises(error):
        _native.evaluate(((0, np.array(code, dtype=np.int32).tobytes(), ()),), slots, 3, out)
    with pytest.raises(IndexError):  # a row outside the outcome matrix
        _native.evaluate(((1, np.array([vec._OP_SLOT, 0], dtype=np.int32).tobytes(), ()),), slots, 3, out)


def test_an_arrow_array_of_scalars_is_read_as_its_values_and_nulls(tmp_path):
    """An Arrow array of scalars is its values (nulls absent): a string array feeds a string
    attribute; where a list is declared its strings are ill-typed (MISSING) in every evaluator.
    Only Arrow list arrays are kept and read as lists."""
    import pyarrow as pa

    compiled = bundle_of(tmp_path, ['item.s == "a"', '"a" in item.l', "item.i > 1"]).compile_rules("*")
    batch = Batch.from_columns(2, {"item.s": pa.array(["a", "b"]), "item.l": pa.array(["a", "b"]), "item.i": pa.array([2, None])})
    ref = compiled.evaluate_reference(batch)
    assert ref.tolist() == [[1, 0], [2, 2], [1, 2]]
    for native in (False, True):
        assert compiled.evaluate(batch, native=native).tolist() == ref.tolist()
