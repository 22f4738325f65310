"""The guard's action semantics, fail-closed paths, bad input and atomic bundle reloads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from guard_helpers import GUARD_TEST_BUNDLE, LABELS, make_candidates, make_labels

from assay.errors import BadInput
from assay.guard import Guard, GuardConfig
from assay.guard import candidates as cand_mod
from assay.store.labels import InMemoryLabelStore, RedisLabelStore

# a generous deadline wherever the budget is not what a test is about (CI machines are shared)
ADULT = {"request_id": "r-adult", "surface": "for_you", "user": {"id": "u-adult", "age": 30}, "deadline_ms": 60_000}
TEEN = {"request_id": "r-teen", "surface": "for_you", "user": {"id": "u-teen", "age": 15}, "deadline_ms": 60_000}

# id, score, mature, spam, toxic, verified, creator, topic
ROWS = [
    ("a", 0.90, 0.9, 0.0, 0.0, False, "c1", "film"),   # mature: demote 0.8 + label; teen: dropped
    ("b", 0.85, 0.0, 0.95, 0.0, False, "c2", "film"),  # spam-drop
    ("c", 0.50, 0.0, 0.10, 0.9, True, "c3", "film"),   # verified-allow: exempt from the toxic demote
    ("d", 0.80, 0.0, 0.0, 0.6, False, "c4", "film"),   # toxic demote 0.5
    ("e", 1.00, 0.6, 0.0, 0.6, False, "c5", "film"),   # demote 0.5 * 0.8 stacked + label
    ("f", 0.30, 0.0, 0.0, 0.0, False, "c9", "film"),   # three by c9: the lowest is capped
    ("g", 0.20, 0.0, 0.0, 0.0, False, "c9", "film"),
    ("h", 0.10, 0.0, 0.0, 0.0, False, "c9", "film"),
    ("i", 0.60, 0.0, 0.6, 0.0, False, "c6", "film"),   # matches the shadow rule only
    ("j", 0.40, 0.0, 0.0, 0.0, False, "c7", None),     # topic missing: the skip rule does not fire
    ("k", 0.45, 0.0, 0.0, 0.0, False, "c8", "news"),   # news label
]


def hand_batch():
    ids = [r[0] for r in ROWS]
    store = InMemoryLabelStore()
    store.put(ids, {"mature": [r[2] for r in ROWS], "spam": [r[3] for r in ROWS], "toxic": [r[4] for r in ROWS]}, "clf-1")
    cands = {
        "id": ids,
        "score": [r[1] for r in ROWS],
        "verified": np.array([r[5] for r in ROWS]),
        "creator": [r[6] for r in ROWS],
        "topic": [r[7] for r in ROWS],
    }
    return store, cands


def test_actions_hand_checked(test_bundle):
    store, cands = hand_batch()
    slate = Guard(test_bundle, store).apply(ADULT, cands)
    scores = dict(zip(slate.item_ids, slate.scores.tolist(), strict=True))
    assert "b" not in scores and "h" not in scores
    assert scores["a"] == pytest.approx(0.72)
    assert scores["c"] == pytest.approx(0.50)
    assert scores["d"] == pytest.approx(0.40)
    assert scores["e"] == pytest.approx(0.40)
    assert slate.item_ids == ["a", "i", "c", "k", "d", "e", "j", "f", "g"]  # by demoted score, ties by input order
    assert slate.item_labels == {"a": ("Mature",), "e": ("Mature",), "k": ("News",)}
    by_id = {d.item_id: d for d in slate.decisions}
    assert len(slate.decisions) == len(ROWS)
    assert by_id["b"].action == "drop" and by_id["b"].rule_ids == ("spam-drop",) and by_id["b"].rank_after == -1
    assert by_id["h"].action == "cap" and by_id["h"].rule_ids == ("creator-cap",)
    assert by_id["c"].action == "allow" and by_id["c"].rule_ids == ("verified-allow",)
    assert by_id["e"].action == "demote" and by_id["e"].rule_ids == ("toxic-demote", "mature-demote", "mature-label")
    assert by_id["i"].action == "allow" and by_id["i"].shadow_rule_ids == ("strict-spam-shadow",)
    assert by_id["a"].rank_before == 0 and by_id["a"].rank_after == 0
    assert by_id["a"].score_before == 0.9 and by_id["a"].score_after == pytest.approx(0.72)
    assert by_id["j"].action == "allow" and by_id["j"].rule_ids == ()
    assert {d.bundle_hash for d in slate.decisions} == {test_bundle.hash}
    assert {d.bundle_version for d in slate.decisions} == {"1"}

    teen = Guard(test_bundle, store).apply(TEEN, cands)
    assert "a" not in teen.item_ids
    assert {d.item_id: d.rule_ids for d in teen.decisions}["a"] == ("teen-mature-drop",)


def test_per_surface_rule_sets(test_bundle):
    store, cands = hand_batch()
    g = Guard(test_bundle, store)
    strict = g.apply({**ADULT, "surface": "search_strict"}, cands)
    # no verified-allow there, and the strict spam rule drops i (0.6) and c (0.1 < 0.3 stays)
    assert "i" not in strict.item_ids and "c" in strict.item_ids
    assert {d.item_id: d.rule_ids for d in strict.decisions}["i"] == ("search-strict-spam",)
    with pytest.raises(BadInput, match="unknown surface 'home'"):
        g.apply({**ADULT, "surface": "home"}, cands)


def test_rollout_is_stable_and_about_the_share(test_bundle):
    store = InMemoryLabelStore()
    store.put(["x"], {"mature": [0.0], "spam": [0.0], "toxic": [0.97]}, "v")
    g = Guard(test_bundle, store)
    acted = 0
    for k in range(400):
        req = {"surface": "for_you", "user": {"id": f"user-{k}", "age": 30}, "deadline_ms": 60_000}
        batch = {"id": ["x"], "score": [0.5], "verified": [False], "creator": ["c"], "topic": ["film"]}
        s1, s2 = g.apply(req, batch), g.apply(req, batch)
        assert s1.item_ids == s2.item_ids  # the same subject always gets the same answer
        d = s1.decisions[0]
        if "x" not in s1.item_ids:
            acted += 1
            assert d.rule_ids == ("toxic-demote", "toxic-drop-rollout")
        else:
            assert "toxic-drop-rollout" in d.shadow_rule_ids  # recorded for the holdback
    assert acted < 400
    assert 150 <= acted <= 250


def test_fail_closed_surface_drops_unlabeled_and_missing(test_bundle):
    store = InMemoryLabelStore()
    store.put(["full", "partial"], {"mature": [0.1, 0.1], "spam": [0.1, np.nan], "toxic": [0.1, 0.1]}, "v")
    cands = {"id": ["full", "partial", "unknown"], "score": [0.3, 0.2, 0.1], "creator": ["a", "b", "c"], "topic": ["film"] * 3,
             "verified": [False] * 3}
    slate = Guard(test_bundle, store).apply(ADULT, cands)
    assert slate.item_ids == ["full"]
    d = {x.item_id: x for x in slate.decisions}
    assert d["unknown"].rule_ids == ("guard:unlabeled",) and d["unknown"].action == "drop"
    assert d["partial"].rule_ids == ("spam-drop",)
    assert d["partial"].reasons[0].startswith("fail-closed")
    # a fail-open surface lets rules decide: the unknown item is still dropped by spam-drop's fail-closed
    opened = Guard(test_bundle, store, config=GuardConfig(surface_modes={"for_you": "fail_open"})).apply(ADULT, cands)
    assert opened.item_ids == ["full"]
    assert {x.item_id: x.rule_ids for x in opened.decisions}["unknown"] == ("spam-drop",)


def test_labels_given_with_the_candidates_are_refused_unless_the_caller_is_trusted(test_bundle):
    """Labels come from the label store: a request may not bring its own (they would override
    the store's); a trusted in-process caller may, by configuration."""
    g = Guard(test_bundle, None)
    with pytest.raises(BadInput, match=r"candidates\[1\]: 'labels' is not accepted: labels come from the label store"):
        g.apply(ADULT, [{"id": "a", "score": 1.0}, {"id": "b", "score": 0.5, "labels": {"spam": 0.0}}])
    with pytest.raises(BadInput, match=r"column 'labels.spam' is not accepted"):
        g.apply(ADULT, {"id": ["a"], "score": [1.0], "labels.spam": [0.0]})


def test_no_store_and_caller_supplied_labels(test_bundle):
    g = Guard(test_bundle, None, config=GuardConfig(caller_labels=True))
    records = [
        {"id": "ok", "score": 0.5, "creator": "a", "topic": "film", "verified": False, "labels": {"mature": 0.1, "spam": 0.1, "toxic": 0.1}},
        {"id": "nolabels", "score": 0.9, "creator": "b", "topic": "film"},
    ]
    slate = g.apply(ADULT, records)
    assert slate.item_ids == ["ok"]
    with pytest.raises(BadInput, match=r"candidates\[0\] \(id 'x'\): label 'spam' = 2.0 is outside"):
        g.apply(ADULT, [{"id": "x", "score": 1.0, "labels": {"spam": 2.0}}])


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ("not a batch", "must be columns"),
        ([{"id": "a", "score": 1.0}, "junk"], r"candidates\[1\]: must be an object"),
        ([{"id": "a"}], r"candidates\[0\]: missing 'score'"),
        ([{"id": "a", "score": "high"}], r"candidates\[0\] \(id 'a'\): 'score' must be a number"),
        ([{"id": 7, "score": 1.0}], r"candidates\[0\]: 'id' must be a non-empty string"),
        ({"id": ["a", "b", "a"], "score": [1.0, 2.0, 3.0]}, r"candidates\[2\]: duplicate id 'a' \(first at position 0\)"),
        ({"id": ["a", "b"], "score": [1.0, float("nan")]}, r"candidates\[1\] \(id 'b'\): 'score' must be a finite number"),
        ({"id": ["a", "b"], "score": [1.0, float("inf")]}, "finite"),
        # JSON numbers take a C-level path; a bool or a null among them is still named
        ({"id": ["a", "b", "c"], "score": [1, 0.5, True]}, r"candidates\[2\] \(id 'c'\): 'score' must be a number, got True"),
        ({"id": ["a", "b"], "score": [1, None]}, r"candidates\[1\] \(id 'b'\): 'score' must be a number, got None"),
        ({"id": ["a", "b"], "score": [1.0]}, "column 'score' has 1 values but 'id' has 2"),
        ({"score": [1.0]}, "no 'id' column"),
        ({"id": ["a"], "score": [1.0], "creator": "c1"}, "column 'creator' must be a list"),
    ],
)
def test_bad_candidates_are_clear_errors(test_bundle, candidates, message):
    store, _ = hand_batch()
    with pytest.raises(BadInput, match=message):
        Guard(test_bundle, store).apply(ADULT, candidates)


def test_bad_requests_and_empty_batch(test_bundle):
    g = Guard(test_bundle, InMemoryLabelStore())
    with pytest.raises(BadInput, match="'surface' must name a surface"):
        g.apply({"user": {"id": "u"}}, [])
    with pytest.raises(BadInput, match="deadline_ms"):
        g.apply({**ADULT, "deadline_ms": -1}, [])
    with pytest.raises(BadInput, match="request must be an object"):
        g.apply(["for_you"], [])
    for empty in ([], {"id": [], "score": []}):
        slate = g.apply(ADULT, empty)
        assert slate.item_ids == [] and slate.decisions == () and slate.to_dict()["items"] == []


def test_the_slate_as_json_carries_each_served_items_labels(feed_bundle):
    from assay.guard.bench import USERS, candidate_batch, catalog

    ids, store, meta = catalog(2_000)
    slate = Guard(feed_bundle, store).apply({"surface": "for_you", "user": USERS[1]},
                                            candidate_batch(ids, meta, 300, np.random.default_rng(4)))
    assert slate.item_labels, "the sample must have labelled items"
    items = slate.to_dict()["items"]
    assert [it["id"] for it in items] == slate.item_ids
    assert {it["id"]: tuple(it["labels"]) for it in items if "labels" in it} == dict(slate.item_labels)
    assert all(it["labels"] for it in items if "labels" in it)


def test_json_numbers_as_scores(test_bundle):
    store, cands = hand_batch()
    g = Guard(test_bundle, store)
    as_floats = g.apply(ADULT, cands)
    mixed = dict(cands, score=[int(x) if x == 1.0 else x for x in cands["score"]])  # 1 and 0.9 as JSON gives them
    assert type(mixed["score"][4]) is int
    slate = g.apply(ADULT, mixed)
    assert slate.item_ids == as_floats.item_ids and slate.scores.dtype == np.float64
    np.testing.assert_array_equal(slate.scores, as_floats.scores)


def test_object_columns_typed_in_c_or_left_to_the_policy(feed_bundle):
    """JSON columns of one type are typed by the policy batch in C passes; a null, a mixed column
    or a string with a NUL is decided per value, as the reference does."""
    def obj(values):
        col = np.empty(len(values), dtype=object)
        col[:] = values
        return col

    n = 6
    ids = [f"i{k}" for k in range(n)]
    store = InMemoryLabelStore()
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store.put(ids, {name: np.zeros(n) for name in names}, "v")
    g = Guard(feed_bundle, store)
    req = {"surface": "for_you", "deadline_ms": 60_000, "user": {"id": "a", "age": 40, "region": "US", "country": "US"}}
    for source, age in ((["ugc:x", "catalog", "ugc:y", "news", "c", "d"], [1, 2, 3, 40, 5, 6]),
                        (["ugc:x", None, "ugc:\x00", "news", "c", "d"], [1, None, 3, 2**70, "5", 6.5])):
        cands = {"id": ids, "score": np.linspace(1, 0.1, n), "source": obj(source), "topic": obj(["news"] * n),
                 "age_days": obj(age), "region_blocklist": [[] for _ in ids], "tags": [[] for _ in ids]}
        fast, ref = g.apply(req, cands), g.apply(req, cands, evaluator="reference")
        assert fast.item_ids == ref.item_ids
        assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions]


def test_json_arrays_of_one_type_decide_like_the_reference(feed_bundle):
    """A JSON array of all floats, ints or bools becomes a typed column as it is read; whatever
    attribute type it feeds (an int column for an int attribute, floats or bools where ints are
    declared, ints beyond int64), the decisions equal the reference evaluator's."""
    from assay.guard.candidates import _from_list

    assert _from_list([1.5, 2.0]).dtype == np.float64 and _from_list([1, 2]).dtype == np.int64
    assert _from_list([True, False]).dtype == np.bool_ and _from_list([2**70, 1]).dtype == object
    assert _from_list([1, 2.5]).dtype == object and _from_list(["a", None]).dtype == object
    n = 5
    ids = [f"i{k}" for k in range(n)]
    store = InMemoryLabelStore()
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store.put(ids, {name: np.linspace(0, 1, n) for name in names}, "v")
    g = Guard(feed_bundle, store)
    req = {"surface": "for_you", "deadline_ms": 60_000, "user": {"id": "a", "age": 40, "region": "US", "country": "US"}}
    for age in ([1, 9, 3, 40, 8], [1.0, 9.0, 3.5, 40.0, 8.0], [True, False, True, True, False], [2**70, 9, 1, 2, 3]):
        for score in ([0.9, 0.8, 0.7, 0.6, 0.01], [9, 8, 7, 6, 1]):
            cands = {"id": ids, "score": score, "source": ["ugc:x", "catalog", "ugc:y", "news:wire", "c"],
                     "topic": ["news"] * n, "age_days": age, "region_blocklist": [[] for _ in ids], "tags": [[] for _ in ids]}
            fast, ref = g.apply(req, cands), g.apply(req, cands, evaluator="reference")
            assert fast.item_ids == ref.item_ids, (age, score)
            assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions], (age, score)


def test_columns_records_and_arrow_give_the_same_slate(test_bundle):
    store, cands = hand_batch()
    g = Guard(test_bundle, store)
    records = [dict(zip(cands, vals, strict=True)) for vals in zip(*[list(v) for v in cands.values()], strict=True)]
    table = pa.table({k: (list(v) if not isinstance(v, np.ndarray) else v) for k, v in cands.items()})
    slates = [g.apply(ADULT, c) for c in (cands, records, table)]
    assert slates[0].item_ids == slates[1].item_ids == slates[2].item_ids
    np.testing.assert_allclose(slates[0].scores, slates[2].scores)


def test_compiled_and_reference_give_identical_slates(feed_bundle):
    rng = np.random.default_rng(7)
    n = 150
    ids = [f"i{k}" for k in range(n)]
    store = InMemoryLabelStore()
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store.put(ids, {name: rng.beta(0.5, 3, n) for name in names}, "v")
    cands = {
        "id": ids, "score": rng.random(n), "source": list(rng.choice(["catalog", "ugc:x", "ads:y"], n)),
        "creator": [f"c{k}" for k in rng.integers(0, 40, n)], "topic": list(rng.choice(["film", "news", "politics"], n)),
        "region_blocklist": [["DE"] if k % 9 == 0 else [] for k in range(n)], "tags": [["clickbait"] if k % 5 == 0 else [] for k in range(n)],
        "age_days": rng.integers(0, 20, n),
    }
    g = Guard(feed_bundle, store)
    for user in ({"id": "t", "age": 15, "region": "EU", "country": "DE", "sensitive_opt_out": True},
                 {"id": "a", "age": 40, "region": "US", "country": "US", "sensitive_opt_out": False}):
        req = {"surface": "for_you", "user": user, "deadline_ms": 60_000}
        fast, ref = g.apply(req, cands), g.apply(req, cands, evaluator="reference")
        assert fast.item_ids == ref.item_ids
        np.testing.assert_array_equal(fast.scores, ref.scores)
        assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions]


def _feed_guard_for_a_teen(feed_bundle, n: int):
    """Ids i0..i{n-1} with every feed label at 0, a guard on the feed bundle, a teen's request."""
    ids = [f"i{k}" for k in range(n)]
    store = InMemoryLabelStore()
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store.put(ids, {name: np.zeros(n) for name in names}, "v")
    teen = {"surface": "for_you", "deadline_ms": 60_000,
            "user": {"id": "t", "age": 15, "region": "EU", "country": "DE", "sensitive_opt_out": False}}
    return ids, Guard(feed_bundle, store), teen


def test_list_columns_the_fast_conversion_refuses_agree_with_the_reference(feed_bundle):
    """Rows of string lists go to the policy library as flat columns; rows that are not clean
    string lists (None, a bare string, a None or NUL element, a number) are left to the library's
    per-row path, so the compiled and the reference evaluator still decide every row alike."""
    from assay.policy.batch import string_lists

    odd = [["DE"], None, "DE", ["DE", None], ["D\x00E"], [7], ("DE",), [], ["GB", "DE"]]
    n = len(odd)
    ids, g, teen = _feed_guard_for_a_teen(feed_bundle, n)
    clean = [r for r in odd if r is None or (isinstance(r, (list, tuple)) and all(type(x) is str and "\x00" not in x for x in r))]
    for rows in (odd, clean):
        col = np.empty(len(rows), dtype=object)
        col[:] = rows
        converted = string_lists(col.tolist())
        assert (converted is None) == (rows is odd)
        cands = {"id": ids[: len(rows)], "score": np.linspace(1, 0.1, len(rows)), "region_blocklist": col,
                 "tags": [[] for _ in rows], "source": ["catalog"] * len(rows), "topic": ["film"] * len(rows),
                 "age_days": np.zeros(len(rows), dtype=np.int64)}
        fast, ref = g.apply(teen, cands), g.apply(teen, cands, evaluator="reference")
        assert fast.item_ids == ref.item_ids
        assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions]
    lists, nulls = string_lists(col.tolist())
    assert lists.offsets.tolist() == [0, 1, 1, 2, 2, 4] and lists.flat.tolist() == ["DE", "DE", "GB", "DE"]
    assert nulls.tolist() == [False, True, False, False, False]
    # geo-block: "DE" in the row drops it; a missing row fails closed; an empty row is served
    by_id = {d.item_id: d for d in fast.decisions}
    assert by_id["i0"].rule_ids == ("geo-block",) and by_id["i3"].rank_after >= 0 and by_id["i4"].rule_ids == ("geo-block",)
    assert by_id["i1"].action == "drop" and "fail-closed" in by_id["i1"].reasons[0]


def test_arrow_list_columns_are_read_in_place_and_decide_like_python_rows(feed_bundle):
    """A list column given as an Arrow list array is not turned into Python rows: the guard hands
    its offsets and values to the rules. Null rows, null or NUL elements, a sliced array and a
    chunked one decide exactly as the same rows given as Python lists, and as the reference."""
    rows = [["DE"], None, [], ["GB", "DE"], ["DE", None], ["D\x00E"], ["GB"], ["US"], []]
    n = len(rows)
    ids, g, teen = _feed_guard_for_a_teen(feed_bundle, n)
    base = {"id": ids, "score": np.linspace(1, 0.1, n), "source": ["catalog"] * n, "topic": ["film"] * n,
            "creator": [f"c{k}" for k in range(n)], "age_days": np.zeros(n, dtype=np.int64)}
    tags = [["clickbait"] if k % 3 == 0 else [] for k in range(n)]
    as_rows = g.apply(teen, {**base, "region_blocklist": rows, "tags": tags})
    padded = pa.array([["x"], *rows], type=pa.list_(pa.string())).slice(1)  # offsets not starting at 0
    chunked = pa.chunked_array([pa.array(rows[:4], type=pa.list_(pa.string())), pa.array(rows[4:], type=pa.list_(pa.string()))])
    for blocklist in (pa.array(rows, type=pa.list_(pa.string())), padded, chunked):
        cands = {**base, "region_blocklist": blocklist, "tags": pa.array(tags, type=pa.large_list(pa.string()))}
        assert not isinstance(cand_mod.coerce(cands).columns["region_blocklist"], np.ndarray)  # kept as Arrow
        fast, ref = g.apply(teen, cands), g.apply(teen, cands, evaluator="reference")
        assert fast.item_ids == ref.item_ids == as_rows.item_ids
        np.testing.assert_array_equal(fast.scores, as_rows.scores)
        assert [d.rule_ids for d in fast.decisions] == [d.rule_ids for d in ref.decisions] == [d.rule_ids for d in as_rows.decisions]
    by_id = {d.item_id: d for d in as_rows.decisions}
    assert by_id["i0"].rule_ids == ("geo-block",) and by_id["i3"].rule_ids == ("geo-block",)
    assert by_id["i1"].action == "drop" and "fail-closed" in by_id["i1"].reasons[0]  # a null row fails closed
    assert by_id["i4"].action == "drop" and by_id["i5"].action == "drop"  # ill-typed rows: missing, fail closed
    assert by_id["i6"].rank_after >= 0 and by_id["i2"].rank_after >= 0
    with pytest.raises(BadInput, match="'region_blocklist' has 3 values but 'id' has 9"):
        g.apply(teen, {**base, "region_blocklist": pa.array(rows[:3], type=pa.list_(pa.string())), "tags": tags})


def test_a_cap_keyed_by_a_list_column_groups_equal_lists(test_bundle):
    ids = [f"k{i}" for i in range(5)]
    store = InMemoryLabelStore()
    store.put(ids, {name: [0.0] * 5 for name in LABELS}, "v")
    groups = [["a", "b"], ["a", "b"], ["a", "b"], ["a"], None]
    for creators in (groups, pa.array(groups, type=pa.list_(pa.string()))):
        slate = Guard(test_bundle, store).apply(ADULT, {"id": ids, "score": [0.9, 0.8, 0.7, 0.6, 0.5], "creator": creators,
                                                        "topic": ["film"] * 5, "verified": [False] * 5})
        assert slate.item_ids == ["k0", "k1", "k3", "k4"]  # the third ["a", "b"] is capped


def test_agrees_with_the_independent_reference_guard(feed_bundle):
    """The guard's slate (C rule programs, C resolution, column caps) equals the reference guard's
    (docs only: one candidate at a time, the CEL library), candidate by candidate, for a teen on a
    fail-open surface with labels missing at random and a rollout-free bundle."""
    from assay.guard.oracle import ReferenceGuard

    rng = np.random.default_rng(11)
    n = 200
    ids = [f"i{k}" for k in range(n)]
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    labels = {name: np.where(rng.random(n) < 0.05, np.nan, rng.beta(0.5, 2, n)) for name in names}
    store = InMemoryLabelStore()
    store.put(ids, labels, "v")
    cands = {"id": ids, "score": rng.random(n), "source": ["catalog"] * n, "creator": [f"c{k % 40}" for k in range(n)],
             "topic": rng.choice(["film", "news", "health"], n).tolist(), "region_blocklist": [[] for _ in range(n)],
             "tags": [["clickbait"] if k % 7 == 0 else [] for k in range(n)], "age_days": np.ones(n, dtype=np.int64)}
    g = Guard(feed_bundle, store, config=GuardConfig(default_mode="fail_open"))
    req = {"surface": "for_you", "user": {"id": "u", "age": 16, "region": "EU", "country": "FR", "sensitive_opt_out": False},
           "deadline_ms": 60_000}
    slate = g.apply(req, cands)
    records = [{key: (v[k].item() if isinstance(v[k], np.generic) else v[k]) for key, v in cands.items()} for k in range(n)]
    stored = {i: {name: float(labels[name][k]) for name in names if not np.isnan(labels[name][k])} for k, i in enumerate(ids)}
    ref = ReferenceGuard(feed_bundle, default_mode="fail_open").decide("for_you", req, records, stored)
    assert slate.item_ids == ref.item_ids and slate.scores.tolist() == ref.scores and dict(slate.item_labels) == ref.item_labels
    assert [(d.action, d.rule_ids, d.rank_after, d.shadow_rule_ids) for d in slate.decisions] == \
        [(c.action, c.rule_ids, c.rank, c.shadow_rule_ids) for c in ref.candidates]
    assert {d.action for d in slate.decisions} >= {"drop", "cap", "allow"}


def slate_candidates(cands):
    from assay.guard.candidates import coerce

    return coerce(cands)


def labels_of(store, ids, surface):
    got = store.get(ids, surface.label_names)
    return got.values, got.present


class ShapeShiftingStore:
    """A (buggy) third-party label backend: answers with the wrong number of items."""

    def get(self, item_ids, label_names, *, timeout_s=None):
        from assay.store.labels import LabelBatch

        return LabelBatch(("only-one",), {n: np.ones(1) for n in label_names}, {n: np.ones(1, bool) for n in label_names},
                          np.array([""], dtype=object), np.array([0.0]))


class ExplodingStore:
    def get(self, item_ids, label_names, *, timeout_s=None):
        raise RuntimeError("segfault in the labeler client")


@pytest.mark.parametrize("store", [ShapeShiftingStore(), ExplodingStore()])
def test_garbage_or_crashing_store_fails_closed_without_raising(test_bundle, store):
    g = Guard(test_bundle, store)
    slate = g.apply(ADULT, make_candidates(30))
    assert slate.item_ids == [] and slate.dropped == 30
    assert all(d.rule_ids == ("guard:unlabeled",) for d in slate.decisions)
    assert g.counters["label_store_errors"] == 1


class RetypingStore:
    """A third-party backend answering the right labels in other forms: lists of numbers, float32,
    0/1 masks (also beside float64 values), or (for ``bad_shape``) one column per item instead of one value."""

    def __init__(self, inner, bad_shape=False):
        self.inner, self.bad_shape = inner, bad_shape

    def get(self, item_ids, label_names, *, timeout_s=None):
        from assay.store.labels import LabelBatch

        got = self.inner.get(item_ids, label_names)
        if self.bad_shape:
            values = {k: v[:, None] for k, v in got.values.items()}
        else:
            values = {k: (v, v.tolist(), v.astype(np.float32))[i % 3] for i, (k, v) in enumerate(got.values.items())}
        present = {k: p.astype(np.uint8) for k, p in got.present.items()}
        return LabelBatch(got.item_ids, values, present, got.versions, got.freshness)


def test_a_store_answering_other_types_is_converted_and_a_wrong_shape_fails_closed(test_bundle):
    store, cands = hand_batch()
    direct = Guard(test_bundle, store).apply(ADULT, cands)
    g = Guard(test_bundle, RetypingStore(store))
    converted = g.apply(ADULT, cands)
    assert converted.item_ids == direct.item_ids and g.counters["label_store_errors"] == 0
    np.testing.assert_allclose(converted.scores, direct.scores, rtol=1e-6)
    g = Guard(test_bundle, RetypingStore(store, bad_shape=True))
    failed = g.apply(ADULT, cands)
    assert failed.item_ids == [] and g.counters["label_store_errors"] == 1


@pytest.mark.redis
def test_redis_store_down_slow_and_over_budget(test_bundle, fault_proxy):
    cands = make_candidates(40)
    store = RedisLabelStore(fault_proxy.url, prefix="g:labels", timeout_s=0.1)
    store.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    g = Guard(test_bundle, store)
    healthy = g.apply(ADULT, cands)
    assert len(healthy) > 0
    fault_proxy.set_mode("down")
    down = g.apply(ADULT, cands)
    assert down.item_ids == [] and g.counters["label_store_errors"] == 1
    fault_proxy.set_mode("slow", delay_s=0.5)
    slow = g.apply(ADULT, cands)
    assert slow.item_ids == [] and g.counters["label_store_timeouts"] == 1
    # a store that answers within its own timeout but after the request's deadline: fail closed
    fault_proxy.set_mode("slow", delay_s=0.03)
    before = g.counters["budget_exhausted"]
    late = g.apply({**ADULT, "deadline_ms": 10}, cands)
    assert late.item_ids == [] and g.counters["budget_exhausted"] == before + 1
    assert {d.rule_ids for d in late.decisions} <= {("guard:deadline",), ("guard:unlabeled",)}
    fault_proxy.set_mode("up")
    # the store comes back (on a loaded machine a read may still time out once: then it fails closed)
    recovered = [g.apply(ADULT, cands).item_ids for _ in range(5)]
    assert healthy.item_ids in recovered
    assert all(r in ([], healthy.item_ids) for r in recovered)


def test_bundle_swap_mid_traffic_never_mixes_versions(tmp_path, test_bundle):
    from assay.policy import load_bundle

    strict_text = GUARD_TEST_BUNDLE.replace('version: "1"', 'version: "2"').replace("item.labels.spam >= 0.9", "item.labels.spam >= 0.3")
    (tmp_path / "v2.yaml").write_text(strict_text)
    v1, v2 = test_bundle, load_bundle(tmp_path / "v2.yaml")
    cands = make_candidates(300, seed=5)
    store = InMemoryLabelStore()
    labels = make_labels(cands["id"], seed=5)
    store.put(list(cands["id"]), labels, "v")
    expected = {}
    for version, bundle in (("1", v1), ("2", v2)):
        alone = Guard(bundle, store)
        for k in range(3):
            req = {"surface": "for_you", "user": {"id": f"u{k}", "age": 30}, "deadline_ms": 60_000}
            expected[(version, f"u{k}")] = alone.apply(req, cands).item_ids
    assert expected[("1", "u0")] != expected[("2", "u0")]
    g = Guard(v1, store)
    stop = threading.Event()
    slates: list = []
    errors: list = []

    def traffic(k: int) -> None:
        try:
            while not stop.is_set():
                # a generous deadline: under CPU contention a tight one would (correctly) fail closed
                slates.append(g.apply({"surface": "for_you", "user": {"id": f"u{k}", "age": 30}, "deadline_ms": 60_000}, cands))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=traffic, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for k in range(40):
        g.swap(v2 if k % 2 == 0 else v1)
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    versions = {s.bundle_version for s in slates}
    assert versions == {"1", "2"}, versions
    for s in slates:
        assert {d.bundle_version for d in s.decisions} == {s.bundle_version}
        assert {d.bundle_hash for d in s.decisions} == {v1.hash if s.bundle_version == "1" else v2.hash}
        # the slate is exactly what that version alone decides for that subject
        assert s.item_ids == expected[(s.bundle_version, s.subject_id)]


def test_labels_in_slate_are_only_for_served_items(test_bundle):
    store = InMemoryLabelStore()
    ids = [f"m{k}" for k in range(5)]
    store.put(ids, {name: [0.6] * 5 if name == "mature" else [0.0] * 5 for name in LABELS}, "v")
    slate = Guard(test_bundle, store).apply(ADULT, {"id": ids, "score": [0.5] * 5, "creator": ["same"] * 5, "topic": ["film"] * 5, "verified": [False] * 5})
    assert len(slate) == 2  # creator cap
    assert set(slate.item_labels) == set(slate.item_ids)


@pytest.mark.parametrize("creators", [
    ["a", "a", "a", None, None, float("nan"), "b"],  # None and NaN: absent, one group
    np.array([1.0, 1.0, 1.0, np.nan, np.nan, np.nan, 2.0]),  # a numeric key with NaN
    np.array(["a", "a", "a", "z", "z", "z", "b"]),  # fixed-width strings
])
def test_cap_groups_by_key_value_and_absent_values_are_one_group(test_bundle, creators):
    ids = [f"k{i}" for i in range(7)]
    store = InMemoryLabelStore()
    store.put(ids, {name: [0.0] * 7 for name in LABELS}, "v")
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]
    slate = Guard(test_bundle, store).apply(ADULT, {"id": ids, "score": scores, "creator": creators, "topic": ["film"] * 7,
                                                    "verified": [False] * 7})
    # per group the best two stay: k2 (third "a") and k5 (third absent) are capped
    assert slate.item_ids == ["k0", "k1", "k3", "k4", "k6"]
    capped = {d.item_id for d in slate.decisions if d.action == "cap"}
    assert capped == {"k2", "k5"}


def test_fixed_width_cap_keys_are_grouped_exactly():
    """The one cap grouping (C, by exact bytes) and the general by-value grouping agree on
    strings that share prefixes, the empty string and a repeat."""
    from assay.policy import slate as core

    values = np.array(["b", "a", "b", "ab", "a", "b", "", "ba", ""])
    expected = [0, 0, 1, 0, 1, 2, 0, 0, 1]
    assert core.group_ordinals(values).tolist() == expected
    assert core.cap_ordinals(values, np.arange(len(values))).tolist() == expected


def test_trace_table_matches_the_decision_records_row_for_row(test_bundle):
    """Slate.to_arrow (what the trace sink writes) builds its columns in Arrow; every row equals
    the Decision record built the slow way, with and without fail-closed reasons."""
    from guard_helpers import make_candidates as many

    cands = many(60, seed=5)
    store = InMemoryLabelStore()
    labels = make_labels(cands["id"], seed=5)
    labels["spam"][:10] = np.nan  # missing on a fail-closed rule: a reason of its own
    store.put(list(cands["id"][:50]), {k: v[:50] for k, v in labels.items()}, "v")  # ten unlabeled
    clean = InMemoryLabelStore()
    clean.put(list(cands["id"]), make_labels(cands["id"], seed=6), "v")
    g, g_clean = Guard(test_bundle, store), Guard(test_bundle, clean)
    for k, req in enumerate((ADULT, {**TEEN, "model_version": "ranker-7"}, {**ADULT, "model_version": "a"}, ADULT)):
        slate = (g if k < 3 else g_clean).apply(req, cands)
        table = slate.to_arrow()
        assert table.schema.field("model_versions").type == pa.list_(pa.string())
        rows = table.to_pylist()
        records = [d.to_dict() for d in slate.decisions]
        assert len(rows) == len(records) == 60
        for row, rec in zip(rows, records, strict=True):
            rec = {k: (list(v) if isinstance(v, tuple) else v) for k, v in rec.items()}
            assert {k: v for k, v in row.items() if k != "attribution"} == {k: rec[k] for k in row if k != "attribution"}
        if k < 3:
            assert any("fail-closed" in r for row in rows for r in row["reasons"])
            assert any(row["rule_ids"] == ["guard:unlabeled"] for row in rows)
        else:  # nothing fails closed: names and reasons are gathered by Arrow
            assert not any("fail-closed" in r for row in rows for r in row["reasons"])
            assert any(row["rule_ids"] for row in rows) and any(row["shadow_rule_ids"] for row in rows)


def test_nan_in_a_feature_column_is_a_value_and_an_arrow_null_is_absent(feed_bundle):
    """Missing values are explicit, never NaN: NaN in a float column is a double with IEEE
    semantics (every comparison with it false), whatever form the column takes; a null in an
    Arrow column is an absent value (fail-closed where a rule needs it)."""
    import pyarrow as pa

    ids = ["a", "b", "c"]
    store = InMemoryLabelStore()
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    store.put(ids, {name: np.zeros(3) for name in names}, "v")
    g = Guard(feed_bundle, store)
    # a deadline no loaded machine reaches: this test is about values, not the budget (at 50 ms a
    # slow moment emptied one of the two slates)
    req = {"surface": "for_you", "user": {"id": "u", "age": 30, "region": "US", "country": "US", "sensitive_opt_out": False},
           "deadline_ms": 60_000}
    base = {"id": ids, "score": [0.3, 0.2, 0.1], "source": ["catalog"] * 3, "topic": ["film"] * 3, "creator": ["x", "y", "z"],
            "region_blocklist": [[], [], []], "tags": [[], [], []]}
    # item.score is read by the bundle's "low-score" style rules only through scores (finite); age_days is an int
    for ages in (np.array([1, 2, 3]), [1, 2, 3], pa.array([1, None, 3])):
        slate = g.apply(req, {**base, "age_days": ages})
        ref = g.apply(req, {**base, "age_days": ages}, evaluator="reference")
        assert slate.item_ids == ref.item_ids
        assert [d.rule_ids for d in slate.decisions] == [d.rule_ids for d in ref.decisions]
    surface = g.bundle.surface("for_you")
    cands = cand_mod.coerce({**base, "age_days": pa.array([1, None, 3])})
    values, present, *_ = g._read_labels(surface, cands, time.perf_counter() + 60, True)
    batch = g._batch(surface, req, cands, values, present)
    col = batch.column("item.age_days", feed_bundle.attributes["rules"]["item.age_days"])
    assert col.missing.tolist() == [False, True, False] and col.data.dtype == np.int64
    nan_batch = cand_mod.coerce({**base, "age_days": np.array([1.0, np.nan, np.inf])})
    b = g._batch(surface, req, nan_batch, values, present)
    # a float column where an int is declared is ill-typed per value, NaN included: never "absent"
    assert b.missing_masks.get("item.age_days") is None


def test_labels_the_caller_gives_win_and_the_store_reads_only_the_rest(test_bundle):
    store, cands = hand_batch()
    asked = []

    class Recording:
        def get(self, item_ids, label_names, *, timeout_s=None):
            asked.append(tuple(label_names))
            return store.get(item_ids, label_names)

    g = Guard(test_bundle, Recording())
    surface = g.bundle.surface("for_you")
    given = np.linspace(0.0, 1.0, len(cands["id"]))
    given[1] = np.nan  # NaN: not present
    c = cand_mod.coerce({**cands, "labels.mature": given})
    values, present, kind, _, complete = g._read_labels(surface, c, time.perf_counter() + 60, True)
    assert kind == "drop_rate" and not complete and asked == [tuple(n for n in surface.label_names if n != "mature")]
    np.testing.assert_array_equal(values["mature"], given)
    assert present["mature"].tolist() == [k != 1 for k in range(len(given))]
    np.testing.assert_array_equal(values["spam"], store.get(cands["id"], ["spam"]).values["spam"])
    asked.clear()
    g._read_labels(surface, cand_mod.coerce(cands), time.perf_counter() + 60, True)
    assert asked == [tuple(surface.label_names)]


def test_open_source_and_creator_breakers_agree_with_the_reference_guard(feed_bundle):
    """Candidates of an open source or creator leave before any rule (taking no cap slot), as the
    reference guard written from the docs decides it."""
    from assay.guard import BreakerConfig, BreakerRegistry, Fallback, ScopePolicy
    from assay.guard.oracle import ReferenceGuard

    rng = np.random.default_rng(12)
    n = 120
    ids = [f"i{k}" for k in range(n)]
    names = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    labels = {name: rng.beta(0.5, 4, n) for name in names}
    store = InMemoryLabelStore()
    store.put(ids, labels, "v")
    cands = {"id": ids, "score": rng.random(n), "source": rng.choice(["catalog", "ugc:x", "news:y"], n).tolist(),
             "creator": [f"c{k % 9}" for k in range(n)], "topic": rng.choice(["film", "news"], n).tolist(),
             "region_blocklist": [[] for _ in range(n)], "tags": [[] for _ in range(n)], "age_days": np.ones(n, dtype=np.int64)}
    reg = BreakerRegistry({"source": ScopePolicy(BreakerConfig(), Fallback("drop")), "creator": ScopePolicy(BreakerConfig(), Fallback("drop"))})
    g = Guard(feed_bundle, store, breakers=reg)
    reg.get("source:ugc:x").force_open("test")
    reg.get("creator:c3").force_open("test")
    req = {"surface": "for_you", "user": {"id": "u", "age": 30, "region": "US", "country": "US", "sensitive_opt_out": False}}
    slate = g.apply(req, cands)
    records = [{key: (v[k].item() if isinstance(v[k], np.generic) else v[k]) for key, v in cands.items()} for k in range(n)]
    stored = {i: {name: float(labels[name][k]) for name in names} for k, i in enumerate(ids)}
    ref = ReferenceGuard(feed_bundle).decide("for_you", req, records, stored, open_scopes={"source:ugc:x", "creator:c3"})
    assert slate.item_ids == ref.item_ids and slate.scores.tolist() == ref.scores
    assert [(d.action, d.rule_ids, d.rank_after) for d in slate.decisions] == [(c.action, c.rule_ids, c.rank) for c in ref.candidates]
    assert {d.rule_ids for d in slate.decisions} >= {("breaker:source:ugc:x",), ("breaker:creator:c3",)}
