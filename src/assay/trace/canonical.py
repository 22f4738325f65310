"""RFC 8785 (JCS) canonical JSON for trace records, built column-wise, and record hashes.

A record's hash is SHA-256 of its RFC 8785 JSON, so anyone can recompute it with any JCS library:

    decision: {**Decision.to_dict() (subject_id pseudonymised), "type": "decision"}
    event:    {**Event.to_dict(), "type": "event"}

The reference is the ``rfc8785`` package, one record at a time. Because the Decision schema is
fixed, the log builds the same bytes for a whole batch in C (key order is known; ``ts``, one
value per request, is formatted with Arrow's shortest round-trip digits once per distinct value,
and ``rfc8785`` where Arrow's form differs from ECMAScript's, |x| >= 1e10).

The JSON is a fixed template: constants (the keys, in order) and one part per value.
``_native_parts`` describes the columns (strings, dictionary columns, integers, lists, scores as
orjson's numbers) and ``hashing.json_rows`` (C, ``_native.c``) writes and hashes each row in one
pass. ``canonical_decisions`` returns the JSON as strings; ``decision_hashes`` (what append and
verify use) returns the SHA-256 of each. RFC 8785 is therefore written once by hand (the C
template, for the fixed decision schema) beside the maintained ``rfc8785`` library (everything
else: attributions, events, proofs); the property tests check the C path against the library on
random records. (A third, Arrow string-kernel version of the same bytes was removed in issue 22.)
"""

from __future__ import annotations

import math
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
from assay.trace import hashing

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
LEGACY_SEGMENT_SCHEMA = pa.schema(
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
# Columns that hold few distinct values in a batch (the policy facts: one bundle, a few surfaces,
# actions and states; one subject and request id per ~50 candidates) are stored dictionary-encoded:
# each value once per batch, a 4-byte index per row. That cuts a segment by about 40% (the bundle
# hash alone is 64 characters a row), and every byte saved is a byte not copied to the page cache,
# fsynced and hashed into the segment digest. Readers see the same values (Arrow decodes them).
STRING_DICT = pa.dictionary(pa.int32(), pa.string())
DICTIONARY_COLUMNS = ("type", "request_id", "surface", "subject_id", "action", "bundle_hash", "bundle_version",
                      "breaker_state", "kind")
# Lists of rule ids, reasons and model versions repeat a few strings: their items are encoded too.
DICTIONARY_LIST = pa.list_(STRING_DICT)
SEGMENT_SCHEMA = pa.schema([pa.field(f.name, STRING_DICT) if f.name in DICTIONARY_COLUMNS else
                            pa.field(f.name, DICTIONARY_LIST) if f.name in LIST_COLUMNS else f
                            for f in LEGACY_SEGMENT_SCHEMA])
# What erasure removes from a decision row (the personal part); the policy facts stay.
ERASED_COLUMNS = ("request_id", "subject_id", "item_id", "rank_before", "rank_after", "score_before", "score_after", "attribution")


def jcs(value: Any, where: str | None = None) -> bytes:
    """RFC 8785 JSON of a value (the reference serialiser). ``where`` names the field and row in
    the error (e.g. ``decision row 3: attribution``)."""
    try:
        out = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as e:
        what = where or f"a {type(value).__name__} value"
        raise BadInput(f"{what} cannot be written as RFC 8785 JSON exactly, so it could never be proved: {e}") from e
    if where is not None and isinstance(value, dict | list):
        # Input: it must also read back as itself. A float such as 1e16 is written "10000000000000000",
        # which a JSON reader takes for an integer beyond the safe range (and rfc8785 then refuses).
        import json

        try:
            again = rfc8785.dumps(json.loads(out))
        except rfc8785.CanonicalizationError as e:
            again = str(e).encode()
        if again != out:
            raise BadInput(f"{where} cannot be written as RFC 8785 JSON exactly, so it could never be proved: a number "
                           f"is written as an integer beyond \u00b1(2^53 - 1) ({again.decode(errors='replace')[:80]})")
    return out


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {key!r} appears twice")
    return out


def canonical_json_text(text: str, where: str) -> str:
    """The RFC 8785 form of a JSON object given as text (an attribution as ``append_table`` takes
    it): parsed strictly (no NaN/Infinity, no duplicate keys) and re-serialised by the reference.
    The value is unchanged, only its text; what RFC 8785 cannot carry exactly (integers beyond
    ±(2^53 - 1), numbers that overflow to infinity, lone surrogates) is refused, naming ``where``."""
    import json

    try:
        value = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"{where} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be a JSON object, got {type(value).__name__}")
    return jcs(value, where).decode()


def check_text(value: Any, where: str) -> None:
    """Refuse a string that UTF-8 (and so RFC 8785) cannot carry: a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadInput(f"{where} holds a lone surrogate ({value[e.start]!r} at character {e.start}), "
                           f"which RFC 8785 JSON cannot carry") from None


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
            values = [None if v is None else jcs(v, f"decision row {row}: attribution").decode()
                      for row, v in enumerate(values)]
        columns[name] = values
    try:
        return pa.table(columns, schema=DECISION_SCHEMA)
    except UnicodeEncodeError:
        _find_bad_text(columns)
        raise  # pragma: no cover - _find_bad_text raises
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise BadInput(f"a decision has a field of the wrong type: {e}") from e


def _find_bad_text(columns: dict[str, list]) -> None:
    """Raise BadInput naming the field and row of the first string UTF-8 cannot carry."""
    for name, values in columns.items():
        for row, value in enumerate(values):
            for item in value if isinstance(value, list) else (value,):
                check_text(item, f"decision row {row}: {name}")
    raise BadInput("a decision holds text that UTF-8 cannot carry")  # pragma: no cover


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
        if field.name == "attribution" and col.null_count < n:
            col = pa.array([None if text is None else canonical_json_text(text, f"decision row {row}: attribution")
                            for row, text in enumerate(col.to_pylist())], pa.string())
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=DECISION_SCHEMA)


def check_utf8(col: pa.Array, name: str) -> None:
    """Refuse text that is not UTF-8, naming the column and the first row. Strings built from
    raw buffers (``append_table``) can hold such bytes (a lone surrogate encoded as CESU-8, say):
    the writer would hash them as they are and no JSON library could reproduce the record. A
    dictionary-encoded column is checked once per distinct value; plain ASCII is known good from
    one vector scan of the bytes; anything else goes through Arrow's UTF-8 validation."""
    values, rows = _text_values(col)
    if values is None or _ascii(values):
        return
    try:
        values.validate(full=True)
        return
    except pa.ArrowInvalid:
        pass
    for position, value in enumerate(values.cast(pa.binary()).to_pylist()):
        try:
            if value is not None:
                value.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"decision row {rows(position)}: {name} is not valid UTF-8 (a lone surrogate?), "
                           f"which RFC 8785 JSON cannot carry") from None
    raise BadInput(f"decision column {name!r} is not a valid Arrow array")  # pragma: no cover


def _text_values(col: pa.Array):
    """The string array holding a column's text, and a function from a position in it to the
    first row that uses it."""
    if pa.types.is_dictionary(col.type):
        indices = col.indices.to_numpy(zero_copy_only=False)
        return col.dictionary, lambda k: int(np.flatnonzero(indices == k)[0])
    if pa.types.is_list(col.type):
        items = col.flatten()
        offsets = col.offsets.to_numpy()
        offsets = offsets - offsets[0]
        if pa.types.is_dictionary(items.type):
            indices = items.indices.to_numpy(zero_copy_only=False)
            return items.dictionary, lambda k: int(np.searchsorted(offsets[1:], np.flatnonzero(indices == k)[0], side="right"))
        return items, lambda i: int(np.searchsorted(offsets[1:], i, side="right"))
    if pa.types.is_string(col.type):
        return col, lambda i: i
    return None, None


def _ascii(arr: pa.Array) -> bool:
    data = _data_bytes(arr)
    return not len(data) or int(data.max()) < 0x80


# ---------------------------------------------------------------- column-wise JCS


def _data_bytes(arr: pa.Array) -> np.ndarray:
    """The character bytes of a string array's values (only this slice's range)."""
    data = arr.buffers()[2]
    if data is None or not len(arr):
        return np.empty(0, np.uint8)
    offsets = np.frombuffer(arr.buffers()[1], np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    return np.frombuffer(data, np.uint8)[int(offsets[0]) : int(offsets[-1])]


def _float(arr: pa.Array, name: str, few_distinct: bool = False) -> pa.Array:
    """JSON numbers (ECMAScript formatting) for a float64 array; null as ``null``. A column with
    long runs of one value (``ts``: one per request) is formatted once per distinct value."""
    values = arr.to_numpy(zero_copy_only=False)  # nulls become NaN
    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    bad = ~np.isfinite(values)
    if nulls is not None:
        bad &= ~nulls
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise BadInput(f"decision row {row}: {name} is {values[row]}, which JSON cannot carry")
    if few_distinct and len(arr) > 64 and np.count_nonzero(values[1:] != values[:-1]) < len(arr) // 4:
        encoded = pc.dictionary_encode(arr)
        text = _format_floats(encoded.dictionary, encoded.dictionary.to_numpy(zero_copy_only=False)).take(encoded.indices)
    else:
        text = _format_floats(arr, values)
    if nulls is not None:
        text = pc.fill_null(text, "null")
    return text


def _format_floats(arr: pa.Array, values: np.ndarray) -> pa.Array:
    text = pc.cast(arr, pa.string())
    if np.any(values == 0.0):  # Arrow writes -0.0 as "-0"; JSON (ECMAScript) as "0"
        text = pc.if_else(pc.equal(arr, 0.0), "0", text)
    big = np.abs(np.nan_to_num(values)) >= 1e10  # Arrow switches to exponents at 1e10, ECMAScript at 1e21
    if big.any():
        items = text.to_pylist()
        for i in np.flatnonzero(big):
            items[i] = jcs(float(values[i])).decode()
        text = pa.array(items, pa.string())
    return text


PARALLEL_MIN_ROWS = 50_000


MIN_SLICE_ROWS = 8_192


def _slices(table: pa.Table, workers: int | None) -> list[list[pa.Table]]:
    """The rows split into one run of slices per thread (about equal row counts). Slices are also
    cut at the table's chunk boundaries (a segment read back has one chunk per appended batch),
    where the pieces are at least ``MIN_SLICE_ROWS`` long, so that no slice has to copy columns
    together; smaller chunks are combined (a copy costs less than building another slice)."""
    workers = hashing.workers(workers)
    n = table.num_rows
    parts = workers if workers > 1 and n >= PARALLEL_MIN_ROWS else 1
    step = max(1, -(-n // parts))
    cuts = set(range(0, n, step)) | {n}
    if table.num_columns and table.column(0).num_chunks > 1:
        last = 0
        for bound in np.cumsum([len(c) for c in table.column(0).chunks])[:-1].tolist():
            if bound - last >= MIN_SLICE_ROWS and n - bound >= MIN_SLICE_ROWS:
                cuts.add(bound)
                last = bound
    groups: list[list[pa.Table]] = [[] for _ in range(parts)]
    bounds = sorted(cuts)
    for a, b in pairwise(bounds):
        groups[a // step].append(table.slice(a, b - a))
    return [g for g in groups if g] or [[table]]


def _pool_map(fn, groups: list[list[pa.Table]]) -> list:
    done = hashing.parallel_map(lambda group: [fn(t) for t in group], groups, len(groups))
    return [x for group in done for x in group]


def canonical_decisions(table: pa.Table, workers: int | None = None) -> pa.Array:
    """RFC 8785 JSON (UTF-8 strings) of every decision in a ``DECISION_SCHEMA`` table (subject
    ids already pseudonymised). Equal to ``reference_canonical`` row by row.

    Arrow's kernels release the GIL, so large batches are built in slices on a thread pool
    (``workers`` defaults to the CPU count, at most 8)."""
    _check_numbers(table)
    parts = _pool_map(_canonical_slice, _slices(table, workers))
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def decision_hashes(table: pa.Table, workers: int | None = None) -> bytes:
    """SHA-256 of each decision's RFC 8785 JSON, concatenated (``n * 32`` bytes): equal to
    ``hash_strings(canonical_decisions(table))`` but hashed from the column pieces (the joined
    JSON is never built; see ``hashing.sha256_rows``). Slices run on a thread pool: the Arrow
    kernels and the native hasher both release the GIL."""
    if table.num_rows == 0:
        return b""
    _check_numbers(table)
    return b"".join(_pool_map(_hash_slice, _slices(table, workers)))


def _check_numbers(table: pa.Table) -> None:
    """Refuse numbers JSON cannot carry, naming the row in the whole batch (the slices would
    name it within their slice)."""
    for name in ("ts", "score_before", "score_after"):
        values = table.column(name).to_numpy()  # nulls become NaN
        bad = ~np.isfinite(values)
        if bad.any():
            if table.column(name).null_count:
                bad &= ~table.column(name).is_null().to_numpy(zero_copy_only=False)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise BadInput(f"decision row {row}: {name} is {values[row]}, which JSON cannot carry")
        magnitude = np.abs(values)
        integral = (magnitude >= 2.0**53) & (magnitude < 1e21)  # written as integer digits (ECMAScript)
        if integral.any():
            row = int(np.flatnonzero(integral)[0])
            raise BadInput(f"decision row {row}: {name} = {float(values[row])!r} is written in JSON as an integer beyond "
                           f"\u00b1(2^53 - 1), which JSON readers do not all read back exactly")
    for name in ("rank_before", "rank_after"):
        values = table.column(name).to_numpy()
        bad = np.abs(values) > MAX_SAFE_INT
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise BadInput(f"decision row {row}: {name} = {values[row]} is outside the JSON safe integer range")


def _hash_slice(table: pa.Table) -> bytes:
    return hashing.json_rows(_native_parts(table), table.num_rows)


def _canonical_slice(table: pa.Table) -> pa.Array:
    return hashing.json_text(_native_parts(table), table.num_rows)


def _native_parts(table: pa.Table) -> list:
    """The template ``hashing.json_rows`` writes each row's JSON from: the same bytes as the
    reference library (``reference_canonical``, the oracle in the tests); strings are escaped,
    integers and lists formatted and everything copied in one native pass per row. Scores are written
    by orjson and put in ECMAScript's form natively (``hashing.numbers_part``); ``ts``, one value
    per request, by ``_float`` once per distinct value. A null is written as ``null`` (a null list
    as ``[]``), as ``reference_canonical`` writes it."""
    col = {name: table.column(name).combine_chunks() for name in DECISION_SCHEMA.names}

    def quoted(name: str) -> tuple | bytes:
        arr = col[name]
        if pa.types.is_dictionary(arr.type):
            if len(arr.dictionary) == 1 and not arr.null_count:  # one value in the batch (one bundle, one state)
                return jcs(arr.dictionary[0].as_py())
            return hashing.dict_part(arr)
        return hashing.string_part(arr, quoted=True)

    def number(name: str) -> tuple:
        return hashing.numbers_part(col[name])

    attribution = col["attribution"]
    parts = [
        b'{"action":', quoted("action"),
        b',"attribution":', b"null" if attribution.null_count == len(attribution) else
        hashing.string_part(attribution, quoted=False),
        b',"breaker_state":', quoted("breaker_state"),
        b',"bundle_hash":', quoted("bundle_hash"),
        b',"bundle_version":', quoted("bundle_version"),
        b',"item_id":', quoted("item_id"),
        b',"model_versions":', hashing.list_part(col["model_versions"]),
        b',"rank_after":', hashing.int_part(col["rank_after"]),
        b',"rank_before":', hashing.int_part(col["rank_before"]),
        b',"reasons":', hashing.list_part(col["reasons"]),
        b',"request_id":', quoted("request_id"),
        b',"rule_ids":', hashing.list_part(col["rule_ids"]),
        b',"score_after":', number("score_after"),
        b',"score_before":', number("score_before"),
        b',"shadow_rule_ids":', b"[]" if not len(pc.list_flatten(col["shadow_rule_ids"])) and not col["shadow_rule_ids"].null_count
        else hashing.list_part(col["shadow_rule_ids"]),
        b',"subject_id":', quoted("subject_id"),
        b',"surface":', quoted("surface"),
        b',"ts":', hashing.string_part(_float(col["ts"], "ts", few_distinct=True), quoted=False),  # one per request
        b',"type":"decision"}',
    ]
    return _merge_constants(parts, bytes)  # fewer pieces a row


def _merge_constants(pieces: list, constant: type) -> list:
    """``pieces`` with each run of adjacent constants (of type ``constant``) joined into one."""
    merged: list = []
    for piece in pieces:
        if isinstance(piece, constant) and merged and isinstance(merged[-1], constant):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


# ---------------------------------------------------------------- hashing


def hash_strings(arr: pa.Array) -> list[bytes]:
    """SHA-256 of each value of a string/binary array (native batch hashing where built)."""
    digests = hashing.sha256_each(arr)
    return [digests[i : i + 32] for i in range(0, len(digests), 32)]


def event_row(event: Event, row: int = 0) -> dict[str, Any]:
    where = f"event row {row} ({event.kind!r})"
    for name in ("kind", "subject", "bundle_hash"):
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            raise BadInput(f"{where}: {name} must be a string, got {type(value).__name__}")
        check_text(value, f"{where}: {name}")
    if not isinstance(event.payload, dict):
        raise BadInput(f"{where}: payload must be a JSON object, got {type(event.payload).__name__}")
    if isinstance(event.ts, bool) or not isinstance(event.ts, int | float) or not math.isfinite(event.ts):
        raise BadInput(f"{where}: ts must be a finite number")
    if 2.0**53 <= abs(float(event.ts)) < 1e21:
        raise BadInput(f"{where}: ts = {event.ts!r} is written in JSON as an integer beyond \u00b1(2^53 - 1)")
    return {
        "type": "event",
        "ts": float(event.ts),
        "bundle_hash": event.bundle_hash or "",
        "kind": event.kind,
        "event_subject": event.subject,
        "payload": jcs(event.payload, f"{where}: payload").decode(),
    }
