"""RFC 8785 (JCS) canonical JSON for trace records, built column-wise, and record hashes.

A record's hash is SHA-256 of its RFC 8785 JSON, so anyone can recompute it with any JCS library:

    decision: {**Decision.to_dict() (subject_id pseudonymised), "type": "decision"}
    event:    {**Event.to_dict(), "type": "event"}

The reference is the ``rfc8785`` package, one record at a time. Because the Decision schema is
fixed, the log builds the same bytes for a whole batch with Arrow string kernels (key order is
known, strings are escaped with substring replacement, numbers use Arrow's shortest round-trip
formatting, which equals ECMAScript's for the ranges it is used on; everything else — control
characters in strings, |x| >= 1e10, attributions, events — goes through ``rfc8785`` per row).
The property test checks the two agree on random records.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from itertools import pairwise
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import rfc8785

from assay.errors import BadInput
from assay.records import Decision, Event

MAX_SAFE_INT = 2**53 - 1

STRING_LIST = pa.list_(pa.string())

# The columns a batch of decisions arrives in (the fast path: ``TraceLog.append_table``).
DECISION_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.float64()),
        ("surface", pa.string()),
        ("subject_id", pa.string()),
        ("item_id", pa.string()),
        ("rank_before", pa.int64()),
        ("rank_after", pa.int64()),
        ("action", pa.string()),
        ("rule_ids", STRING_LIST),
        ("reasons", STRING_LIST),
        ("shadow_rule_ids", STRING_LIST),
        ("bundle_hash", pa.string()),
        ("bundle_version", pa.string()),
        ("model_versions", STRING_LIST),
        ("breaker_state", pa.string()),
        ("score_before", pa.float64()),
        ("score_after", pa.float64()),
        ("attribution", pa.string()),  # RFC 8785 JSON of the dict, or null
    ]
)
REQUIRED = ("request_id", "ts", "surface", "subject_id", "item_id", "rank_before", "rank_after", "action")
LIST_COLUMNS = ("rule_ids", "reasons", "shadow_rule_ids", "model_versions")
STRING_DEFAULTS = {"bundle_hash": "", "bundle_version": "", "breaker_state": "closed"}

# A segment row is a decision or an event; the columns of the other kind are null.
SEGMENT_SCHEMA = pa.schema(
    [
        ("index", pa.uint64()),
        ("record_hash", pa.binary(32)),
        ("type", pa.string()),
        ("erased", pa.bool_()),
        *DECISION_SCHEMA,
        ("kind", pa.string()),
        ("event_subject", pa.string()),
        ("payload", pa.string()),  # RFC 8785 JSON of the event payload
    ]
)
# What erasure removes from a decision row (the personal part); the policy facts stay.
ERASED_COLUMNS = ("request_id", "subject_id", "item_id", "rank_before", "rank_after", "score_before", "score_after", "attribution")


def jcs(value: Any) -> bytes:
    """RFC 8785 JSON of a value (the reference serialiser)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        raise BadInput(f"cannot canonicalise {type(value).__name__} value for the trace: {e}") from e


def decision_dict(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a decision row commits to (segment row or Decision.to_dict())."""
    out = {name: row.get(name) for name in DECISION_SCHEMA.names}
    attribution = out["attribution"]
    if isinstance(attribution, str):
        import json

        out["attribution"] = json.loads(attribution)
    for name in LIST_COLUMNS:
        out[name] = list(out[name] or ())
    out["type"] = "decision"
    return out


def event_dict(row: dict[str, Any]) -> dict[str, Any]:
    import json

    payload = row.get("payload")
    return {
        "bundle_hash": row.get("bundle_hash") or "",
        "kind": row["kind"],
        "payload": json.loads(payload) if isinstance(payload, str) else (payload or {}),
        "subject": row.get("event_subject") if "event_subject" in row else row.get("subject"),
        "ts": row["ts"],
        "type": "event",
    }


def reference_canonical(row: dict[str, Any]) -> bytes:
    """RFC 8785 JSON of one segment row via the reference library (used by verify on events,
    by the tests as the oracle for the column-wise path)."""
    return jcs(decision_dict(row) if row["type"] == "decision" else event_dict(row))


# ---------------------------------------------------------------- building tables


def decisions_to_table(decisions: Sequence[Decision]) -> pa.Table:
    """Columns from Decision records (one attribute pass per column, no per-record dicts)."""
    columns: dict[str, Any] = {}
    for name in DECISION_SCHEMA.names:
        values = list(map(attrgetter(name), decisions))
        if name in LIST_COLUMNS:
            values = [list(v) for v in values]
        elif name == "attribution":
            values = [None if v is None else jcs(v).decode() for v in values]
        columns[name] = values
    try:
        return pa.table(columns, schema=DECISION_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise BadInput(f"a decision has a field of the wrong type: {e}") from e


def normalise_decision_table(table: pa.Table) -> pa.Table:
    """Check and cast a caller's decision table to ``DECISION_SCHEMA``; missing optional columns
    get their defaults. Raises ``BadInput`` naming the column and the first bad row."""
    n = table.num_rows
    names = set(table.column_names)
    unknown = names - set(DECISION_SCHEMA.names)
    if unknown:
        raise BadInput(f"decision table has unknown column(s): {', '.join(sorted(unknown))}")
    arrays = []
    for field in DECISION_SCHEMA:
        if field.name in names:
            col = table.column(field.name)
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise BadInput(f"decision column {field.name!r} cannot be read as {field.type}: {e}") from e
            col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        elif field.name in REQUIRED:
            raise BadInput(f"decision table lacks the required column {field.name!r}")
        elif field.name in LIST_COLUMNS:
            col = pa.array([[]] * n, STRING_LIST)
        elif field.name in STRING_DEFAULTS:
            col = pa.array([STRING_DEFAULTS[field.name]] * n, pa.string())
        else:
            col = pa.nulls(n, field.type)
        if field.name in REQUIRED and col.null_count:
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise BadInput(f"decision row {row}: required field {field.name!r} is missing")
        if field.name in LIST_COLUMNS and col.null_count:
            col = pc.if_else(col.is_null(), pa.scalar([], STRING_LIST), col)
        if field.name in STRING_DEFAULTS and col.null_count:
            col = pc.fill_null(col, STRING_DEFAULTS[field.name])
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=DECISION_SCHEMA)


# ---------------------------------------------------------------- column-wise JCS


def _first_true(mask: pa.Array) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _data_bytes(arr: pa.Array) -> np.ndarray:
    """The character bytes behind a string array (a superset when the array is a slice)."""
    data = arr.buffers()[2]
    return np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)


def _quote(arr: pa.Array, few_distinct: bool = False) -> pa.Array:
    """JSON string literals for a string array without nulls.

    Escaping is only run when the bytes hold a quote, a backslash or a control character (one
    vector scan of the data buffer); columns with few distinct values (action, surface, rule ids)
    are quoted once per distinct value and spread back with a take."""
    if few_distinct and len(arr) > 64:
        encoded = pc.dictionary_encode(arr)
        return _quote(encoded.dictionary).take(encoded.indices)
    raw = _data_bytes(arr)
    quoted = pc.binary_join_element_wise('"', arr, '"', "")
    if not len(raw) or (raw.min() >= 0x20 and not (np.any(raw == 0x22) or np.any(raw == 0x5C))):
        return quoted
    escaped = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    if raw.min() < 0x20:
        control = pc.match_substring_regex(arr, "[\\x{00}-\\x{1f}]")
        if pc.any(control).as_py():
            values = quoted.to_pylist()
            originals = arr.to_pylist()
            for i in np.flatnonzero(control.to_numpy(zero_copy_only=False)):
                values[i] = jcs(originals[i]).decode()
            quoted = pa.array(values, pa.string())
    return quoted


def _float(arr: pa.Array, name: str) -> pa.Array:
    values = arr.to_numpy(zero_copy_only=False)  # nulls become NaN
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    bad = ~np.isfinite(values)
    if nulls is not None:
        bad &= ~nulls
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise BadInput(f"decision row {row}: {name} is {values[row]}, which JSON cannot carry")
    text = pc.cast(arr, pa.string())
    text = pc.if_else(pc.equal(arr, 0.0), "0", text)
    big = np.abs(np.nan_to_num(values)) >= 1e10  # Arrow switches to exponents at 1e10, ECMAScript at 1e21
    if big.any():
        items = text.to_pylist()
        for i in np.flatnonzero(big):
            items[i] = jcs(float(values[i])).decode()
        text = pa.array(items, pa.string())
    if nulls is not None:
        text = pc.fill_null(text, "null")
    return text


def _int(arr: pa.Array, name: str) -> pa.Array:
    values = arr.to_numpy(zero_copy_only=False)
    bad = np.abs(values) > MAX_SAFE_INT
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise BadInput(f"decision row {row}: {name} = {values[row]} is outside the JSON safe integer range")
    return pc.cast(arr, pa.string())


def _string_list(arr: pa.Array) -> pa.Array:
    offsets = arr.offsets
    first = offsets[0].as_py()
    flat = pc.list_flatten(arr)
    quoted = _quote(flat, few_distinct=True) if len(flat) else flat
    rebuilt = pa.ListArray.from_arrays(pc.subtract(offsets, first), quoted)
    return pc.binary_join_element_wise("[", pc.binary_join(rebuilt, ","), "]", "")


PARALLEL_MIN_ROWS = 50_000


def canonical_decisions(table: pa.Table, workers: int | None = None) -> pa.Array:
    """RFC 8785 JSON (UTF-8 strings) of every decision in a ``DECISION_SCHEMA`` table (subject
    ids already pseudonymised). Equal to ``reference_canonical`` row by row.

    Arrow's kernels release the GIL, so large batches are built in slices on a thread pool
    (``workers`` defaults to the CPU count, at most 8)."""
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if workers > 1 and table.num_rows >= PARALLEL_MIN_ROWS:
        from concurrent.futures import ThreadPoolExecutor

        step = -(-table.num_rows // workers)
        slices = [table.slice(start, step) for start in range(0, table.num_rows, step)]
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(_canonical_slice, slices))
        return pa.concat_arrays(parts)
    return _canonical_slice(table)


def _canonical_slice(table: pa.Table) -> pa.Array:
    col = {name: table.column(name).combine_chunks() for name in DECISION_SCHEMA.names}
    attribution = pc.fill_null(col["attribution"], "null")
    parts = [
        '{"action":', _quote(col["action"], few_distinct=True),
        ',"attribution":', attribution,
        ',"breaker_state":', _quote(col["breaker_state"], few_distinct=True),
        ',"bundle_hash":', _quote(col["bundle_hash"], few_distinct=True),
        ',"bundle_version":', _quote(col["bundle_version"], few_distinct=True),
        ',"item_id":', _quote(col["item_id"]),
        ',"model_versions":', _string_list(col["model_versions"]),
        ',"rank_after":', _int(col["rank_after"], "rank_after"),
        ',"rank_before":', _int(col["rank_before"], "rank_before"),
        ',"reasons":', _string_list(col["reasons"]),
        ',"request_id":', _quote(col["request_id"]),
        ',"rule_ids":', _string_list(col["rule_ids"]),
        ',"score_after":', _float(col["score_after"], "score_after"),
        ',"score_before":', _float(col["score_before"], "score_before"),
        ',"shadow_rule_ids":', _string_list(col["shadow_rule_ids"]),
        ',"subject_id":', _quote(col["subject_id"]),
        ',"surface":', _quote(col["surface"], few_distinct=True),
        ',"ts":', _float(col["ts"], "ts"),
        ',"type":"decision"}',
    ]
    return pc.binary_join_element_wise(*parts, "")


# ---------------------------------------------------------------- hashing


def hash_strings(arr: pa.Array) -> list[bytes]:
    """SHA-256 of each value of a string/binary array, reading Arrow's buffers directly.

    hashlib holds the GIL for inputs under 2 KiB, so a thread pool does not help; this loop is
    the measured bottleneck of append and verify (see docs/trace.md)."""
    arr = arr.cast(pa.binary()) if arr.type != pa.binary() else arr
    n = len(arr)
    if n == 0:
        return []
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=n + 1, offset=arr.offset * 4).tolist()
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    sha = hashlib.sha256
    return [sha(data[a:b]).digest() for a, b in pairwise(offsets)]


def event_row(event: Event) -> dict[str, Any]:
    if not isinstance(event.payload, dict):
        raise BadInput(f"event {event.kind!r}: payload must be a JSON object, got {type(event.payload).__name__}")
    if not isinstance(event.ts, int | float) or not math.isfinite(event.ts):
        raise BadInput(f"event {event.kind!r}: ts must be a finite number")
    return {
        "type": "event",
        "ts": float(event.ts),
        "bundle_hash": event.bundle_hash or "",
        "kind": event.kind,
        "event_subject": event.subject,
        "payload": jcs(event.payload).decode(),
    }
