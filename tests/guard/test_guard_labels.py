"""Label stores: the in-memory columnar store (Parquet) and Redis (the machine's real server)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from assay.errors import BadInput
from assay.store.labels import InMemoryLabelStore, LabelStoreError, RedisLabelStore


def test_in_memory_put_get_and_missing():
    store = InMemoryLabelStore(clock=lambda: 100.0)
    store.put(["a", "b", "c"], {"mature": [0.1, 0.9, math.nan], "spam": [0.0, 0.5, 1.0]}, "clf-1")
    got = store.get(["c", "zzz", "a", "b"], ["mature", "spam", "nope"])
    assert got.item_ids == ("c", "zzz", "a", "b")
    np.testing.assert_array_equal(got.present["mature"], [False, False, True, True])
    np.testing.assert_allclose(got.values["mature"][2:], [0.1, 0.9])
    assert math.isnan(got.values["mature"][0]) and math.isnan(got.values["mature"][1])
    np.testing.assert_array_equal(got.present["spam"], [True, False, True, True])
    assert not got.present["nope"].any()
    assert list(got.versions) == ["clf-1", "", "clf-1", "clf-1"]
    assert got.freshness[0] == 100.0 and math.isnan(got.freshness[1])
    np.testing.assert_array_equal(got.any_present(), [True, False, True, True])
    # an update rewrites one item and keeps the others
    store.put(["b"], {"mature": [0.2]}, "clf-2")
    got = store.get(["a", "b"], ["mature", "spam"])
    np.testing.assert_allclose(got.values["mature"], [0.1, 0.2])
    assert list(got.versions) == ["clf-1", "clf-2"]
    assert got.values["spam"][1] == 0.5


def test_in_memory_stale_labels_are_not_present():
    now = [1000.0]
    store = InMemoryLabelStore(max_age_s=60, clock=lambda: now[0])
    store.put(["old"], {"mature": [0.5]}, "v", labeled_at=900.0)
    store.put(["new"], {"mature": [0.5]}, "v", labeled_at=990.0)
    got = store.get(["old", "new"], ["mature"])
    np.testing.assert_array_equal(got.present["mature"], [False, True])
    assert got.stale == 1


@pytest.mark.parametrize(
    ("ids", "labels", "message"),
    [
        (["a", "a"], {"m": [0.1, 0.2]}, "duplicate"),
        (["a", ""], {"m": [0.1, 0.2]}, "position 1"),
        (["a"], {"m": [1.5]}, r"outside \[0, 1\]"),
        (["a"], {"m": [0.1, 0.2]}, "2 scores for 1 items"),
        (["a"], {"item_id": [0.1]}, "identifier"),
        (["a"], {"m": ["high"]}, "must be numbers"),
    ],
)
def test_bad_writes_are_rejected_whole(ids, labels, message):
    store = InMemoryLabelStore()
    store.put(["keep"], {"m": [0.3]}, "v")
    with pytest.raises(BadInput, match=message):
        store.put(ids, labels, "v")
    assert len(store) == 1  # nothing half-applied
    with pytest.raises(BadInput, match="version"):
        store.put(["x"], {"m": [0.1]}, "")


def test_parquet_round_trip_and_bad_files(tmp_path):
    store = InMemoryLabelStore(clock=lambda: 50.0)
    store.put([f"i{k}" for k in range(5)], {"mature": [0.0, 0.25, 0.5, math.nan, 1.0]}, "clf-7")
    path = store.to_parquet(tmp_path / "labels.parquet")
    loaded = InMemoryLabelStore.from_parquet(path)
    got = loaded.get(["i3", "i4", "i9"], ["mature"])
    np.testing.assert_array_equal(got.present["mature"], [False, True, False])
    assert got.values["mature"][1] == 1.0 and list(got.versions)[:2] == ["clf-7", "clf-7"]
    assert got.freshness[1] == 50.0

    pq.write_table(pa.table({"id": ["a"], "mature": [0.1]}), tmp_path / "noid.parquet")
    with pytest.raises(BadInput, match="no 'item_id' column"):
        InMemoryLabelStore.from_parquet(tmp_path / "noid.parquet")
    pq.write_table(pa.table({"item_id": ["a", "b"], "mature": [0.1, 7.0]}), tmp_path / "range.parquet")
    with pytest.raises(BadInput, match=r"row 1: label 'mature' = 7\.0 is outside"):
        InMemoryLabelStore.from_parquet(tmp_path / "range.parquet")
    pq.write_table(pa.table({"item_id": ["a"], "mature": ["x"]}), tmp_path / "type.parquet")
    with pytest.raises(BadInput, match="has type string"):
        InMemoryLabelStore.from_parquet(tmp_path / "type.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(BadInput, match="not a readable Parquet file"):
        InMemoryLabelStore.from_parquet(tmp_path / "junk.parquet")
    with pytest.raises(BadInput, match="does not exist"):
        InMemoryLabelStore.from_parquet(tmp_path / "missing.parquet")


@pytest.mark.redis
def test_redis_store_pipelined_reads_versions_freshness(redis_url):
    store = RedisLabelStore(redis_url, prefix="t:labels", clock=lambda: 500.0)
    ids = [f"it-{k}" for k in range(300)]
    rng = np.random.default_rng(3)
    mature = rng.random(300)
    store.put(ids, {"mature": mature, "spam": np.where(np.arange(300) % 3 == 0, np.nan, 0.5)}, "clf-3")
    got = store.get([*ids, "absent"], ["mature", "spam"])
    np.testing.assert_allclose(got.values["mature"][:300], mature)
    assert not got.present["mature"][300]
    np.testing.assert_array_equal(got.present["spam"][:300], np.arange(300) % 3 != 0)
    assert got.versions[0] == "clf-3" and got.freshness[0] == 500.0 and got.versions[300] == ""
    # one round trip: the whole batch is one pipeline, counted by the server as 301 HMGETs
    info_before = store.client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    store.get(ids, ["mature"])
    info_after = store.client.info("commandstats").get("cmdstat_hmget", {}).get("calls", 0)
    assert info_after - info_before == 300


@pytest.mark.redis
def test_redis_garbage_and_stale_are_not_present(redis_url):
    store = RedisLabelStore(redis_url, prefix="t:labels", max_age_s=10, clock=lambda: 1000.0)
    store.client.hset("t:labels:g1", mapping={"mature": "very", "spam": "0.2", "_v": "x", "_ts": "995"})
    store.client.hset("t:labels:g2", mapping={"mature": "nan", "spam": "3.0", "_ts": "999"})
    store.client.hset("t:labels:old", mapping={"mature": "0.4", "_ts": "100"})
    got = store.get(["g1", "g2", "old"], ["mature", "spam"])
    np.testing.assert_array_equal(got.present["mature"], [False, False, False])
    np.testing.assert_array_equal(got.present["spam"], [True, False, False])
    assert got.garbage == 3  # "very", "nan", "3.0"
    assert got.stale == 1
    assert not got.complete
    store.client.hset("t:labels:ok", mapping={"mature": "0.1", "spam": "0.2", "_ts": "999"})
    assert store.get(["ok"], ["mature", "spam"]).complete
    assert store.get(["ok", "g1"], ["spam"]).complete  # g1's spam is a number and fresh
    assert not store.get(["ok", "g2"], ["spam"]).complete  # g2's spam is garbage
    assert not store.get(["ok", "nobody"], ["spam"]).complete  # an unknown item


@pytest.mark.redis
def test_redis_down_and_slow_raise_label_store_error(fault_proxy):
    store = RedisLabelStore(fault_proxy.url, prefix="t:labels", timeout_s=0.1)
    store.put(["a"], {"mature": [0.5]}, "v")
    assert store.get(["a"], ["mature"]).present["mature"][0]
    fault_proxy.set_mode("slow", delay_s=0.5)
    with pytest.raises(LabelStoreError) as slow:
        store.get(["a"], ["mature"])
    assert slow.value.timeout
    fault_proxy.set_mode("down")
    with pytest.raises(LabelStoreError, match="unavailable"):
        store.get(["a"], ["mature"])
    fault_proxy.set_mode("up")
    assert store.get(["a"], ["mature"]).values["mature"][0] == 0.5  # reconnects by itself
    store.close()


def _small_keys(monkeypatch, key):
    """Make every table key ``key(id)`` (the C lookup's key function is the id's str hash)."""
    from assay.store import labels as labels_mod

    monkeypatch.setattr(labels_mod, "_id_hash", key)


def test_in_memory_lookup_probes_past_long_collision_runs(monkeypatch):
    """Row keys that differ but share their top bits all start probing at the same slot: the
    lookup walks the run and still answers every id exactly."""
    # small, distinct keys for short ASCII ids (their code points): every key starts at slot 0
    _small_keys(monkeypatch, lambda item_id: int.from_bytes(item_id.encode(), "little"))
    ids = [f"{a}{b}" for a in "abcdefgh" for b in "0123456789"]
    store = InMemoryLabelStore()
    store.put(ids, {"m": np.linspace(0, 1, len(ids))}, "v")
    keys = store._table.id_keys()
    assert keys is not None
    assert len(np.unique(keys.slots[:, 0] >> np.uint64(keys.shift))) == 1
    queries = [*ids[::-1], "zz", "a", "h9x", "a0"]
    got = store.get(queries, ["m"])
    expected = [ids.index(q) if q in ids else -1 for q in queries]
    assert got.present["m"].tolist() == [e >= 0 for e in expected]
    np.testing.assert_array_equal(got.values["m"][got.present["m"]], np.linspace(0, 1, len(ids))[[e for e in expected if e >= 0]])


def test_in_memory_lookup_refuses_a_different_id_with_the_same_key(monkeypatch):
    _small_keys(monkeypatch, len)  # keys by length: "x" shares a key with a stored id
    stored = ["a", "bb", "ccc"]
    store = InMemoryLabelStore()
    store.put(stored, {"m": [0.1, 0.2, 0.3]}, "v")
    assert store._table.id_keys() is not None
    got = store.get(["x", "bb", "zzzz", stored[2], "a", "ab"], ["m"])
    assert got.present["m"].tolist() == [False, True, False, True, True, False]
    np.testing.assert_array_equal(got.values["m"][[1, 3, 4]], [0.2, 0.3, 0.1])


@pytest.mark.parametrize("collide", [False, True])
def test_in_memory_batch_lookup_is_exact(monkeypatch, collide):
    """The batch lookup of ids answers exactly what a dict (the oracle) would: absent, longer and
    shorter ids, non-ASCII, ids with NUL or of another type; and when stored ids share a key the
    store falls back to the dict."""
    import random

    if collide:
        _small_keys(monkeypatch, lambda item_id: 7)
    rng = random.Random(3)
    alphabet = "ab\u00e9\U0001F600"
    ids = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(2000)})
    store = InMemoryLabelStore()
    store.put(ids, {"m": np.linspace(0, 1, len(ids))}, "v")
    assert (store._table.id_keys() is None) == collide
    queries = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    queries += [ids[0] + "\x00", "a\x00b", ids[-1]]
    got = store.get(queries, ["m"])
    oracle = {item_id: row for row, item_id in enumerate(ids)}
    expected = [oracle.get(q, -1) for q in queries]
    np.testing.assert_array_equal(got.present["m"], [e >= 0 for e in expected])
    np.testing.assert_allclose(got.values["m"][got.present["m"]], np.linspace(0, 1, len(ids))[[e for e in expected if e >= 0]])
    assert not store.get([ids[0] + "\x00"], ["m"]).present["m"].any()
    assert store.get([7, ids[1]], ["m"]).present["m"].tolist() == [False, True]
    keys = store._table.id_keys()
    if keys is not None:  # the matrix the C lookup may prefetch rows of is a hint: the same rows
        np.testing.assert_array_equal(keys.rows_of(queries), keys.rows_of(queries, store._table.matrix()[0]))


def test_in_memory_read_says_when_every_label_is_present():
    """``complete`` lets the guard skip building masks; it must never be claimed when a value is
    absent, stale, unknown, or an item is missing."""
    now = [1000.0]
    store = InMemoryLabelStore(max_age_s=60, clock=lambda: now[0])
    store.put(["a", "b"], {"m": [0.1, 0.2], "t": [0.3, float("nan")]}, "v")
    assert store.get(["a"], ["m", "t"]).complete
    assert store.get(["a", "b"], ["m"]).complete
    assert not store.get(["a", "b"], ["m", "t"]).complete  # b has no t
    assert not store.get(["a", "zz"], ["m"]).complete  # an unknown item
    assert not store.get(["a"], ["m", "other"]).complete  # a label the store does not have
    now[0] += 120
    assert not store.get(["a"], ["m"]).complete  # stale


def _gather_oracle(store: InMemoryLabelStore, query: list, names: list[str], now: float) -> dict:
    """The test oracle for the C gather: what a read must answer, from the store's own columns
    one item at a time (a dict lookup per id, then each column's value)."""
    table = store._table
    rows = [table.index.get(q, -1) if isinstance(q, str) else -1 for q in query]
    fresh = np.array([table.freshness[r] if r >= 0 else np.nan for r in rows])
    found = np.array([r >= 0 for r in rows])
    age_ok = found & ((now - fresh) <= store.max_age_s) if store.max_age_s is not None else found
    values, present = {}, {}
    for name in names:
        column = table.values.get(name)
        got = np.array([column[r] if column is not None and r >= 0 else np.nan for r in rows])
        ok = ~np.isnan(got) & age_ok
        values[name], present[name] = np.where(ok, got, np.nan), ok
    return {"values": values, "present": present, "freshness": fresh,
            "versions": [table.versions[r] if r >= 0 else "" for r in rows],
            "stale": int((found & ~age_ok).sum()),
            "complete": bool(names) and all(p.all() for p in present.values())}


def test_in_memory_read_equals_the_oracle():
    """The C gather (labels transposed, presence, freshness, versions) answers exactly what the
    item-by-item oracle does: unknown items, absent values, stale rows, a subset of labels in any
    order, and a label the store does not have."""
    now = [5000.0]
    rng = np.random.default_rng(4)
    ids = [f"it-{k}" for k in range(300)]
    store = InMemoryLabelStore(max_age_s=100, clock=lambda: now[0])
    store.put(ids[:200], {"m": np.where(rng.random(200) < 0.1, np.nan, rng.random(200)), "t": rng.random(200)}, "v1", labeled_at=4950.0)
    store.put(ids[200:], {"m": rng.random(100), "s": rng.random(100)}, "v2", labeled_at=4800.0)  # stale at 5000
    query = [*rng.choice(ids, 250).tolist(), "nope", "it-x"]
    for names in (["m", "t", "s"], ["t", "m"], ["s", "zz"], []):
        fast = store.get(query, names)
        want = _gather_oracle(store, query, names, now[0])
        assert fast.complete == want["complete"] and fast.stale == want["stale"]
        # the guard takes a checked batch's columns as they are: exactly the names asked for,
        # float64 values and bool masks of one value per item
        assert fast.columns_checked and set(fast.values) == set(fast.present) == set(names)
        assert all(fast.values[k].dtype == np.float64 and fast.present[k].dtype == np.bool_
                   and fast.values[k].shape == fast.present[k].shape == (len(query),) for k in names)
        assert fast.versions.tolist() == want["versions"]
        np.testing.assert_array_equal(fast.freshness, want["freshness"])
        for name in names:
            np.testing.assert_array_equal(fast.values[name], want["values"][name])
            np.testing.assert_array_equal(fast.present[name], want["present"][name])
