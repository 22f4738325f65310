"""The guard's own C pass (the candidate id check) equals its twin, and the guard decides alike
with and without the C extensions."""

from __future__ import annotations

import numpy as np
import pytest

from assay.guard import candidates
from assay.policy import batch as typing_mod
from assay.policy import slate as slate_mod
from assay.policy import vectorised


def test_the_extensions_are_built():
    """A machine with a C compiler (this one, CI) must have built them; without them the twins
    serve, correctly but slower, and the tests below could not compare the two."""
    from assay.store import labels

    assert candidates._native is not None, "assay.guard._native is missing: reinstall the package with a C compiler"
    assert labels.NATIVE, "assay.store._native is missing: reinstall the package with a C compiler"
    assert slate_mod.NATIVE and vectorised.NATIVE, "assay.policy._native is missing"


native_only = pytest.mark.skipif(candidates._native is None or not slate_mod.NATIVE,
                                 reason="the C extensions are not built (test_the_extensions_are_built fails)")


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
        with monkeypatch.context() as m:  # every C pass off: resolution, grouping, typing, rule programs
            m.setattr(slate_mod, "NATIVE", False)
            m.setattr(typing_mod, "_native", None)
            m.setattr(vectorised, "NATIVE", False)
            twin = guard.apply(request, batch)
        assert fast.item_ids == twin.item_ids and fast.item_labels == twin.item_labels
        np.testing.assert_array_equal(fast.scores, twin.scores)
        assert fast.to_arrow().drop_columns(["ts", "request_id"]).equals(twin.to_arrow().drop_columns(["ts", "request_id"]))


@native_only
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


@native_only
@pytest.mark.parametrize("values", [[1.5, 2.0], [1, 2], [True, False], [1, 2.0], [1, True], ["a", "b"], [], [None], [2**70, 1],
                                    [np.float64(1.0), 2.0], (1.0, 2.0)])
def test_json_array_typing_native_equals_python(values, monkeypatch):
    fast = candidates._from_list(values)
    monkeypatch.setattr(typing_mod, "_native", None)
    slow = candidates._from_list(values)
    assert fast.dtype == slow.dtype and fast.tolist() == slow.tolist()
