"""Candidate batches: validated columns, from any of the forms a caller has at hand.

The fast path is columnar (a dict of numpy arrays or lists, or a pyarrow Table), because that is
what a ranker produces and what the vectorised evaluator consumes; a list of dicts is accepted for
convenience. Whatever the form, a batch is checked before any rule runs — ids present, strings,
unique; scores finite numbers; columns of one length — and a bad batch is a ``BadInput`` that
names the position, the id and what is wrong, never a half-applied slate.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.guard import _native
from assay.policy.batch import arrow_values, inferred, is_arrow_list, one_type

RESERVED = ("id", "score")
# the longest id or name a request, a candidate or a harm report may carry: ids are echoed in the
# slate and written to every decision record (and looked up by the trace's why, which takes at
# most this), and each scope a report names becomes a breaker kept in memory and listed by
# /v1/guard/status, so they are bounded
MAX_NAME_CHARS = 1024
LABEL_PREFIX = "labels."


@dataclass
class Candidates:
    """One request's candidates as columns. ``ids`` and ``scores`` are required; ``columns``
    holds the rest (``source``, ``creator``, features, and ``labels.X`` labels the caller already
    has), each of length ``n``: a numpy array, or a pyarrow list array for a list column given in
    Arrow (numpy has no list type; Arrow's offsets and flat values are what the rules read)."""

    ids: np.ndarray  # object array of str
    scores: np.ndarray  # float64
    columns: dict[str, Any]  # numpy arrays; list columns given as Arrow stay Arrow list arrays
    missing: dict[str, np.ndarray] = field(default_factory=dict)  # Arrow nulls: absent, never NaN

    @property
    def n(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray | None:
        return self.columns.get(name)


def _as_array(name: str, value: Any, n: int | None, missing: dict[str, np.ndarray] | None = None) -> np.ndarray:
    if isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "to_numpy") and hasattr(value, "type"):  # pyarrow Array / ChunkedArray
        if is_arrow_list(value):
            # kept as Arrow: the rules read its offsets and flat values, no Python object per row
            arr = value.combine_chunks() if hasattr(value, "combine_chunks") else value
            if n is not None and len(arr) != n:
                raise BadInput(f"candidates: column {name!r} has {len(arr)} values but 'id' has {n}")
            return arr
        arr, nulls = arrow_values(value)  # nulls are absent values, not NaN or a made-up number
        if nulls is not None and missing is not None:
            missing[name] = nulls
    elif isinstance(value, (list, tuple)):
        arr = _from_list(value)
    else:
        raise BadInput(f"candidates: column {name!r} must be a list or array, got {type(value).__name__}")
    if arr.ndim != 1:
        raise BadInput(f"candidates: column {name!r} must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise BadInput(f"candidates: column {name!r} has {len(arr)} values but 'id' has {n}")
    return arr


_TYPED = {float: np.float64, int: np.int64, bool: np.bool_}


def _from_list(values: list | tuple) -> np.ndarray:
    """A JSON array as a numpy column holding the same values: all floats, all ints or all bools
    as that typed array (one C pass to find the type); anything else (strings, lists, nulls, a
    mixture) as an object array, which the policy batch types against the attribute it feeds."""
    kind = one_type(values if type(values) is list else list(values))
    if (dtype := _TYPED.get(kind)) is not None:
        with contextlib.suppress(OverflowError):  # an int beyond int64 stays the object it is
            return np.array(values, dtype=dtype)
    # fromiter, not a slice assignment: numpy would look into every row of a list of lists
    return np.fromiter(values, dtype=object, count=len(values))


def from_columns(columns: Mapping[str, Any], *, labels_allowed: bool = True) -> Candidates:
    """Validate a columnar batch (dict of arrays/lists, or anything with ``column_names``)."""
    if hasattr(columns, "column_names") and hasattr(columns, "column"):  # pyarrow Table
        columns = {name: columns.column(name) for name in columns.column_names}
    if not isinstance(columns, Mapping):
        raise BadInput(f"candidates must be columns (a mapping or a table) or a list of objects, got {type(columns).__name__}")
    if "id" not in columns:
        raise BadInput(f"candidates: no 'id' column (columns: {sorted(columns)})")
    if "score" not in columns:
        raise BadInput(f"candidates: no 'score' column (columns: {sorted(columns)})")
    raw_ids = _as_array("id", columns["id"], None)
    n = len(raw_ids)
    ids = _check_ids(raw_ids)
    scores = _check_scores(_as_array("score", columns["score"], n), ids)
    rest = {}
    missing: dict[str, np.ndarray] = {}
    for name, value in columns.items():
        if name in RESERVED:
            continue
        if not isinstance(name, str) or not name:
            raise BadInput(f"candidates: column names must be non-empty strings, got {name!r}")
        if not labels_allowed and (name == "labels" or name.startswith(LABEL_PREFIX)):
            raise BadInput(f"candidates: column {name!r} is not accepted: labels come from the label store, not the request")
        rest[name] = _as_array(name, value, n, missing)
    return Candidates(ids, scores, rest, missing)


def _check_ids(raw: np.ndarray) -> np.ndarray:
    n = len(raw)
    if raw.dtype.kind == "U":
        ids = raw.astype(object)
    elif raw.dtype == object:
        ids = raw
    else:
        raise BadInput(f"candidates: 'id' must be strings, got an array of {raw.dtype}")
    # the common case is checked in C (one pass over the ids' own hashes); the loops below only
    # run where it found something: to name the bad position, or to decide a str subclass
    listed = ids.tolist()
    if not n or _native.check_ids(listed) < 0:
        return _check_id_lengths(ids, listed)
    unique = set(listed) if inferred(ids) == "string" else None
    if unique is None or "" in unique:
        for i, item_id in enumerate(ids):
            if type(item_id) is not str or not item_id:
                raise BadInput(f"candidates[{i}]: 'id' must be a non-empty string, got {item_id!r}")
        unique = set(ids.tolist())
    if len(unique) != n:
        seen: dict[str, int] = {}
        for i, item_id in enumerate(ids):
            if item_id in seen:
                raise BadInput(f"candidates[{i}]: duplicate id {item_id!r} (first at position {seen[item_id]})")
            seen[item_id] = i
    return _check_id_lengths(ids, listed)


def _check_id_lengths(ids: np.ndarray, listed: list) -> np.ndarray:
    """At most ``MAX_NAME_CHARS`` characters an id (about 5 us for 200 ids)."""
    if listed and max(map(len, listed)) > MAX_NAME_CHARS:
        i = next(i for i, item_id in enumerate(listed) if len(item_id) > MAX_NAME_CHARS)
        raise BadInput(f"candidates[{i}]: 'id' has {len(listed[i])} characters; at most {MAX_NAME_CHARS}")
    return ids


def _check_scores(raw: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if raw.dtype.kind in "fiu":
        scores = raw.astype(np.float64, copy=False)
    elif len(raw) and inferred(raw) in ("floating", "integer", "mixed-integer-float"):
        # numbers from JSON (Python floats and ints, no bools or strings): checked and converted in C
        scores = raw.astype(np.float64)
    else:
        scores = np.empty(len(raw), dtype=np.float64)
        for i, v in enumerate(raw):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise BadInput(f"candidates[{i}] (id {ids[i]!r}): 'score' must be a number, got {v!r}")
            scores[i] = float(v)
    finite = np.isfinite(scores)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise BadInput(f"candidates[{i}] (id {ids[i]!r}): 'score' must be a finite number, got {scores[i]!r}")
    return scores


def from_records(records: Sequence[Mapping[str, Any]], *, labels_allowed: bool = True) -> Candidates:
    """A list of dicts: ``{"id", "score", "source", "creator", "labels": {...}, **features}``."""
    if not isinstance(records, (list, tuple)):
        raise BadInput(f"candidates must be a list of objects or columns, got {type(records).__name__}")
    names: dict[str, None] = {}
    flat: list[dict[str, Any]] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise BadInput(f"candidates[{i}]: must be an object, got {type(rec).__name__}")
        row: dict[str, Any] = {}
        for key, value in rec.items():
            if key == "labels" or (isinstance(key, str) and key.startswith(LABEL_PREFIX)):
                if not labels_allowed:
                    raise BadInput(f"candidates[{i}]: {key!r} is not accepted: labels come from the label store, not the request")
                if value is None:
                    continue
                if not isinstance(value, Mapping):
                    raise BadInput(f"candidates[{i}]: 'labels' must be an object of label -> score")
                if key != "labels":
                    row[key] = value
                    continue
                for label, score in value.items():
                    row[LABEL_PREFIX + str(label)] = score
            else:
                row[key] = value
        for key in ("id", "score"):
            if key not in row:
                raise BadInput(f"candidates[{i}]: missing {key!r}")
        for key in row:
            names.setdefault(key, None)
        flat.append(row)
    columns: dict[str, Any] = {}
    for name in names:
        col = np.empty(len(flat), dtype=object)
        col[:] = [row.get(name) for row in flat]
        columns[name] = col
    if not flat:
        columns = {"id": np.empty(0, dtype=object), "score": np.empty(0)}
    cands = from_columns(columns, labels_allowed=labels_allowed)
    # label columns given inline must be numbers in [0, 1] or null
    for name, col in cands.columns.items():
        if name.startswith(LABEL_PREFIX):
            cands.columns[name] = label_column(name, col, cands.ids)
    return cands


def label_column(name: str, col: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A caller-supplied label column as float64 with NaN for absent; garbage is an error."""
    if not isinstance(col, np.ndarray):
        raise BadInput(f"candidates: label {name[len(LABEL_PREFIX):]!r} must be numbers in [0, 1], got a list column")
    if col.dtype.kind == "f":
        out = col.astype(np.float64, copy=False)
    else:
        out = np.empty(len(col))
        for i, v in enumerate(col):
            if v is None:
                out[i] = math.nan
            elif isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise BadInput(f"candidates[{i}] (id {ids[i]!r}): label {name[len(LABEL_PREFIX):]!r} must be a number in [0, 1], got {v!r}")
            else:
                out[i] = float(v)
    bad = ~np.isnan(out) & ((out < 0) | (out > 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadInput(f"candidates[{i}] (id {ids[i]!r}): label {name[len(LABEL_PREFIX):]!r} = {out[i]} is outside [0, 1]")
    return out


def coerce(candidates: Any, *, labels_allowed: bool = True) -> Candidates:
    """Any accepted form -> validated :class:`Candidates`. ``labels_allowed=False`` (what a
    service facing requests uses) refuses ``labels`` given with the candidates: labels come from
    the label store."""
    if isinstance(candidates, Candidates):
        if not labels_allowed and any(name.startswith(LABEL_PREFIX) for name in candidates.columns):
            raise BadInput("candidates: labels are not accepted with the candidates: they come from the label store")
        return candidates
    if isinstance(candidates, (list, tuple)):
        return from_records(candidates, labels_allowed=labels_allowed)
    cands = from_columns(candidates, labels_allowed=labels_allowed)
    for name, col in cands.columns.items():
        if name.startswith(LABEL_PREFIX):
            cands.columns[name] = label_column(name, col, cands.ids)
    return cands
