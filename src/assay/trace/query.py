"""Queries over the segments with DuckDB: ``why`` (one decision, explained) and aggregates."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import duckdb

from assay.errors import BadInput

GROUPS = {"rule": "rule", "surface": "surface", "action": "action", "breaker_state": "breaker_state",
          "bundle_version": "bundle_version", "type": "type"}
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}
WHY_COLUMNS = ["index", "record_hash", "type", "erased", "request_id", "ts", "surface", "subject_id", "item_id",
               "rank_before", "rank_after", "action", "rule_ids", "reasons", "shadow_rule_ids", "bundle_hash",
               "bundle_version", "model_versions", "breaker_state", "score_before", "score_after", "attribution"]

# Set by a part that can resolve model lineage (the governance registry): model version -> lineage dict.
LineageResolver = Callable[[str], dict[str, Any] | None]


def _connect() -> duckdb.DuckDBPyConnection:
    return duckdb.connect(config={"threads": 2})


def why(log, item_id: str, subject_id: str, at: float | None = None,
        lineage: LineageResolver | None = None) -> dict[str, Any] | None:
    """The newest decision about ``item_id`` for ``subject_id`` at or before ``at``: the record,
    each rule that fired with its reason, bundle, models (with lineage if a resolver is given),
    breaker state, attribution, and an inclusion proof against the newest checkpoint."""
    pseudonym = log.pseudonymiser.one(subject_id)
    table = log.table(WHY_COLUMNS)
    con = _connect()
    con.register("decisions", table)
    cursor = con.execute(
        """SELECT * FROM decisions
           WHERE type = 'decision' AND subject_id = ? AND item_id = ? AND (? IS NULL OR ts <= ?)
           ORDER BY ts DESC, "index" DESC LIMIT 1""",
        [pseudonym, item_id, at, at])
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    con.close()
    if not rows:
        return None
    row = rows[0]
    index = int(row["index"])
    rules = [{"id": rid, "reason": reason} for rid, reason in
             zip(row["rule_ids"] or [], list(row["reasons"] or []) + [None] * len(row["rule_ids"] or []), strict=False)]
    models = []
    for version in row["model_versions"] or []:
        models.append({"version": version, "lineage": lineage(version) if lineage else None})
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
    table = log.table(["type", "ts", "surface", "action", "rule_ids", "breaker_state", "bundle_version"])
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
              WHERE type = 'decision' AND (? IS NULL OR ts >= ?) AND (? IS NULL OR ts < ?)
              {'GROUP BY ' + group if select else ''} ORDER BY {group + ', ' if select else ''}decisions DESC"""
    cursor = con.execute(sql, [since, since, until, until])
    names = [d[0] for d in cursor.description]
    out = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    con.close()
    for row in out:
        if "bucket" in row:
            row["bucket"] = row["bucket"].isoformat()
    return out
