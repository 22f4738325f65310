"""The policy library's C passes (rule resolution, cap and source grouping, column typing)
agree exactly with their test oracles (tests/policy/policy_oracles.py, pandas), and its action
codes are the one enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from policy_oracles import (
    clean_str_objects_oracle,
    clean_strings_oracle,
    one_type_oracle,
    ordinals_oracle,
    resolve_oracle,
    string_lists_oracle,
)

from assay.policy import batch as typing_mod
from assay.policy import slate as core
from assay.policy.actions import Act
from assay.policy.model import Action, Rule

K_DROP, K_ALLOW, K_DEMOTE, K_LABEL, K_CAP = Act.DROP, Act.ALLOW, Act.DEMOTE, Act.LABEL, Act.CAP


def test_the_c_walk_takes_its_action_table_from_the_action_types():
    """The C code names no action: it reads (hard, drops, precedence) per code from the table
    the action types make, and refuses a rule whose code has no row there."""
    from assay.policy import actions

    table = actions.action_table()
    for a in Act:
        cls = actions.ACTIONS.get(a.label)
        assert cls.code == int(a) and actions.ACTION_NAMES[int(a)] == a.label
        assert tuple(table[int(a)]) == (cls.hard, cls.drops, cls.precedence)
    plan = _plan([K_DEMOTE])
    bad = np.array([len(table)], dtype=np.int8)
    out = [np.empty(1, np.int32), np.empty(1, bool), np.empty(1, bool), np.empty(1, np.int8), np.empty(1), np.zeros((1, 1), bool)]
    with pytest.raises(ValueError, match="no row in the action table"):
        core._native.resolve(np.ones((1, 1), np.int8), bad, plan.table, int(Act.DROP), int(Act.ALLOW), plan.fail_closed,
                             np.ones(1, bool), np.zeros(1, bool), plan.factors, *out)
    with pytest.raises(ValueError, match=r"table: 4 bytes is not one \(hard, drops, precedence\) row per action code"):
        core._native.resolve(np.ones((1, 1), np.int8), plan.kinds, np.zeros(4, np.int8), int(Act.DROP), int(Act.ALLOW),
                             plan.fail_closed, np.ones(1, bool), np.zeros(1, bool), plan.factors, *out)


def _plan(kinds, factors=None, fail_closed=None):
    names = {K_DROP: "drop", K_ALLOW: "allow", K_DEMOTE: "demote", K_LABEL: "label", K_CAP: "cap"}
    rules = []
    for r, k in enumerate(kinds):
        k = Act(int(k))
        action = Action(names[k], factor=(factors[r] if factors is not None else 0.5) if k == K_DEMOTE else None,
                        text="t" if k == K_LABEL else None, key="creator" if k == K_CAP else None, limit=2 if k == K_CAP else None)
        rules.append(Rule(id=f"r{r}", when="true", section="rules", reason="", location=None,
                          on_missing="fail_closed" if (fail_closed is None or fail_closed[r]) else "skip", action=action))
    return core.RulePlan.build(rules)


@pytest.mark.parametrize("seed", range(40))
def test_resolve_equals_the_oracle(seed):
    rng = np.random.default_rng(seed)
    n_rules, n = int(rng.integers(0, 30)), int(rng.integers(1, 300))
    kinds = rng.choice([K_DROP, K_ALLOW, K_DEMOTE, K_LABEL, K_CAP], n_rules)
    plan = _plan(kinds, rng.choice([0.5, 0.3, 0.7, 0.9, 0.0], n_rules).tolist(), (rng.random(n_rules) < 0.8).tolist())
    outcomes = rng.choice(np.array([0, 1, 2], dtype=np.int8), (n_rules, n), p=[0.8, 0.15, 0.05])
    live = rng.random(n_rules) < 0.85
    pre_dropped = rng.random(n) < 0.1
    fast = core.resolve(plan, outcomes, live, pre_dropped)
    twin = resolve_oracle(plan, outcomes, live, pre_dropped)
    for name in ("first", "failed_closed", "dropped", "action", "factor", "soft"):
        a, b = getattr(fast, name), getattr(twin, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)  # factors too: the same products, bit for bit


def test_resolve_hand_checked():
    # rules: demote 0.5, label, drop (fail closed), allow, demote 0.3
    plan = _plan([K_DEMOTE, K_LABEL, K_DROP, K_ALLOW, K_DEMOTE], [0.5, 1.0, 1.0, 1.0, 0.3], [True, True, True, True, False])
    outcomes = np.array([
        [1, 1, 0, 0, 2],  # demote acts on candidates 0, 1 (2's MISSING fails closed: decides)
        [1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0],  # drop decides candidate 1
        [0, 0, 0, 1, 0],  # allow decides candidate 3: the later demote does not act
        [1, 0, 2, 1, 0],  # skip rule: MISSING does not match
    ], dtype=np.int8)
    for resolve in (core.resolve, resolve_oracle):
        _hand_checked(resolve(plan, outcomes, np.ones(5, dtype=bool), np.zeros(5, dtype=bool)))


def _hand_checked(res):
    assert res.first.tolist() == [5, 2, 5, 3, 0]
    assert res.failed_closed.tolist() == [False, False, False, False, True]
    assert res.dropped.tolist() == [False, True, False, False, True]
    assert res.action.tolist() == [K_DEMOTE, K_DROP, K_ALLOW, K_ALLOW, K_DROP]
    assert res.factor.tolist() == [0.5 * 0.3, 0.5, 1.0, 1.0, 1.0]


def test_resolve_checks_buffer_sizes():
    with pytest.raises(ValueError, match="outcomes"):
        core._native.resolve(np.zeros(5, np.int8), np.zeros(2, np.int8), core.action_table(), int(K_DROP), int(K_ALLOW),
                             np.ones(2, bool), np.ones(2, bool), np.zeros(3, bool),
                             np.ones(2), np.empty(3, np.int32), np.empty(3, bool), np.empty(3, bool), np.empty(3, np.int8),
                             np.empty(3), np.zeros((2, 3), bool))


@pytest.mark.parametrize("seed", range(20))
def test_cap_ordinals_of_fixed_width_strings_equal_the_oracle(seed):
    rng = np.random.default_rng(seed)
    alphabet = np.array(["", "a", "ab", "b", "ba", "\u00e9", "\U0001F600", "a\x00b", "creator-1", "creator-12"])
    values = rng.choice(alphabet, int(rng.integers(1, 400)))
    positions = rng.permutation(len(values))[: int(rng.integers(0, len(values) + 1))]
    fast = core.cap_ordinals(values, positions)
    np.testing.assert_array_equal(fast, ordinals_oracle(values[positions].tolist()))
    np.testing.assert_array_equal(core.cap_ordinals(np.repeat(values, 2)[::2], positions), fast)  # not contiguous
    # the ordinal of each row is how many earlier listed rows hold the same string
    seen: dict[str, int] = {}
    for k, p in enumerate(positions.tolist()):
        assert fast[k] == seen.get(str(values[p]), 0)
        seen[str(values[p])] = seen.get(str(values[p]), 0) + 1


def test_group_ordinals_rejects_positions_outside_the_column():
    with pytest.raises(IndexError, match="outside the 3 rows"):
        core._native.group_ordinals(np.array(["a", "b", "c"]), 4, np.array([0, 3]), np.empty(2, np.int64))


@pytest.mark.parametrize("seed", range(30))
def test_clean_strings_agrees_with_the_policy_librarys_check(seed):
    from assay.policy.batch import unusable_strings

    rng = np.random.default_rng(seed)
    pool = ["", "a", "ab", "creator-12", "\u00e9t\u00e9", "\U0001F600", "a\x00b", "\x00a", "x\ud800", "\udfff"]
    p = np.array([8, 8, 8, 8, 8, 8, 1, 1, 1, 1], dtype=float)
    values = np.array(rng.choice(pool, int(rng.integers(1, 50)), p=p / p.sum()).tolist())
    clean = typing_mod._native.clean_strings(values, values.dtype.itemsize // 4)
    assert clean == clean_strings_oracle(values) == (unusable_strings(values) is None)


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
    clean = typing_mod._native.clean_strings(array, array.dtype.itemsize // 4)
    assert clean == clean_strings_oracle(array) == (unusable_strings(array) is None)


@pytest.mark.parametrize("seed", range(20))
def test_cap_ordinals_of_python_strings_equal_the_oracle(seed):
    rng = np.random.default_rng(seed)
    pool = [None, "", "a", "b", "ab", "\u00e9", "a\x00b", "creator-7"]
    values = np.empty(int(rng.integers(1, 300)), dtype=object)
    values[:] = [pool[i] for i in rng.integers(0, len(pool), len(values))]
    positions = rng.permutation(len(values))[: int(rng.integers(0, len(values) + 1))]
    out = np.empty(len(positions), dtype=np.int64)
    assert core._native.group_ordinals_str(values.tolist(), positions.astype(np.int64), out) >= 0
    np.testing.assert_array_equal(out, ordinals_oracle(values[positions].tolist()))
    np.testing.assert_array_equal(core.cap_ordinals(values, positions), out)
    # a value of another type: the native path declines and the general one decides
    mixed = np.array(["a", 1.0, float("nan"), None, "a"], dtype=object)
    assert core._native.group_ordinals_str(mixed.tolist(), np.arange(5, dtype=np.int64), np.empty(5, dtype=np.int64)) == -1
    assert core.cap_ordinals(mixed, np.arange(5)).tolist() == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("seed", range(12))
def test_factorize_native_equals_pandas(seed):
    """Per-source breakers group a batch's sources with the extension; pandas is the oracle."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    pool = ["catalog", "ugc:creators", "ads:network", "", "é", "news:wire"]
    picks = [pool[i] for i in rng.integers(0, len(pool), int(rng.integers(1, 400)))]
    as_objects = np.empty(len(picks), dtype=object)
    as_objects[:] = [None if rng.random() < 0.1 else p for p in picks]
    for values in (np.array(picks), as_objects, np.array(["a", 1.0, None, "a"], dtype=object)):
        codes, uniques = core.factorize(values, with_uniques=True)
        want_codes, want_uniques = pd.factorize(values, use_na_sentinel=False)
        assert codes.tolist() == want_codes.tolist()
        # pandas gives NaN for None; the guard names an absent source None
        assert uniques.tolist() == [None if pd.isna(u) else u for u in want_uniques]
        assert core.factorize(values).tolist() == want_codes.tolist()


@pytest.mark.parametrize("values", [
    [], ["a", "é", "Ω", "😀", ""], ["a\x00"], ["ab", "x\ud800"], ["\udfff"], ["Ωa\x00"], ["😀\x00"], ["a", 1], ["a", None],
    [b"a"], [np.str_("a")],
])
def test_clean_str_objects_equal_the_oracle(values):
    assert typing_mod.clean_str_objects(list(values)) == clean_str_objects_oracle(list(values))
    assert typing_mod.one_type(list(values)) is one_type_oracle(list(values))


STRING_LIST_ROWS = [
    [["a", "b"], [], None, ("c",)], [[], []], [], [["é", "😀"], None, None], [["a"], "ab"], [["a"], [1]], [["a\x00"]],
    [["x\ud800"]], [[None]], [["a"], {"b": 1}], [None], [["a"], ["b", "c", "d"]],
]


@pytest.mark.parametrize("rows", STRING_LIST_ROWS)
def test_string_lists_equal_the_oracle(rows):
    col = np.empty(len(rows), dtype=object)
    col[:] = rows
    fast = typing_mod.string_lists(col.tolist())
    slow = string_lists_oracle(col.tolist())
    assert (fast is None) == (slow is None)
    if fast is not None:
        (fv, fn), (sv, sn) = fast, slow
        assert fv.flat.tolist() == sv.flat.tolist() and fv.offsets.tolist() == sv.offsets.tolist() and fv.clean == sv.clean
        assert (fn is None and sn is None) or fn.tolist() == sn.tolist()


def test_string_lists_hands_over_its_one_reference():
    """`str_lists` kept an extra reference to the flat list it returned, so every request with a
    list column leaked the list (and, through it, the strings of the JSON it was made from)."""
    import sys

    from assay.policy import _native

    rows = [["a", "b"], [], ["c"]]
    flat = _native.str_lists(rows, np.empty(4, dtype=np.int64), np.empty(3, dtype=np.uint8))
    assert flat == ["a", "b", "c"]
    assert sys.getrefcount(flat) == 2  # the name and getrefcount's own argument
    assert _native.str_lists([["a"], [1]], np.empty(3, dtype=np.int64), np.empty(2, dtype=np.uint8)) is None

