"""A candidate batch as columns, the input of both evaluators.

A batch holds the shared context (the request: user, surface, ...) and per-candidate values.
Columns are materialised lazily, per declared attribute and type, and cached for the batch so
that 25 rules reading the same label pay for it once. Missing values are explicit masks, never
NaN: NaN is a legitimate double value with IEEE semantics in both evaluators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# the C passes that type a column in one go (see _native.c; required)
from assay.policy import _native
from assay.policy.types import MISSING, AttrType, coerce, lookup


@dataclass
class ScalarColumn:
    data: np.ndarray  # (n,) int64 | float64 | bool | object(str)
    missing: np.ndarray | None  # (n,) bool, None when nothing is missing
    _factor: tuple[np.ndarray, np.ndarray] | None = None

    def factorize(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes, uniques) of a string column, computed once per batch: string predicates run
        on the few unique values and are gathered back by code."""
        if self._factor is None:
            if self.data.dtype.kind == "U":
                uniques, codes = np.unique(self.data, return_inverse=True)
            else:
                index: dict[str, int] = {}
                codes = np.fromiter((index.setdefault(v, len(index)) for v in self.data), np.int64, len(self.data))
                uniques = np.empty(len(index), dtype=object)
                uniques[:] = list(index)
            self._factor = (codes, uniques)
        return self._factor


def unusable_strings(array: np.ndarray) -> np.ndarray | None:
    """Rows of a fixed-width string array that coerce() would refuse: a lone surrogate, or a NUL
    inside the string (trailing NULs are padding and cannot be told apart). None when no row is
    refused, the usual case, which a whole-array test decides without per-row work."""
    n = len(array)
    if not n or not array.dtype.itemsize:
        return None
    array = np.ascontiguousarray(array)
    if _native.clean_strings(array, array.dtype.itemsize // 4):
        return None  # one C pass (vectorised) in the usual clean case
    # something is refused: which rows (the test oracle for clean_strings is in
    # tests/policy/policy_oracles.py)
    codes = array.view(np.uint32).reshape(n, -1)
    surrogates = bool(codes.max() >= 0xD800)
    zero = codes == 0
    # padding is a run of NULs at the end: a NUL followed by a non-NUL is an interior one
    interior = zero[:, :-1] > zero[:, 1:]  # no columns at width 1: nothing interior
    bad = interior.any(axis=1)
    if surrogates:
        bad |= ((codes >= 0xD800) & (codes <= 0xDFFF)).any(axis=1)
    return bad if bad.any() else None


def as_strings(values: list[str]) -> np.ndarray:
    """Strings as a fixed-width numpy array (fast C comparisons) unless a value ends in NUL,
    which fixed-width arrays would silently strip; then as Python objects."""
    if any(v.endswith("\x00") for v in values):
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values, dtype=str) if values else np.zeros(0, dtype="U1")


@dataclass
class ListColumn:
    flat: np.ndarray  # all elements of all rows, row after row
    row: np.ndarray  # (len(flat),) int64: which row each element belongs to
    offsets: np.ndarray  # (n+1,) int64
    missing: np.ndarray | None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class MapColumn:
    rows: list[dict[str, Any] | None]  # coerced maps (None when missing)
    missing: np.ndarray | None
    elem: str
    _keys: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def key(self, k: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, present) of one key across rows."""
        if self._keys is None:
            self._keys = {}
        if k not in self._keys:
            present = np.fromiter(((m is not None and k in m) for m in self.rows), bool, len(self.rows))
            fill = _FILL[self.elem]
            values = [m[k] if (m is not None and k in m) else fill for m in self.rows]
            array = as_strings(values) if self.elem == "string" else np.asarray(values, dtype=_DTYPE[self.elem])
            self._keys[k] = (array, present)
        return self._keys[k]

    def sizes(self) -> np.ndarray:
        return np.fromiter((len(m) if m is not None else 0 for m in self.rows), np.int64, len(self.rows))


@dataclass
class ListValues:
    """The fast input form of a list column: all elements flat, plus row offsets (n+1), the way
    Arrow lays out a list array. ``Batch.from_columns`` also accepts a ``pyarrow.ListArray``."""

    flat: np.ndarray
    offsets: np.ndarray
    clean: bool = False  # flat holds only str values coerce() accepts (no NUL, no lone surrogate)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> list:
        return self.flat[self.offsets[i] : self.offsets[i + 1]].tolist()

    @classmethod
    def from_lists(cls, rows: list[list]) -> ListValues:
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.asarray([x for r in rows for x in r]), offsets)


def inferred(values: np.ndarray) -> str:
    """pandas' element type inference, in C ("string", "floating", "integer", "mixed", ...)."""
    from pandas.api.types import infer_dtype

    return infer_dtype(values, skipna=False)


def clean_str_objects(values: list) -> bool:
    """Every value is a ``str`` coerce() accepts (no NUL, no lone surrogate): such a column (what
    JSON decodes to) is read as it is, with no fixed-width copy. One C pass (its oracle is in
    tests/policy/policy_oracles.py)."""
    return _native.clean_str_objects(values)


def one_type(values: list) -> type | None:
    """The exact type every value has (None when they differ, or for no values). One C pass."""
    return _native.one_type(values)


def string_lists(rows: list) -> tuple[ListValues, np.ndarray | None] | None:
    """Rows of Python string lists (None = missing; what JSON decodes to) as :class:`ListValues`
    (the flat ``str`` values, checked clean, plus offsets) and a missing mask (None when no row
    is missing). None when any row is not a clean list of ``str`` (a bare string, a number, a
    None element, a NUL, a lone surrogate): the per-row path then decides, and marks such rows
    missing. One C pass (its oracle is in tests/policy/policy_oracles.py)."""
    n = len(rows)
    offsets, null_bytes = np.empty(n + 1, dtype=np.int64), np.empty(n, dtype=np.uint8)
    flat = _native.str_lists(rows, offsets, null_bytes)
    if flat is None:
        return None
    nulls = null_bytes.view(bool)
    values = np.empty(len(flat), dtype=object)
    values[:] = flat
    return ListValues(values, offsets, clean=True), (nulls if nulls.any() else None)


_AS = {("double", float): np.float64, ("double", int): np.float64, ("int", int): np.int64, ("bool", bool): np.bool_}


def typed_objects(values: list, kind: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A column of Python objects (JSON values) as the declared scalar type, when every value
    that is not None has one exact type that coerce() takes as is: ``str`` (clean, kept as the
    objects), ``float`` or ``int`` for double, ``int`` within int64 for int, ``bool`` for bool.
    Returns (data, missing) with None values missing; None when anything else is there (a bool
    where a number is wanted, a mixture, an int beyond int64...): the per-row path decides."""
    n = len(values)
    t = one_type(values)
    absent = None
    rest = values
    if t is None or t is type(None):
        absent = np.fromiter((v is None for v in values), dtype=bool, count=n)
        if not absent.any():
            return None
        rest = [v for v in values if v is not None]
        t = one_type(rest)
        if t is None:
            if rest:
                return None
            t = {"string": str, "int": int, "double": float, "bool": bool}[kind]  # all absent
    if kind == "string":
        if t is not str or not clean_str_objects(rest):
            return None
        data = np.empty(n, dtype=object)
        if absent is None:
            data[:] = values
        else:
            data[:] = ""
            data[~absent] = rest
        return data, absent
    dtype = _AS.get((kind, t))
    if dtype is None:
        return None
    try:
        typed = np.array(rest, dtype=dtype)
    except (OverflowError, ValueError, TypeError):
        return None
    if absent is None:
        return typed, None
    data = np.zeros(n, dtype=dtype)
    data[~absent] = typed
    return data, absent


def arrow_values(arr: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A pyarrow array of scalars as numpy (numbers without nulls as they are; anything else as
    Python objects, None for null) and its null mask: nulls are missing, never NaN."""
    if hasattr(arr, "combine_chunks"):
        arr = arr.combine_chunks()
    import pyarrow as pa

    if not arr.null_count and (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type)):
        return arr.to_numpy(zero_copy_only=False), None
    out = np.empty(len(arr), dtype=object)
    out[:] = arr.to_pylist()
    nulls = np.asarray(arr.is_null(), dtype=bool) if arr.null_count else None
    return out, nulls


def is_arrow_list(col: Any) -> bool:
    """A pyarrow list, large-list or map array (or chunked one): what ``Batch.from_columns`` keeps
    as Arrow. Asked of the Arrow type: other Arrow arrays (strings, numbers) have offsets or
    buffers too, and are not lists."""
    if type(col) is np.ndarray or not type(col).__module__.startswith("pyarrow"):
        return False
    import pyarrow as pa

    t = getattr(col, "type", None)
    return isinstance(t, pa.DataType) and (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_map(t))


def list_values_from_arrow(arr: Any) -> tuple[ListValues, np.ndarray]:
    """A pyarrow list array as :class:`ListValues` and its null mask, without a Python object per
    row: offsets are Arrow's own, and only the flat values become numpy strings. Values that a
    fixed-width array cannot hold exactly (a null element, a NUL) stay Python objects, which the
    vectorised path declines and the per-row path marks missing, as for any ill-typed row."""
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    dtype, size = (np.int32, 4) if type(arr) is pa.ListArray else (np.int64, 8) if type(arr) is pa.LargeListArray else (None, 0)
    buffer = arr.buffers()[1] if size and n else None
    if buffer is not None:  # read in place: Arrow's offsets array, then numpy's copy of it, cost more
        offsets = np.frombuffer(buffer, dtype=dtype, count=n + 1, offset=arr.offset * size).astype(np.int64)
    else:
        offsets = np.asarray(arr.offsets, dtype=np.int64)
    start, end = int(offsets[0]), int(offsets[-1])
    values = arr.values
    if start or end != len(values):
        values = values.slice(start, end - start)
    if start:
        offsets = offsets - start
    nulls = np.asarray(arr.is_null(), dtype=bool) if arr.null_count else np.zeros(n, dtype=bool)
    if not len(values):
        return ListValues(np.zeros(0, dtype="U1"), offsets), nulls
    flat = values.to_numpy(zero_copy_only=False)
    if (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)) and not values.null_count \
            and "\x00" not in "".join(flat.tolist()):
        # Arrow strings are valid UTF-8, so they hold no lone surrogate either: every value is one
        # coerce() accepts, kept as the Python strings Arrow made (no fixed-width copy)
        return ListValues(flat, offsets, clean=True), nulls
    return ListValues(flat, offsets), nulls


def _element_rows(offsets: np.ndarray, n_elements: int) -> np.ndarray:
    """The row of each flat element. Few elements (the usual sparse tags) are placed by binary
    search in the offsets; many by repeating each row number its length (linear in rows)."""
    n = len(offsets) - 1
    if n_elements * 8 < n:
        return np.searchsorted(offsets, np.arange(n_elements, dtype=np.int64), side="right") - 1
    return np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))


_DTYPE = {"int": np.int64, "double": np.float64, "bool": np.bool_, "string": object}
_FILL = {"int": 0, "double": 0.0, "bool": False, "string": ""}
class Batch:
    """Candidates for one request. Build with :meth:`from_records` or :meth:`from_columns`."""

    def __init__(self, n: int, *, context: dict[str, Any] | None = None, items: list[dict] | None = None,
                 item_root: str = "item", columns: dict[str, Any] | None = None,
                 missing: dict[str, Any] | None = None, scalars: dict[str, Any] | None = None,
                 clean: frozenset[str] = frozenset()):
        if n < 0:
            raise ValueError("a batch cannot have a negative size")
        self.n = n
        self.context = context or {}
        self.items = items
        self.item_root = item_root
        self.columns = columns or {}
        self.missing_masks = missing or {}
        self.scalars = scalars or {}
        self._cache: dict[str, Any] = {}
        self.memo: dict[Any, Any] = {}  # per-batch memo of shared sub-expressions
        self.clean = clean  # string columns (fixed-width or str objects) known to hold only values coerce() accepts

    @classmethod
    def from_records(cls, context: dict[str, Any], items: list[dict[str, Any]], item_root: str = "item") -> Batch:
        """``context``: shared values as nested dicts, e.g. ``{"request": {"user": {"age": 15}}}``;
        ``items``: one nested dict per candidate, read under ``item.`` (e.g. ``{"labels": {...}}``)."""
        return cls(len(items), context=context, items=list(items), item_root=item_root)

    @classmethod
    def from_columns(cls, n: int, columns: dict[str, Any] | None = None, missing: dict[str, Any] | None = None,
                     scalars: dict[str, Any] | None = None, clean: frozenset[str] = frozenset()) -> Batch:
        """Columns keyed by full attribute name (``item.labels.mature``) as numpy arrays or lists
        (None = missing); ``missing`` gives explicit masks; ``scalars`` are shared values;
        ``clean`` names string columns the caller has checked already, which are then not
        scanned again: fixed-width ones (no NUL before a code point, no lone surrogate) and object
        arrays of ``str`` (no NUL, no lone surrogate, every value a str)."""
        columns = dict(columns or {})
        missing = dict(missing or {})
        for name, col in columns.items():
            if type(col) is np.ndarray:  # the usual case: nothing to convert
                if len(col) != n:
                    raise ValueError(f"column {name!r} has {len(col)} values for a batch of {n}")
                continue
            if type(col).__module__.startswith("pyarrow") and not is_arrow_list(col) and hasattr(col, "to_pylist"):
                col, nulls = arrow_values(col)  # scalars: numpy, their nulls missing
                columns[name] = col
                if nulls is not None:
                    missing[name] = nulls | np.asarray(missing.get(name, False), dtype=bool)
            if is_arrow_list(col):
                # kept as Arrow until a path needs ListValues (the C evaluator reads a list of
                # strings in place); its null rows are missing from the start
                if hasattr(col, "combine_chunks"):
                    col = columns[name] = col.combine_chunks()
                if col.null_count:
                    nulls = np.asarray(col.is_null(), dtype=bool)
                    missing[name] = nulls | np.asarray(missing.get(name, False), dtype=bool)
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} values for a batch of {n}")
        return cls(n, columns=columns, missing=missing, scalars=scalars, clean=clean)

    # -- per-row access, used by the reference evaluator ----------------------------------------
    def row_value(self, name: str, t: AttrType, i: int) -> tuple[bool, Any]:
        raw = self._raw(name, i)
        if raw is MISSING:
            return False, None
        if isinstance(raw, np.generic):
            raw = raw.item()
        if isinstance(raw, np.ndarray):
            raw = raw.tolist()
        return coerce(raw, t)

    def list_values(self, name: str) -> Any:
        """The column, with an Arrow list array turned into :class:`ListValues` (once) for the
        paths that read Python values."""
        col = self.columns.get(name)
        if is_arrow_list(col):
            col = self.columns[name] = list_values_from_arrow(col)[0]
        return col

    def flatten_string_lists(self, name: str) -> bool:
        """A list(string) column given as rows of Python lists (what JSON decodes to) or as Arrow,
        turned into :class:`ListValues` in place (once; its null rows become missing). True when
        the column is ListValues now; False when a row is not a clean list of strings (the per-row
        path then decides)."""
        col = self.list_values(name)
        if isinstance(col, ListValues):
            return True
        if not isinstance(col, (list, np.ndarray)):
            return False
        converted = string_lists(col if isinstance(col, list) else col.tolist())
        if converted is None:
            return False
        lists, nulls = converted
        self.columns[name] = lists
        if nulls is not None:
            prior = self.missing_masks.get(name)
            self.missing_masks[name] = nulls if prior is None else (np.asarray(prior, dtype=bool) | nulls)
        return True

    def _raw(self, name: str, i: int) -> Any:
        if name in self.scalars:
            return self.scalars[name]
        if name in self.columns:
            mask = self.missing_masks.get(name)
            if mask is not None and bool(mask[i]):
                return MISSING
            return self.list_values(name)[i]
        parts = name.split(".")
        if self.items is not None and parts[0] == self.item_root:
            return lookup(self.items[i], parts[1:])
        return lookup(self.context, parts)

    # -- whole columns, used by the vectorised evaluator ----------------------------------------
    def is_shared(self, name: str) -> bool:
        """True when the attribute has one value for the whole batch (request context)."""
        if name in self.scalars:
            return True
        if name in self.columns:
            return False
        return self.items is None or name.split(".")[0] != self.item_root

    def shared(self, name: str, t: AttrType) -> tuple[bool, Any]:
        """The coerced value of a shared attribute, read once per batch."""
        key = f"={name}:{t.signature}"
        if key not in self._cache:
            if name in self.scalars:
                raw = self.scalars[name]
                raw = raw.item() if isinstance(raw, np.generic) else raw
                self._cache[key] = coerce(raw, t)
            elif self.items is None:
                self._cache[key] = (False, None)
            else:
                raw = lookup(self.context, name.split("."))
                self._cache[key] = (False, None) if raw is MISSING else coerce(raw, t)
        return self._cache[key]

    @staticmethod
    def column_key(name: str, t: AttrType) -> str:
        return f"{name}:{t.signature}"

    def column(self, name: str, t: AttrType, key: str | None = None) -> ScalarColumn | ListColumn | MapColumn:
        """The attribute as a typed column, built on first use and cached for the batch (``key``:
        :meth:`column_key`, when the caller has it already)."""
        key = key or f"{name}:{t.signature}"
        col = self._cache.get(key)
        if col is None:
            col = self._build(name, t)
            self._cache[key] = col
        return col

    def _build(self, name: str, t: AttrType):
        n = self.n
        if t.kind in _DTYPE:
            fast = self._fast_scalar(name, t)
            if fast is not None:
                return fast
        elif t.kind == "list":
            if t.elem == "string":
                self.flatten_string_lists(name)
            else:
                self.list_values(name)
            if isinstance(self.columns.get(name), ListValues):
                fast = self._fast_list(name, t)
                if fast is not None:
                    return fast
        values = [self.row_value(name, t, i) for i in range(n)]
        miss = np.fromiter((not ok for ok, _ in values), bool, n)
        missing = miss if miss.any() else None
        if t.kind in _DTYPE:
            fill = _FILL[t.kind]
            if t.kind == "string":
                return ScalarColumn(as_strings([v if ok else fill for ok, v in values]), missing)
            return ScalarColumn(np.asarray([v if ok else fill for ok, v in values], dtype=_DTYPE[t.kind]), missing)
        if t.kind == "list":
            lengths = np.fromiter((len(v) if ok else 0 for ok, v in values), np.int64, n)
            offsets = np.zeros(n + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            flat_list = [x for ok, v in values if ok for x in v]
            if t.elem == "string":
                flat = as_strings(flat_list)
            else:
                flat = np.asarray(flat_list, dtype=_DTYPE[t.elem]) if flat_list else np.zeros(0, _DTYPE[t.elem])
            row = np.repeat(np.arange(n, dtype=np.int64), lengths)
            return ListColumn(flat, row, offsets, missing)
        return MapColumn([v if ok else None for ok, v in values], missing, t.elem)

    def _fast_list(self, name: str, t: AttrType) -> ListColumn | None:
        lv: ListValues = self.columns[name]
        flat, offsets = np.asarray(lv.flat), np.asarray(lv.offsets, dtype=np.int64)
        kind = flat.dtype.kind
        ok = (t.elem == "double" and kind in "fiu") or (t.elem == "int" and kind == "i") or (
            t.elem == "bool" and kind == "b") or (t.elem == "string" and (kind == "U" or lv.clean)) or flat.size == 0
        if not ok:
            return None
        if t.elem == "string":
            if not lv.clean and unusable_strings(flat) is not None:
                return None  # rare: take the per-row path, which marks those rows missing
        else:
            flat = flat.astype(_DTYPE[t.elem], copy=False)
        mask = self.missing_masks.get(name)
        mask = None if mask is None else np.asarray(mask, dtype=bool)
        if mask is not None and mask.any():
            # rows that are missing contribute no elements
            lengths = np.diff(offsets)
            keep = np.repeat(~mask, lengths)
            flat = flat[keep]
            lengths = np.where(mask, 0, lengths)
            offsets = np.zeros(self.n + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
        else:
            mask = None
        return ListColumn(flat, _element_rows(offsets, len(flat)), offsets, mask)

    def _fast_scalar(self, name: str, t: AttrType) -> ScalarColumn | None:
        """Numpy arrays of the right dtype pass through without per-row checks."""
        n = self.n
        if name in self.scalars:
            ok, v = coerce(self.scalars[name].item() if isinstance(self.scalars[name], np.generic) else self.scalars[name], t)
            if not ok:
                return ScalarColumn(np.full(n, _FILL[t.kind], dtype=_DTYPE[t.kind]), np.ones(n, bool))
            data = np.empty(n, dtype=_DTYPE[t.kind])
            data[:] = v
            return ScalarColumn(data, None)
        col = self.columns.get(name)
        if isinstance(col, list):
            col = np.fromiter(col, dtype=object, count=len(col))
        if not isinstance(col, np.ndarray) or col.ndim != 1:
            return None
        mask = self.missing_masks.get(name)
        mask = None if mask is None else np.asarray(mask, dtype=bool)
        if mask is not None and not mask.any():
            mask = None
        kind = col.dtype.kind
        if kind == "O" and not (t.kind == "string" and name in self.clean):
            # Python objects (what JSON decodes to): typed in C passes when they are of one type
            typed = typed_objects(col.tolist(), t.kind)
            if typed is None:
                return None  # the per-row path decides, value by value
            data, absent = typed
            return ScalarColumn(data, absent if mask is None else (mask if absent is None else mask | absent))
        if t.kind == "double" and kind == "f":
            return ScalarColumn(col.astype(np.float64, copy=False), mask)
        if t.kind == "double" and kind in "iu":
            return ScalarColumn(col.astype(np.float64), mask)
        if t.kind == "int" and kind == "i":
            return ScalarColumn(col.astype(np.int64, copy=False), mask)
        if t.kind == "bool" and kind == "b":
            return ScalarColumn(col, mask)
        if t.kind == "string" and kind == "O" and name in self.clean:
            return ScalarColumn(col, mask)  # str objects the caller has checked (JSON strings)
        if t.kind == "string" and kind == "U":
            # values coerce() refuses count as missing here too
            bad = None if name in self.clean else unusable_strings(col)
            if bad is not None:
                mask = bad if mask is None else (mask | bad)
            return ScalarColumn(col, mask)
        return None
