"""Property test: random policies from the supported CEL subset over random candidate batches
(missing values, wrong types, NaN, infinities, int64 extremes, empty lists, unicode strings):
the vectorised evaluator must agree with the CEL library on every candidate."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.guard.fuzz import cel_double, cel_str  # CEL literals for generated values
from assay.policy import Batch, ListValues, load_bundle

DECLS = {
    "item.a": "double", "item.b": "double", "item.i": "int", "item.j": "int", "item.s": "string",
    "item.u": "string", "item.t": "bool", "item.l": "list(string)", "item.ld": "list(double)",
    "item.m": "map(string, double)", "request.age": "int", "request.region": "string",
    "request.tags": "list(string)",
}
WORDS = ["", "a", "ab", "abc", "é", "Ω", "😀", "zz", "a\x00", "Ab", "ß", "\u200b"]
INT_EDGE = [0, 1, -1, 17, 18, 2**63 - 1, -(2**63), 2**62]
DOUBLE_EDGE = [0.0, -0.0, 0.5, 1.0, -1.5, 0.7, math.inf, -math.inf, math.nan, 1e300]


ints = st.sampled_from(INT_EDGE) | st.integers(-(2**63), 2**63 - 1)
doubles = st.sampled_from([d for d in DOUBLE_EDGE if not math.isnan(d)]) | st.floats(-1e6, 1e6)
words = st.sampled_from(WORDS) | st.text(alphabet="abcé😀", max_size=3)
# values only (never literals): an interior NUL or a lone surrogate is ill-typed for both evaluators
data_words = words | st.sampled_from(["a\x00b", "\x00a", "x\ud800", "\udfff"])


def double_expr(depth: int):
    leaves = st.sampled_from(["item.a", "item.b", 'item.m["k"]', 'item.m["x"]']) | doubles.map(cel_double)
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: double_expr(depth - 1))
    return leaves | st.tuples(sub, st.sampled_from(["+", "-", "*", "/"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})") | \
        st.tuples(bool_expr(depth - 1), sub, sub).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})") | sub.map(lambda e: f"(-{e})")


def int_expr(depth: int):
    leaves = st.sampled_from(["item.i", "item.j", "request.age", "size(item.l)", "size(item.s)", "size(request.tags)"]) | ints.map(str)
    if depth <= 0:
        return leaves
    sub = st.deferred(lambda: int_expr(depth - 1))
    return leaves | st.tuples(sub, st.sampled_from(["+", "-"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})")


def string_expr():
    return st.sampled_from(["item.s", "item.u", "request.region"]) | words.map(cel_str)


def bool_expr(depth: int):
    cmp = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    atoms = st.one_of(
        st.tuples(double_expr(min(depth, 1)), cmp, double_expr(min(depth, 1))).map(" ".join),
        st.tuples(int_expr(min(depth, 1)), cmp, int_expr(min(depth, 1))).map(" ".join),
        st.tuples(string_expr(), cmp, string_expr()).map(" ".join),
        st.just("item.t"),
        st.tuples(string_expr(), st.lists(words, max_size=4)).map(lambda t: f"{t[0]} in [{', '.join(cel_str(w) for w in t[1])}]"),
        st.tuples(string_expr(), st.sampled_from(["item.l", "request.tags"])).map(lambda t: f"{t[0]} in {t[1]}"),
        st.tuples(doubles.map(cel_double), st.just("item.ld")).map(lambda t: f"{t[0]} in {t[1]}"),
        st.sampled_from(['"k" in item.m', '"x" in item.m']),
        st.tuples(string_expr(), st.sampled_from(["startsWith", "endsWith", "contains"]), string_expr()).map(lambda t: f"{t[0]}.{t[1]}({t[2]})"),
    )
    if depth <= 0:
        return atoms
    sub = st.deferred(lambda: bool_expr(depth - 1))
    return atoms | st.tuples(sub, st.sampled_from(["&&", "||"]), sub).map(lambda t: f"({t[0]} {t[1]} {t[2]})") | \
        sub.map(lambda e: f"!({e})") | st.tuples(sub, sub, sub).map(lambda t: f"({t[0]} ? {t[1]} : {t[2]})")


def value_for(kind: str):
    wrong = st.sampled_from([None, "x", 1.5, 3, True, [1], {"k": 1}])
    good = {
        "double": doubles | st.sampled_from(DOUBLE_EDGE),
        "int": ints,
        "string": data_words,
        "bool": st.booleans(),
        "list(string)": st.lists(data_words, max_size=3),
        "list(double)": st.lists(doubles | st.just(math.nan), max_size=3),
        "map(string, double)": st.dictionaries(st.sampled_from(["k", "x", "y"]), doubles, max_size=2),
    }[kind]
    return st.one_of(good, good, good, wrong)


def item_strategy():
    fields = {k.split(".", 1)[1]: value_for(t) for k, t in DECLS.items() if k.startswith("item.")}
    return st.fixed_dictionaries({}, optional=fields)


def request_strategy():
    return st.fixed_dictionaries({}, optional={"age": value_for("int"), "region": value_for("string"), "tags": value_for("list(string)")})


def write_bundle(tmp_path, conditions: list[str]):
    doc = {
        "bundle": "prop", "version": "1",
        "attributes": {"rules": DECLS},
        "rules": [{"id": f"r{i}", "when": c, "action": "drop"} for i, c in enumerate(conditions)],
    }
    path = tmp_path / "prop.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return load_bundle(path)


def columns_from_items(items: list[dict], n: int):
    """The fast columnar input for the same candidates, where the values fit a column."""
    cols, missing = {}, {}
    for name, t in DECLS.items():
        if not name.startswith("item."):
            continue
        key = name.split(".", 1)[1]
        raw = [it.get(key) for it in items]
        if t == "double" and all(v is None or (isinstance(v, float)) for v in raw):
            cols[name] = np.array([0.0 if v is None else v for v in raw], dtype=np.float64)
            missing[name] = np.array([v is None for v in raw])
        elif t == "string" and raw and all(v is None or (isinstance(v, str) and not v.endswith("\x00")) for v in raw):
            cols[name] = np.array(["" if v is None else v for v in raw], dtype=str)  # fixed-width
            missing[name] = np.array([v is None for v in raw])
        elif t == "list(string)" and all(v is None or (isinstance(v, list) and all(isinstance(x, str) and not x.endswith("\x00") for x in v)) for v in raw):
            cols[name] = ListValues.from_lists([v or [] for v in raw]) if any(raw) else [v for v in raw]
            missing[name] = np.array([v is None for v in raw])
        else:
            cols[name] = raw  # per-row path
    return cols, missing


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(conditions=st.lists(bool_expr(2), min_size=1, max_size=4), request=request_strategy(),
       items=st.lists(item_strategy(), max_size=8))
def test_vectorised_agrees_with_reference(tmp_path, conditions, request, items):
    bundle = write_bundle(tmp_path, conditions)
    compiled = bundle.compile_rules("*")
    batch = Batch.from_records({"request": request}, items)
    ref = compiled.evaluate_reference(batch)
    # numpy alone, then with the rules the C subset covers in C (where it is built)
    for native in (False, True):
        fast = compiled.evaluate(Batch.from_records({"request": request}, items), native=native)
        for i, cond in enumerate(conditions):
            bad = np.flatnonzero(fast[i] != ref[i])
            assert bad.size == 0, (f"disagree on {cond!r} (native={native}) for item {items[bad[0]]!r}, request {request!r}: "
                                   f"vectorised {fast[i][bad[0]]} reference {ref[i][bad[0]]}")
        # the columnar fast path gives the same answers
        cols, missing = columns_from_items(items, len(items))
        scalars = {f"request.{k}": v for k, v in request.items()}
        cbatch = Batch.from_columns(len(items), cols, missing=missing, scalars=scalars)
        fast_c, ref_c = compiled.evaluate(cbatch, native=native), compiled.evaluate_reference(cbatch)
        assert np.array_equal(fast_c, ref_c), f"columnar path disagrees on {conditions!r} (native={native})"
        assert np.array_equal(fast_c, fast), f"columnar and record inputs differ on {conditions!r} (native={native})"


def test_unusable_strings_finds_interior_nul_and_surrogates():
    from assay.policy.batch import unusable_strings

    assert unusable_strings(np.array(["abc", "a", ""], dtype=str)) is None
    assert unusable_strings(np.zeros(0, dtype="U1")) is None
    bad = unusable_strings(np.array(["ab", "a\x00b", "x\ud800", "\x00c", "zz"], dtype=str))
    assert bad is not None and bad.tolist() == [False, True, True, True, False]
    assert unusable_strings(np.array(["\ud800", "a"], dtype=str)).tolist() == [True, False]  # width 1
