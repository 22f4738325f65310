"""The guard's own C pass (the candidate id check) finds what it should, and the guard decides
alike when every C pass of the policy library is replaced by its test oracle
(tests/policy/policy_oracles.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from assay.guard import candidates
from assay.policy import batch as typing_mod
from assay.policy import slate as slate_mod


def _policy_oracles():
    path = Path(__file__).resolve().parents[1] / "policy" / "policy_oracles.py"
    spec = importlib.util.spec_from_file_location("policy_oracles", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guard_decides_alike_with_the_oracles(feed_bundle, monkeypatch):
    from assay.guard import Guard
    from assay.guard.bench import USERS, candidate_batch, catalog, with_arrow_lists

    ids, store, meta = catalog(3000)
    rng = np.random.default_rng(5)
    batches = [candidate_batch(ids, meta, 400, rng) for _ in range(3)]
    guard = Guard(feed_bundle, store)
    oracles = _policy_oracles()
    guard_rules = feed_bundle.compile_rules("for_you")
    evaluate = type(guard_rules).evaluate

    def numpy_only(self, b, native=True):  # every rule on its numpy closure, none in C
        return evaluate(self, b, native=False)

    for k, batch in enumerate(batches + [with_arrow_lists(b) for b in batches]):
        request = {"surface": "for_you", "user": USERS[k % len(USERS)], "deadline_ms": 60_000}
        fast = guard.apply(request, batch)
        with monkeypatch.context() as m:  # every C pass replaced: resolution, grouping, typing, rule programs
            m.setattr(slate_mod, "resolve", oracles.resolve_oracle)
            m.setattr(slate_mod, "cap_ordinals", lambda column, positions: np.asarray(
                oracles.ordinals_oracle(slate_mod.hashable(column, positions).tolist()), dtype=np.int64))
            m.setattr(typing_mod, "clean_str_objects", oracles.clean_str_objects_oracle)
            m.setattr(typing_mod, "one_type", oracles.one_type_oracle)
            m.setattr(candidates, "one_type", oracles.one_type_oracle)
            m.setattr(typing_mod, "string_lists", oracles.string_lists_oracle)
            m.setattr(type(guard_rules), "evaluate", numpy_only)
            twin = guard.apply(request, batch)
        assert fast.item_ids == twin.item_ids and fast.item_labels == twin.item_labels
        np.testing.assert_array_equal(fast.scores, twin.scores)
        assert fast.to_arrow().drop_columns(["ts", "request_id"]).equals(twin.to_arrow().drop_columns(["ts", "request_id"]))


def test_check_ids_finds_the_first_bad_position():
    check = candidates._native.check_ids
    assert check([]) == -1 and check(["a", "b", "ab", "\U0001F600"]) == -1
    assert check(["a", "b", "a"]) == 2  # a repeat
    assert check(["a", "", "b"]) == 1  # empty
    assert check(["a", 7, "b"]) == 1  # not a str
    assert check(["a", np.str_("b")]) == 1  # a str subclass: the general path decides
    ids = [f"item-{k}" for k in range(5000)]
    assert check(ids) == -1 and check([*ids, "item-4321"]) == 5000


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


@pytest.mark.parametrize("values", [[1.5, 2.0], [1, 2], [True, False], [1, 2.0], [1, True], ["a", "b"], [], [None], [2**70, 1],
                                    [np.float64(1.0), 2.0], (1.0, 2.0)])
def test_json_array_typing_equals_the_oracle(values, monkeypatch):
    fast = candidates._from_list(values)
    monkeypatch.setattr(candidates, "one_type", _policy_oracles().one_type_oracle)
    slow = candidates._from_list(values)
    assert fast.dtype == slow.dtype and fast.tolist() == slow.tolist()
