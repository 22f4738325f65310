"""The guard's C rule resolution and cap grouping agree exactly with their numpy twins."""

from __future__ import annotations

import numpy as np
import pytest

from assay.guard import core
from assay.guard.core import K_ALLOW, K_CAP, K_DEMOTE, K_DROP, K_LABEL, RuleSpec, RuleVectors


def test_the_extensions_are_built():
    """A machine with a C compiler (this one, CI) must have built both; without them the numpy
    twins serve, correctly but slower, and the tests below could not compare the two."""
    from assay.store import labels

    assert core.NATIVE, "assay.guard._native is missing: reinstall the package with a C compiler"
    assert labels.NATIVE, "assay.store._native is missing: reinstall the package with a C compiler"


native_only = pytest.mark.skipif(not core.NATIVE, reason="the C extension is not built (test_the_extensions_are_built fails)")


class _Surface:
    """Just what resolve() reads of a compiled surface: the rule vectors, and the policy rules the
    numpy twin (the policy library's resolution) walks."""

    def __init__(self, specs):
        from types import SimpleNamespace

        from assay.policy.model import Action, Rule

        names = {K_DROP: "drop", K_ALLOW: "allow", K_DEMOTE: "demote", K_LABEL: "label", K_CAP: "cap"}
        self.vectors = RuleVectors.of(tuple(specs))
        rules = [Rule(id=sp.id, when="true", section="rules", reason=sp.reason, location=None,
                      on_missing="fail_closed" if sp.fail_closed else "skip",
                      action=Action(names[sp.kind], factor=sp.factor if sp.kind == K_DEMOTE else None))
                 for sp in specs]
        self.compiled = SimpleNamespace(rules=rules)


def _specs(rng, n_rules):
    kinds = rng.choice([K_DROP, K_ALLOW, K_DEMOTE, K_LABEL, K_CAP], n_rules)
    return [RuleSpec(index=r, id=f"r{r}", kind=int(k), factor=float(rng.choice([0.5, 0.3, 0.7, 0.9, 1.1])), text="t",
                     key="creator", limit=2, fail_closed=bool(rng.random() < 0.8), shadow=False, rollout=100.0, reason="")
            for r, k in enumerate(kinds)]


@native_only
@pytest.mark.parametrize("seed", range(40))
def test_resolve_native_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    n_rules, n = int(rng.integers(0, 30)), int(rng.integers(1, 300))
    surface = _Surface(_specs(rng, n_rules))
    outcomes = rng.choice(np.array([0, 1, 2], dtype=np.int8), (n_rules, n), p=[0.8, 0.15, 0.05])
    live = rng.random(n_rules) < 0.85
    pre_dropped = rng.random(n) < 0.1
    fast = core.resolve(surface, outcomes, live, pre_dropped, native=True)
    twin = core.resolve(surface, outcomes, live, pre_dropped, native=False)
    for name in ("first", "failed_closed", "dropped", "action", "factor", "soft"):
        a, b = getattr(fast, name), getattr(twin, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # factors too: the same products, bit for bit


@native_only
def test_resolve_hand_checked():
    # rules: demote 0.5, label, drop (fail closed), allow, demote 0.3
    specs = [RuleSpec(0, "d", K_DEMOTE, 0.5, "", "", 0, True, False, 100.0, ""),
             RuleSpec(1, "l", K_LABEL, 1.0, "x", "", 0, True, False, 100.0, ""),
             RuleSpec(2, "x", K_DROP, 1.0, "", "", 0, True, False, 100.0, ""),
             RuleSpec(3, "a", K_ALLOW, 1.0, "", "", 0, True, False, 100.0, ""),
             RuleSpec(4, "d2", K_DEMOTE, 0.3, "", "", 0, False, False, 100.0, "")]
    outcomes = np.array([
        [1, 1, 0, 0, 2],  # demote acts on candidates 0, 1 (2's MISSING fails closed: decides)
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],  # drop decides candidate 1
        [0, 0, 0, 1, 0],  # allow decides candidate 3: the later demote does not act
        [1, 0, 2, 1, 0],  # skip rule: MISSING does not match
    ], dtype=np.int8)
    res = core.resolve(_Surface(specs), outcomes, np.ones(5, dtype=bool), np.zeros(5, dtype=bool), native=True)
    assert res.first.tolist() == [5, 2, 5, 3, 0]
    assert res.failed_closed.tolist() == [False, False, False, False, True]
    assert res.dropped.tolist() == [False, True, False, False, True]
    assert res.action.tolist() == [K_DEMOTE, K_DROP, K_ALLOW, K_ALLOW, K_DROP]
    assert res.factor.tolist() == [0.5 * 0.3, 0.5, 1.0, 1.0, 1.0]


@native_only
def test_resolve_checks_buffer_sizes():
    with pytest.raises(ValueError, match="outcomes"):
        core._native.resolve(np.zeros(5, np.int8), np.zeros(2, np.int8), np.ones(2, bool), np.ones(2, bool), np.zeros(3, bool),
                             np.ones(2), np.empty(3, np.int32), np.empty(3, bool), np.empty(3, bool), np.empty(3, np.int8),
                             np.empty(3), np.zeros((2, 3), bool))


@native_only
@pytest.mark.parametrize("seed", range(20))
def test_group_ordinals_native_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    alphabet = np.array(["", "a", "ab", "b", "ba", "\u00e9", "\U0001F600", "a\x00b", "creator-1", "creator-12"])
    values = rng.choice(alphabet, int(rng.integers(1, 400)))
    positions = rng.permutation(len(values))[: int(rng.integers(0, len(values) + 1))]
    fast = core._cap_ordinals(values, positions)
    np.testing.assert_array_equal(fast, core._group_ordinals(values[positions]))
    # the ordinal of each row is how many earlier listed rows hold the same string
    seen: dict[str, int] = {}
    for k, p in enumerate(positions.tolist()):
        assert fast[k] == seen.get(str(values[p]), 0)
        seen[str(values[p])] = seen.get(str(values[p]), 0) + 1


@native_only
def test_group_ordinals_rejects_positions_outside_the_column():
    with pytest.raises(IndexError, match="outside the 3 rows"):
        core._native.group_ordinals(np.array(["a", "b", "c"]), 4, np.array([0, 3]), np.empty(2, np.int64))


@native_only
def test_the_guard_decides_alike_with_and_without_the_extension(feed_bundle, monkeypatch):
    from assay.guard import Guard
    from assay.guard.bench import USERS, candidate_batch, catalog, with_arrow_lists

    ids, store, meta = catalog(3000)
    rng = np.random.default_rng(5)
    batches = [candidate_batch(ids, meta, 400, rng) for _ in range(3)]
    guard = Guard(feed_bundle, store)
    for k, batch in enumerate(batches + [with_arrow_lists(b) for b in batches]):
        request = {"surface": "for_you", "user": USERS[k % len(USERS)], "deadline_ms": 60_000}
        fast = guard.apply(request, batch)
        monkeypatch.setattr(core, "NATIVE", False)
        twin = guard.apply(request, batch)
        monkeypatch.setattr(core, "NATIVE", True)
        assert fast.item_ids == twin.item_ids and fast.item_labels == twin.item_labels
        np.testing.assert_array_equal(fast.scores, twin.scores)
        assert fast.to_arrow().drop_columns(["ts", "request_id"]).equals(twin.to_arrow().drop_columns(["ts", "request_id"]))


@native_only
def test_check_ids_finds_the_first_bad_position():
    check = core._native.check_ids
    assert check([]) == -1 and check(["a", "b", "ab", "\U0001F600"]) == -1
    assert check(["a", "b", "a"]) == 2  # a repeat
    assert check(["a", "", "b"]) == 1  # empty
    assert check(["a", 7, "b"]) == 1  # not a str
    assert check(["a", np.str_("b")]) == 1  # a str subclass: the general path decides
    ids = [f"item-{k}" for k in range(5000)]
    assert check(ids) == -1 and check([*ids, "item-4321"]) == 5000


@native_only
@pytest.mark.parametrize("seed", range(30))
def test_clean_strings_agrees_with_the_policy_librarys_check(seed):
    from assay.policy.batch import unusable_strings

    rng = np.random.default_rng(seed)
    pool = ["", "a", "ab", "creator-12", "\u00e9t\u00e9", "\U0001F600", "a\x00b", "\x00a", "x\ud800", "\udfff"]
    p = np.array([8, 8, 8, 8, 8, 8, 1, 1, 1, 1], dtype=float)
    values = np.array(rng.choice(pool, int(rng.integers(1, 50)), p=p / p.sum()).tolist())
    assert core._native.clean_strings(values, values.dtype.itemsize // 4) == (unusable_strings(values) is None)


@native_only
@pytest.mark.parametrize("values", [
    ["a", "", "b"],  # width 1: every pair of code points straddles two rows
    ["", ""], ["ab", "", "cd", "e"],  # padding then a non-empty value: a straddling pair, not a NUL inside
    ["ab", "a\x00"],  # a trailing NUL is padding
    ["abc"] * 37 + ["a\x00b"],  # the only bad value last, past the vector loop's full blocks
    ["abc"] * 37 + ["ab\udfff"],  # a lone surrogate as the very last code point
    ["\ud800"], ["\x00x"], ["x\x00\x00y" + "z" * 20] + ["q"] * 100,
    ["\U0001F600\ue000\ud7ff"] * 5,  # code points just outside the surrogate range
])
def test_clean_strings_edge_cases(values):
    from assay.policy.batch import unusable_strings

    array = np.array(values)
    assert core._native.clean_strings(array, array.dtype.itemsize // 4) == (unusable_strings(array) is None)


def test_a_string_column_with_a_nul_inside_is_still_missing_for_the_rules(feed_bundle):
    """A fixed-width column the C check passes skips the policy library's scan; one it refuses
    (a NUL inside a value) must still make that value MISSING, so a fail-closed rule drops it."""
    from assay.guard import Guard
    from assay.store.labels import InMemoryLabelStore

    ids = ["a", "b", "c"]
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store = InMemoryLabelStore()
    store.put(ids, {name: [0.0] * 3 for name in names}, "v")
    request = {"surface": "for_you", "deadline_ms": 60_000,
               "user": {"id": "u", "age": 30, "region": "US", "country": "US", "sensitive_opt_out": False}}
    guard = Guard(feed_bundle, store)
    for topics, dropped in ((["film", "ne\x00ws", "news"], {"b"}), (["film", "music", "news"], set())):
        cands = {"id": ids, "score": [0.9, 0.8, 0.7], "source": np.array(["catalog"] * 3), "creator": np.array(["c1", "c2", "c3"]),
                 "topic": np.array(topics), "age_days": np.array([1, 1, 1]), "tags": [[]] * 3, "region_blocklist": [[]] * 3}
        fast, ref = guard.apply(request, cands), guard.apply(request, cands, evaluator="reference")
        assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions]
        assert {d.item_id for d in fast.decisions if d.action == "drop"} == dropped


@native_only
@pytest.mark.parametrize("seed", range(20))
def test_group_ordinals_of_python_strings_native_equals_numpy(seed):
    rng = np.random.default_rng(seed)
    pool = [None, "", "a", "b", "ab", "\u00e9", "a\x00b", "creator-7"]
    values = np.empty(int(rng.integers(1, 300)), dtype=object)
    values[:] = [pool[i] for i in rng.integers(0, len(pool), len(values))]
    positions = rng.permutation(len(values))[: int(rng.integers(0, len(values) + 1))]
    out = np.empty(len(positions), dtype=np.int64)
    assert core._native.group_ordinals_str(values.tolist(), positions.astype(np.int64), out) >= 0
    np.testing.assert_array_equal(out, core._group_ordinals(values[positions]))
    np.testing.assert_array_equal(core._cap_ordinals(values, positions), out)
    # a value of another type: the native path declines and the general one decides
    mixed = np.array(["a", 1.0, float("nan"), None, "a"], dtype=object)
    assert core._native.group_ordinals_str(mixed.tolist(), np.arange(5, dtype=np.int64), np.empty(5, dtype=np.int64)) == -1
    assert core._cap_ordinals(mixed, np.arange(5)).tolist() == [0, 0, 0, 1, 1]


@native_only
@pytest.mark.parametrize("seed", range(12))
def test_factorize_native_equals_pandas(seed):
    """Per-source breakers group a batch's sources with the extension; pandas is the twin."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    pool = ["catalog", "ugc:creators", "ads:network", "", "é", "news:wire"]
    picks = [pool[i] for i in rng.integers(0, len(pool), int(rng.integers(1, 400)))]
    as_objects = np.empty(len(picks), dtype=object)
    as_objects[:] = [None if rng.random() < 0.1 else p for p in picks]
    for values in (np.array(picks), as_objects, np.array(["a", 1.0, None, "a"], dtype=object)):
        codes, uniques = core._factorize(values, with_uniques=True)
        want_codes, want_uniques = pd.factorize(values, use_na_sentinel=False)
        assert codes.tolist() == want_codes.tolist()
        # pandas gives NaN for None; the guard names an absent source None
        assert uniques.tolist() == [None if pd.isna(u) else u for u in want_uniques]
        assert core._factorize(values).tolist() == want_codes.tolist()


@native_only
@pytest.mark.parametrize("values", [
    [], ["a", "é", "Ω", "😀", ""], ["a\x00"], ["ab", "x\ud800"], ["\udfff"], ["Ωa\x00"], ["😀\x00"], ["a", 1], ["a", None],
    [b"a"], [np.str_("a")],
])
def test_clean_str_objects_native_equals_python(values, monkeypatch):
    fast = core._clean_str_objects(list(values))
    monkeypatch.setattr(core, "NATIVE", False)
    assert fast == core._clean_str_objects(list(values))


def test_json_strings_that_are_not_clean_decide_like_the_reference(feed_bundle):
    """JSON string columns and string lists pass to the policy library as str objects only when
    every value is clean; a NUL, a lone surrogate or another type sends the column down the
    per-value path, and either way the decisions equal the reference evaluator's."""
    from assay.guard.core import Guard
    from assay.store.labels import InMemoryLabelStore

    n = 4
    ids = [f"i{k}" for k in range(n)]
    store = InMemoryLabelStore()
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store.put(ids, {name: np.full(n, 0.95) for name in names}, "v")
    g = Guard(feed_bundle, store)
    req = {"surface": "for_you", "deadline_ms": 60_000, "user": {"id": "a", "age": 40, "region": "US", "country": "DE"}}
    for source, tags in ((["ugc:x", "ads:y", "catalog", "news"], [["clickbait"], [], ["sponsored"], []]),
                         (["ugc:x", "ads:\ud800", "cat\x00", 7], [["clickbait"], ["x\ud800"], ["a\x00"], [3]])):
        cands = {"id": ids, "score": [0.9, 0.8, 0.7, 0.6], "source": source, "topic": ["news"] * n,
                 "creator": ["a", "b", "a", "c"], "age_days": [1, 2, 3, 4], "region_blocklist": [["DE"], [], [], []], "tags": tags}
        fast, ref = g.apply(req, cands), g.apply(req, cands, evaluator="reference")
        assert fast.item_ids == ref.item_ids
        assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions]


STRING_LIST_ROWS = [
    [["a", "b"], [], None, ("c",)], [[], []], [], [["é", "😀"], None, None], [["a"], "ab"], [["a"], [1]], [["a\x00"]],
    [["x\ud800"]], [[None]], [["a"], {"b": 1}], [None], [["a"], ["b", "c", "d"]],
]


@native_only
@pytest.mark.parametrize("rows", STRING_LIST_ROWS)
def test_string_lists_native_equals_python(rows, monkeypatch):
    col = np.empty(len(rows), dtype=object)
    col[:] = rows
    fast = core._string_lists(col)
    monkeypatch.setattr(core, "NATIVE", False)
    slow = core._string_lists(col)
    assert (fast is None) == (slow is None)
    if fast is not None:
        (fv, fn), (sv, sn) = fast, slow
        assert fv.flat.tolist() == sv.flat.tolist() and fv.offsets.tolist() == sv.offsets.tolist() and fv.clean == sv.clean
        assert (fn is None and sn is None) or fn.tolist() == sn.tolist()


@native_only
@pytest.mark.parametrize("values", [[1.5, 2.0], [1, 2], [True, False], [1, 2.0], [1, True], ["a", "b"], [], [None], [2**70, 1],
                                    [np.float64(1.0), 2.0], (1.0, 2.0)])
def test_json_array_typing_native_equals_python(values, monkeypatch):
    from assay.guard import candidates

    fast = candidates._from_list(values)
    monkeypatch.setattr(candidates, "_native", None)
    slow = candidates._from_list(values)
    assert fast.dtype == slow.dtype and fast.tolist() == slow.tolist()


@native_only
def test_string_lists_hands_over_its_one_reference():
    """`str_lists` kept an extra reference to the flat list it returned, so every request with a
    list column leaked the list (and, through it, the strings of the JSON it was made from)."""
    import sys

    from assay.guard import _native

    rows = [["a", "b"], [], ["c"]]
    flat = _native.str_lists(rows, np.empty(4, dtype=np.int64), np.empty(3, dtype=np.uint8))
    assert flat == ["a", "b", "c"]
    assert sys.getrefcount(flat) == 2  # the name and getrefcount's own argument
    assert _native.str_lists([["a"], [1]], np.empty(3, dtype=np.int64), np.empty(2, dtype=np.uint8)) is None
