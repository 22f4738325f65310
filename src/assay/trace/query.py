"""Queries over the segments with DuckDB: ``why`` (one decision, explained) and aggregates."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.errors import BadInput

GROUPS = {"rule": "rule", "surface": "surface", "action": "action", "breaker_state": "breaker_state",
          "bundle_version": "bundle_version", "type": "type"}
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
WHY_COLUMNS = ["index", "record_hash", "type", "erased", "request_id", "ts", "surface", "subject_id", "item_id",
               "rank_before", "rank_after", "action", "rule_ids", "reasons", "shadow_rule_ids", "bundle_hash",
               "bundle_version", "model_versions", "breaker_state", "score_before", "score_after", "attribution"]

# Set by a part that can resolve model lineage (the governance registry): model version -> lineage dict.
LineageResolver = Callable[[str], dict[str, Any] | None]
# A resolver (``assay.govern.lineage.resolver``) answers ``{"model", "training_data", "lineage",
# "missing"}`` for a recorded model version; ``missing`` names the absent link of the chain
# decision -> model version -> training data, so an answer never just says ``"lineage": null``.
NO_REGISTRY = "model version: no governance registry was consulted for this answer"


def model_entry(version: str, lineage: LineageResolver | None) -> dict[str, Any]:
    """One recorded model version with what the registry says about it (or why it says nothing)."""
    link = lineage(version) if lineage is not None else None
    if link is None:
        link = {"model": None, "training_data": [], "lineage": None,
                "missing": NO_REGISTRY if lineage is None else f"model version: the registry does not know {version!r}"}
    return {"version": version, **link}


def _connect() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"threads": 2})


_HASHER: list = []
_HASHER_LOCK = threading.Lock()


def item_keys(items: pa.Array) -> np.ndarray:
    """64-bit keys of item ids (DuckDB's vectorised ``hash``; the index file names the version).
    One connection is kept for this: opening a DuckDB connection costs more than a lookup."""
    with _HASHER_LOCK:
        if not _HASHER:
            _HASHER.append(duckdb.connect(config={"threads": 1}))
        con = _HASHER[0]
        con.register("item_keys_input", pa.table({"item_id": items}))
        keys = con.execute("SELECT hash(item_id) AS h FROM item_keys_input").fetchnumpy()["h"]
        con.unregister("item_keys_input")
    return np.asarray(keys, dtype=np.uint64)


def item_key(item_id: str) -> np.uint64:
    return item_keys(pa.array([item_id], pa.string()))[0]


def _segment_index(log, name: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray, int]:
    """(sorted keys, row of each key, rows covered) for a segment: in memory, and persisted next
    to local logs as ``index/<segment>.npz`` so a restart does not rebuild it. A segment that
    grew since is covered up to the indexed row; the newer tail is scanned."""
    cache = log.__dict__.setdefault("_why_index", {})
    hit = cache.get(name)
    rows = table.num_rows
    if hit is not None and (hit[2] == rows or hit[2] > rows * 0.9):
        return hit
    path = None
    if log.local:
        from pathlib import Path

        path = Path(log.root) / "index" / f"{name}.{duckdb.__version__}.npz"
        if path.exists():
            with np.load(path) as data:
                loaded = (data["keys"], data["rows"], int(data["covered"]))
            if loaded[2] <= rows and (loaded[2] == rows or loaded[2] > rows * 0.9):
                cache[name] = loaded
                return loaded
    keys = item_keys(table.column("item_id").combine_chunks())
    order = np.argsort(keys, kind="stable")
    built = (keys[order], order.astype(np.uint32), rows)
    cache[name] = built
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=built[0], rows=built[1], covered=rows)
        tmp.replace(path)
    return built


def _candidates(log, name: str, table: pa.Table, item_id: str, key: np.uint64) -> list[dict[str, Any]]:
    keys, rows, covered = _segment_index(log, name, table)
    lo, hi = np.searchsorted(keys, key, side="left"), np.searchsorted(keys, key, side="right")
    found = [table.slice(int(r), 1).to_pylist()[0] for r in np.sort(rows[lo:hi])]
    if covered < table.num_rows:
        tail = table.slice(covered)
        hits = pc.fill_null(pc.equal(tail.column("item_id"), item_id), False)
        if pc.any(hits).as_py():
            found.extend(tail.filter(hits).to_pylist())
    return found


def why(log, item_id: str, subject_id: str, at: float | None = None,
        lineage: LineageResolver | None = None) -> dict[str, Any] | None:
    """The newest decision about ``item_id`` for ``subject_id`` at or before ``at``: the record,
    each rule that fired with its reason, bundle, models (with lineage if a resolver is given),
    breaker state, attribution, and an inclusion proof against the newest checkpoint."""
    pseudonym = log.pseudonymiser.one(subject_id)
    best = None
    key = item_key(item_id)
    best_table = None
    for name, full in log._named_segments(WHY_COLUMNS):
        # Candidates are judged on five columns; only the winning row is read in full (fewer
        # pages of the memory-mapped segment are touched on a cold cache).
        table = full.select(["index", "type", "ts", "subject_id", "item_id"])
        for row in _candidates(log, name, table, item_id, key):
            if row["type"] != "decision" or row["item_id"] != item_id or row["subject_id"] != pseudonym:
                continue
            if at is not None and row["ts"] > at:
                continue
            if best is None or (row["ts"], row["index"]) > (best["ts"], best["index"]):
                best, best_table = row, full
    if best is None:
        return None
    first = int(best_table.column("index")[0].as_py())
    row = best_table.slice(int(best["index"]) - first, 1).to_pylist()[0]
    index = int(row["index"])
    rules = [{"id": rid, "reason": reason} for rid, reason in
             zip(row["rule_ids"] or [], list(row["reasons"] or []) + [None] * len(row["rule_ids"] or []), strict=False)]
    models = [model_entry(version, lineage) for version in row["model_versions"] or []]
    answer: dict[str, Any] = {
        "index": index,
        "record_hash": bytes(row["record_hash"]).hex(),
        "request_id": row["request_id"],
        "ts": row["ts"],
        "surface": row["surface"],
        "subject": pseudonym,
        "item_id": row["item_id"],
        "action": row["action"],
        "rank_before": row["rank_before"],
        "rank_after": row["rank_after"],
        "score_before": row["score_before"],
        "score_after": row["score_after"],
        "rules": rules,
        "shadow_rule_ids": row["shadow_rule_ids"] or [],
        "bundle_hash": row["bundle_hash"],
        "bundle_version": row["bundle_version"],
        "models": models,
        "breaker_state": row["breaker_state"],
        "attribution": json.loads(row["attribution"]) if row["attribution"] else None,
    }
    sizes = log.checkpoint_sizes()
    if sizes and index < sizes[-1]:
        answer["proof"] = log.prove_inclusion(index)
    return answer


def aggregate(log, by: Sequence[str] = ("rule",), bucket: str | None = None, since: float | None = None,
              until: float | None = None) -> list[dict[str, Any]]:
    """Decision counts grouped by rule / surface / action (and a time bucket), via DuckDB."""
    by = list(by)
    for key in by:
        if key not in GROUPS:
            raise BadInput(f"cannot group decisions by {key!r}; choose from {', '.join(GROUPS)}")
    if bucket is not None and bucket not in BUCKETS:
        raise BadInput(f"time bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    table = log.table(["type", "erased", "ts", "surface", "action", "rule_ids", "breaker_state", "bundle_version"])
    con = _connect()
    con.register("decisions", table)
    select = []
    source = "decisions"
    if "rule" in by:
        # A decision with no rule counts under rule '' (nothing fired); one with two rules counts once per rule.
        source = "(SELECT *, unnest(CASE WHEN len(rule_ids) = 0 THEN [''] ELSE rule_ids END) AS rule FROM decisions)"
    for key in by:
        select.append(f"{GROUPS[key]}")
    if bucket:
        select.insert(0, f"to_timestamp(floor(ts / {BUCKETS[bucket]}) * {BUCKETS[bucket]}) AS bucket")
    group = ", ".join(str(i + 1) for i in range(len(select)))
    sql = f"""SELECT {', '.join(select)}{', ' if select else ''}count(*) AS decisions FROM {source}
              WHERE type = 'decision' AND NOT erased AND (? IS NULL OR ts >= ?) AND (? IS NULL OR ts < ?)
              {'GROUP BY ' + group if select else ''} ORDER BY {group + ', ' if select else ''}decisions DESC"""
    cursor = con.execute(sql, [since, since, until, until])
    names = [d[0] for d in cursor.description]
    out = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    con.close()
    for row in out:
        if "bucket" in row:
            row["bucket"] = row["bucket"].isoformat()
    return out
