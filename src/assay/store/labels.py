"""Label stores: the content labels (scores in [0, 1]) that classifiers write at ingestion and the
real-time guard reads on the serving path.

Models never run while serving. A classifier labels an item once, when it is ingested, and writes
``{label: score}`` here; the guard fetches the labels of a whole candidate batch in one call and
applies policy rules to them. This module lives in the ``store`` foundation so that classifiers
(a foundation) can write labels without importing the guard (an engine).

Two real backends share one interface:

- :class:`InMemoryLabelStore` — one (items x labels) numpy matrix plus a hash table over the ids,
  loaded from Parquet. The fastest read path: a whole batch's ids probed in one call (C, with a
  numpy twin) and one row gather.
- :class:`RedisLabelStore` — one Redis hash per item, read with a pipelined batch of ``HMGET``
  (one round trip per batch), with a per-item label version and freshness timestamp.

A read returns a :class:`LabelBatch`: one float column per requested label, a ``present`` mask
per label (absent, stale or garbage values are *not present*, never a made-up number), per-item
versions and freshness. A store that is down or slow raises :class:`LabelStoreError`; callers on
the serving path (the guard) turn that into the fail-closed path, never into a crash.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from assay.errors import BadInput, Unavailable
from assay.store import _native  # the C batch id lookup and row gather (src/assay/store/_native.c)

ID_COLUMN = "item_id"
VERSION_COLUMN = "label_version"
FRESHNESS_COLUMN = "labeled_at"  # unix seconds
_META_COLUMNS = {ID_COLUMN, VERSION_COLUMN, FRESHNESS_COLUMN}


class LabelStoreError(Unavailable):
    """The label store could not answer (down, timed out, protocol error)."""

    def __init__(self, message: str, *, timeout: bool = False, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.timeout = timeout


@dataclass(frozen=True)
class LabelBatch:
    """Labels of one candidate batch, column per label, aligned with the requested ids.

    ``values[name][i]`` is NaN wherever ``present[name][i]`` is False. ``versions[i]`` is the
    labeler version that wrote item ``i`` ("" when unknown or absent) and ``freshness[i]`` the
    unix time it was labelled (NaN when unknown). ``garbage`` counts values that were present in the
    store but unusable (not a number, outside [0, 1]); they are reported as not present.
    """

    item_ids: tuple[str, ...]
    values: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    versions: np.ndarray
    freshness: np.ndarray
    garbage: int = 0
    stale: int = 0
    complete: bool = False  # True: every requested label is present for every item (masks all true)
    # True where this module built the batch and every column is a float64 (values) or bool
    # (present) ndarray of one value per item: a reader need not convert or check them
    columns_checked: ClassVar[bool] = False

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def any_present(self) -> np.ndarray:
        """Items with at least one requested label (an item with none is *unlabeled*)."""
        if not self.present:
            return np.zeros(self.n, dtype=bool)
        out = np.zeros(self.n, dtype=bool)
        for mask in self.present.values():
            out |= mask
        return out


class _GatheredBatch(LabelBatch):
    """A :class:`LabelBatch` from the in-memory table, whose ``versions`` are decoded from the
    table's version codes on first read. The guard never reads them, and gathering a batch's
    worth of Python strings is about a tenth of the whole read. Everything else is as given, and
    its columns are rows of the gather's float64 and bool blocks (``columns_checked``)."""

    columns_checked: ClassVar[bool] = True

    def __init__(self, item_ids: tuple[str, ...], values: dict[str, np.ndarray], present: dict[str, np.ndarray],
                 codes: np.ndarray, names: np.ndarray, freshness: np.ndarray, stale: int, complete: bool):
        # a frozen dataclass: its fields are set once, here, in one update
        self.__dict__.update(item_ids=item_ids, values=values, present=present, freshness=freshness, garbage=0,
                             stale=stale, complete=complete, _version_codes=(codes, names))

    def __getattr__(self, name: str) -> Any:  # only reached for an attribute not yet set
        if name != "versions":
            raise AttributeError(name)
        codes, names = self.__dict__["_version_codes"]
        versions = names.take(codes.astype(np.intp))  # code -1 (an unknown item) indexes ""
        object.__setattr__(self, "versions", versions)
        return versions


@runtime_checkable
class LabelStore(Protocol):
    """What the guard reads and the classifiers write."""

    def get(self, item_ids: Sequence[str], label_names: Sequence[str], *, timeout_s: float | None = None) -> LabelBatch:
        """Labels of ``item_ids``; raises :class:`LabelStoreError` when the store cannot answer."""
        ...

    def put(self, item_ids: Sequence[str], labels: Mapping[str, Sequence[float]], version: str, *, labeled_at: float | None = None) -> int:
        """Write ``labels[name][i]`` for ``item_ids[i]`` under labeler ``version``; returns items written."""
        ...


def _check_put(item_ids: Sequence[str], labels: Mapping[str, Sequence[float]], version: str) -> dict[str, np.ndarray]:
    """Validate a write before anything is applied (nothing half-written on bad input)."""
    if not isinstance(version, str) or not version:
        raise BadInput("label version must be a non-empty string (the labeler's version)")
    n = len(item_ids)
    if len(set(item_ids)) != n:
        raise BadInput("label write has duplicate item ids")
    for i, item_id in enumerate(item_ids):
        if not isinstance(item_id, str) or not item_id:
            raise BadInput(f"label write: item id at position {i} must be a non-empty string, got {item_id!r}")
    columns: dict[str, np.ndarray] = {}
    for name, scores in labels.items():
        if not isinstance(name, str) or not name.isidentifier() or name in _META_COLUMNS:
            raise BadInput(f"label name {name!r} must be an identifier and not one of {sorted(_META_COLUMNS)}")
        try:
            arr = np.asarray(scores, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise BadInput(f"label {name!r}: scores must be numbers ({e})") from e
        if arr.shape != (n,):
            raise BadInput(f"label {name!r}: {arr.shape[0] if arr.ndim else 'a scalar'} scores for {n} items")
        bad = ~np.isnan(arr) & ((arr < 0.0) | (arr > 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BadInput(f"label {name!r}: score {float(arr[i])} for item {item_ids[i]!r} is outside [0, 1]")
        columns[name] = arr
    return columns


@dataclass(frozen=True)
class _IdKeys:
    """An open-addressing hash table over the item ids, for looking up a whole candidate batch at
    once. A dict lookup per id is a chain of dependent cache misses (table slot, entry, the stored
    string, the row number's int object) plus interpreter work per id, which dominates a
    1,000-id read once the catalogue outgrows the cache. Every hit is confirmed by comparing the
    ids, so a match is exact.

    The key is each id's own cached str hash (SipHash with the process's secret, so ids cannot be
    chosen to collide) and the whole batch is probed in one C call (``assay.store._native``); no
    library looks up a batch of strings without a Python object per value. The dict beside it
    (``_Table.index``) is the oracle the tests compare with, and what answers where the table
    cannot be exact."""

    shift: int  # a key's slot is its top bits: key >> shift
    slots: np.ndarray  # (slots, 2) uint64: key, table row + 1 (0: empty), one cache line per probe
    stored: list[str]  # the ids, in table row order

    @classmethod
    def build(cls, ids: list[str]) -> _IdKeys | None:
        if not ids or any(type(i) is not str for i in ids):
            return None
        placed = _slot_table(np.fromiter(map(_id_hash, ids), dtype=np.int64, count=len(ids)).view(np.uint64))
        return cls(*placed, stored=list(ids)) if placed else None

    def rows_of(self, ids: list[str], upcoming: np.ndarray | None = None) -> np.ndarray | None:
        """Row of each id (-1 when absent); None when the ids are not all strings.
        ``upcoming``: a C-ordered float64 matrix whose rows are read next; the C lookup asks for
        each found row's cache lines as soon as it has it (a hint)."""
        rows = np.empty(len(ids), dtype=np.int64)
        keyed = None if _id_hash is hash else _id_hash
        hint = () if upcoming is None else (upcoming, upcoming.shape[1])
        return rows if _native.lookup(self.slots, self.shift, self.stored, ids, rows, keyed, *hint) else None


def _slot_table(keys: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(shift, slots): the keys placed by linear probing from slot ``key >> shift`` in a table at
    most half full; None when two keys are equal (the dict answers instead)."""
    if len(np.unique(keys)) != len(keys):
        return None
    bits = max(int(2 * len(keys) - 1).bit_length(), 10)
    size, shift = 1 << bits, 64 - bits
    table = np.zeros((size, 2), dtype=np.uint64)
    pending = np.arange(len(keys), dtype=np.int64)
    slots = (keys >> np.uint64(shift)).astype(np.int64)
    while len(pending):  # one round per probe distance
        free = np.flatnonzero(table[slots, 1] == 0)
        # of the pending keys that reach the same free slot, the first takes it
        taken, first = np.unique(slots[free], return_index=True)
        placed = pending[free[first]]
        table[taken, 0] = keys[placed]
        table[taken, 1] = placed.astype(np.uint64) + np.uint64(1)
        left = np.ones(len(pending), dtype=bool)
        left[free[first]] = False
        pending, slots = pending[left], (slots[left] + 1) & (size - 1)
    return shift, table


_id_hash = hash  # the native table's key function (a module attribute so tests can force collisions)


class InMemoryLabelStore:
    """Columnar labels in process memory: numpy arrays, a hash table over the ids for batch reads
    and an id -> row dict for everything else.

    Reads are lock-free: every write builds new arrays and swaps one reference (copy-on-write), so a
    reader always sees one consistent table. Writes are meant for bulk loads (Parquet) and tests;
    stream-rate writes belong in Redis.
    """

    @dataclass(frozen=True)
    class _Table:
        ids: np.ndarray  # object array of str
        index: dict[str, int]
        values: dict[str, np.ndarray]  # float64, NaN = absent
        versions: np.ndarray  # object
        freshness: np.ndarray  # float64

        def matrix(self) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
            """All label columns, then freshness and a version code, as one (items x columns)
            C-ordered array built once per table version: a batch read is one row gather, and
            everything about an item shares a cache line or two (a column per array would cost
            a cache miss per column per item on a catalogue larger than the cache). Returns the
            matrix, label -> column, and the version names the codes index (then "", which code
            -1 indexes)."""
            cached = self.__dict__.get("_matrix")
            if cached is None:
                names = sorted(self.values)
                import pandas as pd

                codes, version_names = pd.factorize(self.versions, use_na_sentinel=False)  # exact values, no NUL stripping
                version_names = np.asarray(version_names, dtype=object)
                stacked = np.empty((len(self.ids), len(names) + 2))
                for k, name in enumerate(names):
                    stacked[:, k] = self.values[name]
                stacked[:, len(names)] = self.freshness
                stacked[:, len(names) + 1] = codes
                # the version names, then "" for an unknown item (code -1 indexes it)
                cached = (stacked, {n: k for k, n in enumerate(names)}, np.append(version_names, ""))
                object.__setattr__(self, "_matrix", cached)
            return cached

        def columns_of(self, label_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
            """The requested labels the table has, in request order, and their matrix columns;
            kept per table version for the few label lists a service asks for."""
            plans = self.__dict__.get("_plans")
            if plans is None:
                plans = {}
                object.__setattr__(self, "_plans", plans)
            key = tuple(label_names)
            plan = plans.get(key)
            if plan is None:
                label_col = self.matrix()[1]
                known = [name for name in key if name in label_col]
                plan = (known, np.array([label_col[k] for k in known], dtype=np.int64))
                if len(plans) >= 64:  # a caller asking for ever new lists: keep the cache bounded
                    plans.clear()
                plans[key] = plan
            return plan

        def id_keys(self) -> _IdKeys | None:
            """The hash table over the ids, built once per table version (None where it cannot be
            exact: two ids sharing a key); reads then use the dict."""
            if "_id_keys" not in self.__dict__:
                object.__setattr__(self, "_id_keys", _IdKeys.build(self.ids.tolist()))
            return self.__dict__["_id_keys"]

        def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
            """Row of each id, -1 when absent. A batch of string ids is looked up as one array
            (:class:`_IdKeys`), whose C lookup also asks for the rows of the matrix the read
            gathers next; anything else by dict lookups driven by map() (no loop body)."""
            ids = item_ids if type(item_ids) is list else item_ids.tolist() if isinstance(item_ids, np.ndarray) else list(item_ids)
            keys = self.id_keys() if ids else None
            if keys is not None:
                rows = keys.rows_of(ids, self.matrix()[0])
                if rows is not None:
                    return rows
            return np.fromiter(map(self.index.get, ids, itertools.repeat(-1)), dtype=np.int64, count=len(ids))

    def __init__(self, *, max_age_s: float | None = None, clock=time.time):
        self._table = self._Table(np.empty(0, dtype=object), {}, {}, np.empty(0, dtype=object), np.empty(0))
        self._write_lock = threading.Lock()
        self.max_age_s = max_age_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._table.ids)

    @property
    def label_names(self) -> list[str]:
        return sorted(self._table.values)

    # -- reads ---------------------------------------------------------------------------------
    def get(self, item_ids: Sequence[str], label_names: Sequence[str], *, timeout_s: float | None = None) -> LabelBatch:
        table = self._table  # one consistent snapshot
        rows = table.rows_of(item_ids)
        n = len(rows)
        if len(table.ids):  # one C pass: labels transposed, presence, freshness and version codes
            matrix, label_col, version_names = table.matrix()
            known, cols = table.columns_of(label_names)
            block, ok, meta = np.empty((len(known), n)), np.empty((len(known), n), dtype=bool), np.empty((2, n))
            all_present = _native.gather(matrix, matrix.shape[1], cols, rows, block, ok, len(label_col), meta)
            freshness = meta[0]
            stale = 0
            if self.max_age_s is not None:
                age_ok = (self._clock() - freshness) <= self.max_age_s
                stale = int(((rows >= 0) & ~age_ok).sum())
                if not age_ok.all():
                    ok &= age_ok
                    block[~ok] = np.nan
                    all_present = False
            values, present = dict(zip(known, block, strict=True)), dict(zip(known, ok, strict=True))
            if len(known) != len(label_names):
                for name in label_names:
                    if name not in values:
                        values[name] = np.full(n, np.nan)
                        present[name] = np.zeros(n, dtype=bool)
            complete = bool(known) and len(known) == len(label_names) and bool(all_present)
            ids = tuple(item_ids.tolist() if isinstance(item_ids, np.ndarray) else item_ids)
            return _GatheredBatch(ids, values, present, meta[1], version_names, freshness, stale, complete)
        # an empty store: nothing is present
        values = {name: np.full(n, np.nan) for name in label_names}
        present = {name: np.zeros(n, dtype=bool) for name in label_names}
        ids = tuple(item_ids.tolist() if isinstance(item_ids, np.ndarray) else item_ids)
        return LabelBatch(ids, values, present, np.full(n, "", dtype=object), np.full(n, np.nan), 0, 0, False)

    # -- writes --------------------------------------------------------------------------------
    def put(self, item_ids: Sequence[str], labels: Mapping[str, Sequence[float]], version: str, *, labeled_at: float | None = None) -> int:
        columns = _check_put(item_ids, labels, version)
        ts = self._clock() if labeled_at is None else float(labeled_at)
        with self._write_lock:
            old = self._table
            index = dict(old.index)
            new_ids = [i for i in item_ids if i not in index]
            n_old, n_new = len(old.ids), len(old.ids) + len(new_ids)
            for k, item_id in enumerate(new_ids):
                index[item_id] = n_old + k
            ids = np.concatenate([old.ids, np.array(new_ids, dtype=object)]) if new_ids else old.ids
            rows = np.fromiter((index[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
            values = {}
            for name in set(old.values) | set(columns):
                col = np.full(n_new, np.nan)
                if name in old.values:
                    col[:n_old] = old.values[name]
                if name in columns:
                    col[rows] = columns[name]
                values[name] = col
            versions = np.concatenate([old.versions, np.full(len(new_ids), "", dtype=object)])
            versions[rows] = version
            freshness = np.concatenate([old.freshness, np.full(len(new_ids), np.nan)])
            freshness[rows] = ts
            table = self._Table(ids, index, values, versions, freshness)
            table.matrix()
            table.id_keys()
            self._table = table
        return len(item_ids)

    # -- Parquet -------------------------------------------------------------------------------
    @classmethod
    def from_parquet(cls, path: str | Path, *, max_age_s: float | None = None, version: str | None = None, clock=time.time) -> InMemoryLabelStore:
        """Load a label table: an ``item_id`` string column, one float column per label (null =
        absent), optional ``label_version`` and ``labeled_at`` (unix seconds) columns."""
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise BadInput(f"label file {path} does not exist")
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise BadInput(f"{path}: not a readable Parquet file ({e})") from e
        return cls.from_arrow(table, source=str(path), max_age_s=max_age_s, version=version, clock=clock)

    @classmethod
    def from_arrow(cls, table: Any, *, source: str = "table", max_age_s: float | None = None, version: str | None = None, clock=time.time) -> InMemoryLabelStore:
        import pyarrow as pa

        if ID_COLUMN not in table.column_names:
            raise BadInput(f"{source}: no {ID_COLUMN!r} column (columns: {table.column_names})")
        ids = table.column(ID_COLUMN).to_pylist()
        for i, item_id in enumerate(ids):
            if not isinstance(item_id, str) or not item_id:
                raise BadInput(f"{source}: row {i}: {ID_COLUMN} must be a non-empty string, got {item_id!r}")
        if len(set(ids)) != len(ids):
            raise BadInput(f"{source}: duplicate {ID_COLUMN} values")
        n = len(ids)
        values: dict[str, np.ndarray] = {}
        for name in table.column_names:
            if name in _META_COLUMNS:
                continue
            col = table.column(name)
            if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
                raise BadInput(f"{source}: label column {name!r} has type {col.type}; labels are numbers in [0, 1]")
            arr = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
            bad = ~np.isnan(arr) & ((arr < 0.0) | (arr > 1.0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise BadInput(f"{source}: row {i}: label {name!r} = {arr[i]} is outside [0, 1]")
            values[name] = arr
        meta_version = (table.schema.metadata or {}).get(b"label_version", b"").decode() if table.schema.metadata else ""
        if VERSION_COLUMN in table.column_names:
            versions = np.array([v or "" for v in table.column(VERSION_COLUMN).to_pylist()], dtype=object)
        else:
            versions = np.full(n, version or meta_version, dtype=object)
        if FRESHNESS_COLUMN in table.column_names:
            col = table.column(FRESHNESS_COLUMN)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("us")).cast(pa.int64())
                freshness = col.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
            else:
                freshness = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            freshness = np.full(n, np.nan)
        store = cls(max_age_s=max_age_s, clock=clock)
        store._table = cls._Table(np.array(ids, dtype=object), {item_id: k for k, item_id in enumerate(ids)}, values, versions, freshness)
        store._table.matrix()  # built before the first read, which is on the serving path
        store._table.id_keys()
        return store

    def to_parquet(self, path: str | Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = self._table
        cols: dict[str, Any] = {ID_COLUMN: pa.array(list(t.ids), type=pa.string())}
        for name, col in sorted(t.values.items()):
            cols[name] = pa.array(col, mask=np.isnan(col), type=pa.float64())
        cols[VERSION_COLUMN] = pa.array(list(t.versions), type=pa.string())
        cols[FRESHNESS_COLUMN] = pa.array(t.freshness, type=pa.float64())
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), path)
        return path


class RedisLabelStore:
    """Labels in Redis: one hash per item, ``{prefix}:{item_id}`` -> ``{label: score, _v: version,
    _ts: labelled-at}``.

    A read is one pipelined round trip of ``HMGET`` commands (chunked for very large batches), so
    a 1,000-candidate batch costs one network round trip, not 1,000. Socket timeouts bound a slow
    server; any connection or protocol failure becomes :class:`LabelStoreError`. Values that are not
    numbers in [0, 1] are *garbage*: reported as not present and counted, never passed on.
    """

    VERSION_FIELD = "_v"
    FRESHNESS_FIELD = "_ts"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "assay:labels",
        timeout_s: float = 0.05,
        connect_timeout_s: float = 0.05,
        max_age_s: float | None = None,
        chunk: int = 2000,
        clock=time.time,
        client: Any = None,
    ):
        import redis

        self.url = url
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.max_age_s = max_age_s
        self.chunk = chunk
        self._clock = clock
        self._redis = redis
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=connect_timeout_s, retry_on_timeout=False
        )
        self.garbage_total = 0

    def key(self, item_id: str) -> str:
        return f"{self.prefix}:{item_id}"

    def get(self, item_ids: Sequence[str], label_names: Sequence[str], *, timeout_s: float | None = None) -> LabelBatch:
        n = len(item_ids)
        label_names = list(label_names)
        fields = [*label_names, self.VERSION_FIELD, self.FRESHNESS_FIELD]
        raw: list[Any] = []
        try:
            for start in range(0, n, self.chunk):
                pipe = self.client.pipeline(transaction=False)
                for item_id in item_ids[start : start + self.chunk]:
                    pipe.hmget(self.key(item_id), fields)
                raw.extend(pipe.execute())
        except self._redis.exceptions.TimeoutError as e:
            raise LabelStoreError(f"label store {self.url} timed out after {self.timeout_s * 1000:.0f} ms", timeout=True) from e
        except (self._redis.exceptions.RedisError, OSError) as e:
            raise LabelStoreError(f"label store {self.url} is unavailable: {e}") from e
        k = len(label_names)
        values = np.full((k, n), np.nan)
        garbage = 0
        versions = np.full(n, "", dtype=object)
        freshness = np.full(n, np.nan)
        for i, row in enumerate(raw):
            if not isinstance(row, list) or len(row) != k + 2:
                garbage += k
                continue
            for j in range(k):
                v = row[j]
                if v is None:
                    continue
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    garbage += 1
                    continue
                if not (0.0 <= x <= 1.0):  # also rejects NaN
                    garbage += 1
                    continue
                values[j, i] = x
            if row[k] is not None:
                versions[i] = row[k].decode("utf-8", "replace") if isinstance(row[k], bytes) else str(row[k])
            if row[k + 1] is not None:
                try:
                    ts = float(row[k + 1])
                    freshness[i] = ts if math.isfinite(ts) else np.nan
                except (TypeError, ValueError):
                    garbage += 1
        stale = 0
        fresh_ok = np.ones(n, dtype=bool)
        if self.max_age_s is not None:
            age_ok = (self._clock() - freshness) <= self.max_age_s  # NaN freshness -> stale
            has_any = ~np.isnan(values).all(axis=0) if k else np.zeros(n, dtype=bool)
            stale = int((has_any & ~age_ok).sum())
            fresh_ok = age_ok
        self.garbage_total += garbage
        out_values: dict[str, np.ndarray] = {}
        out_present: dict[str, np.ndarray] = {}
        for j, name in enumerate(label_names):
            p = ~np.isnan(values[j]) & fresh_ok
            out_present[name] = p
            out_values[name] = np.where(p, values[j], np.nan)
        complete = bool(n) and k > 0 and all(bool(p.all()) for p in out_present.values())
        return LabelBatch(tuple(item_ids), out_values, out_present, versions, freshness, garbage, stale, complete)

    def put(self, item_ids: Sequence[str], labels: Mapping[str, Sequence[float]], version: str, *, labeled_at: float | None = None) -> int:
        columns = _check_put(item_ids, labels, version)
        ts = self._clock() if labeled_at is None else float(labeled_at)
        try:
            for start in range(0, len(item_ids), self.chunk):
                pipe = self.client.pipeline(transaction=False)
                for i in range(start, min(start + self.chunk, len(item_ids))):
                    mapping: dict[str, Any] = {self.VERSION_FIELD: version, self.FRESHNESS_FIELD: repr(ts)}
                    for name, col in columns.items():
                        if not math.isnan(col[i]):
                            mapping[name] = repr(float(col[i]))
                    pipe.hset(self.key(item_ids[i]), mapping=mapping)
                pipe.execute()
        except (self._redis.exceptions.RedisError, OSError) as e:
            raise LabelStoreError(f"label store {self.url}: write failed: {e}") from e
        return len(item_ids)

    def close(self) -> None:
        self.client.close()


def open_label_store(spec: str, **kwargs: Any) -> LabelStore:
    """A store from a location string: ``redis://...`` or a Parquet file path."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisLabelStore(spec, **kwargs)
    return InMemoryLabelStore.from_parquet(spec, **kwargs)
