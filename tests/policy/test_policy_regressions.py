"""Regressions for requests that crashed a worker or were decided wrongly (issue #17), each
checked against the CEL library. Anything that could crash the process runs in a child process,
so a regression fails the test instead of killing the test runner."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from assay.policy import Batch, ListValues, load_bundle

DECLS = {"request.r": "string", "request.c": "bool", "request.tags": "list(string)", "item.tags": "list(string)",
         "item.s": "string"}


def compiled_rules(tmp_path, conditions: list[str]):
    doc = {"bundle": "regress", "version": "1", "attributes": {"rules": DECLS},
           "rules": [{"id": f"r{i}", "when": c, "action": "drop"} for i, c in enumerate(conditions)]}
    path = tmp_path / "regress.yaml"
    path.write_text(json.dumps(doc))
    return load_bundle(path).compile_rules("*")


def run_child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_an_absent_request_string_in_a_str_list_column_is_missing_not_a_segfault(tmp_path):
    """`request.r in item.tags` with request.r absent for the whole batch and the list column as
    Python str lists (what the guard builds from JSON): the C evaluator read a NULL str object."""
    doc = {"bundle": "regress", "version": "1", "attributes": {"rules": DECLS},
           "rules": [{"id": "r0", "when": "request.r in item.tags", "action": "drop"},
                     {"id": "r1", "when": "!(request.r in item.tags) || item.s == request.r", "action": "drop"},
                     {"id": "r2", "when": "request.r.startsWith(item.s) && item.s < request.r", "action": "drop"},
                     {"id": "r3", "when": "item.s in request.tags", "action": "drop"}]}
    (tmp_path / "b.yaml").write_text(json.dumps(doc))
    child = run_child(f"""
        import numpy as np
        from assay.policy import Batch, ListValues, load_bundle
        compiled = load_bundle({str(tmp_path / "b.yaml")!r}).compile_rules("*")
        tags = np.empty(3, dtype=object); tags[:] = ["a", "b", "c"]
        strs = np.empty(2, dtype=object); strs[:] = ["a", "b"]
        batch = Batch.from_columns(2, {{"item.tags": ListValues(tags, np.array([0, 1, 3], dtype=np.int64), clean=True),
                                        "item.s": strs}}, clean=frozenset({{"item.s"}}))
        print(compiled.evaluate(batch, native=True).tolist())
        print(compiled.evaluate_reference(batch).tolist())
    """)
    assert child.returncode == 0, f"child exited {child.returncode}: {child.stderr[-2000:]}"
    native, reference = child.stdout.split("\n")[:2]
    assert native == reference == str([[2, 2]] * 4)


def test_the_feed_bundle_with_no_country_and_a_region_blocklist_is_decided_in_a_child(tmp_path):
    """The reported form: the built-in feed bundle, a request without user.country, a candidate
    with a non-empty region_blocklist given as JSON lists, through `Guard.apply`."""
    child = run_child("""
        from assay.guard.cli import build_guard
        from assay.store.labels import InMemoryLabelStore
        guard = build_guard("builtin:feed", None)
        store = InMemoryLabelStore()
        names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
        store.put(["a", "b"], {n: [0.0, 0.0] for n in names}, "v1")
        guard.labels = store
        cands = {"id": ["a", "b"], "score": [0.9, 0.8], "region_blocklist": [["DE"], []], "tags": [[], []],
                 "source": ["catalog", "catalog"], "creator": ["c1", "c2"], "topic": ["film", "film"], "age_days": [1, 2]}
        user = {"id": "u", "age": 30, "region": "EU", "sensitive_opt_out": False}
        for user in (user, {**user, "country": "DE"}):
            slate = guard.apply({"surface": "for_you", "user": user}, cands)
            print([d.rule_ids for d in slate.decisions], slate.item_ids)
    """)
    assert child.returncode == 0, f"child exited {child.returncode}: {child.stderr[-2000:]}"
    absent, german = child.stdout.strip().split("\n")[-2:]
    # without a country the rule cannot be evaluated (`error in []` is an error too): both fail closed
    assert absent == "[('geo-block',), ('geo-block',)] []", child.stdout
    assert german == "[('geo-block',), ()] ['b']", child.stdout


@pytest.mark.parametrize("when, request_, item", [
    ('(false ? "" : "").contains("")', {}, {"s": "x"}),
    ('size(request.c ? "ab" : request.r) == 2', {"c": False, "r": "xy"}, {"s": "x"}),
    ('size(request.c ? "ab" : request.r) == 2', {"c": True}, {"s": "x"}),
    ('(request.c ? request.r : "b") == item.s', {"c": True}, {"s": "b"}),
    ('(true ? item.s : "b").endsWith("")', {}, {"s": "a"}),
    ('(request.c ? item.s : request.r) == item.s', {"c": True}, {"s": "a"}),
])
def test_a_conditional_over_request_wide_values_and_constants(tmp_path, when, request_, item):
    """`?:` whose condition and branches are one value for the batch made np.where return a 0-d
    array, which string functions and size() raised TypeError on."""
    compiled = compiled_rules(tmp_path, [when])
    for native in (False, True):
        batch = Batch.from_records({"request": request_}, [item, item])
        got = compiled.evaluate(batch, native=native)
        assert got.tolist() == compiled.evaluate_reference(Batch.from_records({"request": request_}, [item, item])).tolist()


@pytest.mark.parametrize("when", [
    '("a" + "\\x00") in item.tags', '(true ? "a\\x00" : "b") in item.tags', '("a" + "\\x00") == item.s',
    '(item.s + "\\x00") in item.tags', '(request.c ? "a\\x00" : item.s) == item.s', '(request.c ? "a\\x00" : item.s) in item.tags',
    '("a" + "\\x00") in ["a"]', '(item.s + "\\x00") != item.s',
])
def test_a_string_built_by_a_rule_keeps_its_trailing_nul(tmp_path, when):
    """Built with `+` or `?:`, a string ending in NUL is not the string without it (the numpy
    path compared a fixed-width copy, which drops trailing NULs)."""
    compiled = compiled_rules(tmp_path, [when])
    items = [{"s": "a", "tags": ["a"]}, {"s": "b", "tags": ["b", "a"]}]
    ref = compiled.evaluate_reference(Batch.from_records({"request": {"c": True}}, items))
    assert ref.tolist() == [[1, 1]] if "!=" in when else ref.tolist() == [[0, 0]]
    for native in (False, True):
        assert compiled.evaluate(Batch.from_records({"request": {"c": True}}, items), native=native).tolist() == ref.tolist()
        tags = np.array(["a", "b", "a"])
        cols = {"item.s": np.array(["a", "b"]), "item.tags": ListValues(tags, np.array([0, 1, 3], dtype=np.int64))}
        columnar = Batch.from_columns(2, cols, scalars={"request.c": True})
        assert compiled.evaluate(columnar, native=native).tolist() == ref.tolist()
