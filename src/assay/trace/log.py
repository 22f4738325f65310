"""The decision log: Arrow IPC segments, a Merkle tree over record hashes, signed checkpoints.

Layout under the log root (``ASSAY_HOME/trace`` by default, or any fsspec URL)::

    segments/<first index, 20 digits>.arrows   Arrow IPC stream: schema, then one record batch per append
    checkpoints/<size, 20 digits>.note          C2SP tlog-checkpoint, Ed25519-signed note
    checkpoints/<size, 20 digits>.manifest.json byte length + SHA-256 of every segment at that size
                                               (its hash is the note's ``segments`` line, so any
                                               changed byte of a segment is caught, even padding)
    tree.bin                                   post-order Merkle nodes (a cache; local, see tree.py)

Keys live outside the log: the signing key ``ASSAY_HOME/keys/trace-signing.key`` and the
pseudonym key (see pseudonym.py). An append is acknowledged after the segment bytes and the tree
are fsynced (``fsync="batch"``, the default) and, unless ``checkpoint_every`` says otherwise, a
new checkpoint is published. On open, a partial batch left by a crash is cut off and reported in
``TraceLog.recovery`` (and recorded as a ``trace.recovered`` event), never skipped silently.

This module is the log itself (open, append, checkpoints, proofs, queries); its other jobs are
modules of their own, whose names stay importable from here: the files and a segment's bytes
(``segments``), the durable writer under an append (``durable``), what opening does after a
crash (``recovery``) and erasure of a data subject (``erasure``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.config import settings
from assay.errors import AssayError, BadInput
from assay.files import check_regular
from assay.records import Decision, Event
from assay.trace import canonical, hashing, merkle
from assay.trace.checkpoint import Checkpoint, SignatureError, Signer, Verifier
from assay.trace.durable import (
    _SYNC_FILE_RANGE,
    _ActiveSegment,
    _fsync_dir,
    _is_local,
    _start_writeback,
)
from assay.trace.erasure import (
    PENDING_ERASURE,
    Erasure,
)
from assay.trace.pseudonym import Pseudonymiser, load_key, load_key_available
from assay.trace.recovery import Recovery, TamperError
from assay.trace.segments import (
    COSIGNATURES_SUFFIX,
    MANIFEST_SUFFIX,
    NOTE_SUFFIX,
    SEGMENT_SUFFIX,
    Scratch,
    _body_start,
    _encode_items,
    _note_name,
    _segment_name,
    _with_hashes,
    encode_batch,
    read_batches,
    segment_bytes,
    segment_is_current,
)
from assay.trace.tree import TreeFile

log = logging.getLogger("assay.trace")

# the log's names, and those of the modules it was split into (segments, durable, erasure,
# recovery), importable from here as before
__all__ = [
    "COSIGNATURES_SUFFIX",
    "DEFAULT_ORIGIN",
    "MANIFEST_SUFFIX",
    "NOTE_SUFFIX",
    "OVERLAP_MIN_ROWS",
    "PENDING_ERASURE",
    "SEGMENT_SUFFIX",
    "_SYNC_FILE_RANGE",
    "AppendResult",
    "Scratch",
    "TamperError",
    "TraceLog",
    "VerifyReport",
    "_encode_items",
    "_leaf_hashes",
    "_start_writeback",
    "encode_batch",
    "read_batches",
    "segment_bytes",
    "segment_is_current",
]

DEFAULT_ORIGIN = "assay.local/trace"
OVERLAP_MIN_ROWS = 10_000  # appends at least this large write the segment and the tree in parallel




@dataclass(frozen=True)
class AppendResult:
    first_index: int
    count: int
    tree_size: int
    root_hash: str  # hex
    checkpoint_size: int  # size of the newest signed checkpoint after this append
    seconds: float


@dataclass
class VerifyReport:
    """``ok``: nothing a checkpoint signed was altered, lost or rolled back. ``unacknowledged``:
    what lies after the newest signed checkpoint (records and torn bytes a writer never got
    acknowledged; a writer opening the log quarantines them), or None. ``signed_size``: the
    newest signed checkpoint; ``trusted_size``: the one this verifier had verified before (its
    trusted state), ``witnessed_size``: the newest with a witness quorum (when witnesses were given)."""

    ok: bool
    records: int
    checkpoints: int
    erased: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    signed_size: int = 0
    unacknowledged: dict[str, Any] | None = None
    trusted_size: int | None = None
    witnessed_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "records": self.records, "checkpoints": self.checkpoints, "erased": self.erased,
            "problems": self.problems, "warnings": self.warnings, "seconds": round(self.seconds, 4),
            "signed_size": self.signed_size, "unacknowledged": self.unacknowledged,
            "trusted_size": self.trusted_size, "witnessed_size": self.witnessed_size,
        }

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise TamperError(self.problems)


class TraceLog(Recovery, Erasure):
    """Open with ``TraceLog.open()``; see the module docstring for layout and guarantees."""

    def __init__(self, root: str, fs, *, tree_path: Path, signer: Signer | None, pseudonymiser: Pseudonymiser,
                 origin: str, fsync: str, checkpoint_every: float | None, segment_records: int,
                 read_only: bool = False, verifier: Verifier | None = None, threads: int | None = None):
        self.root = root.rstrip("/")
        self.fs = fs
        self.local = _is_local(fs)
        self.signer = signer
        self.verifier = verifier or (signer.verifier if signer else None)
        self.pseudonymiser = pseudonymiser
        self.origin = origin
        if fsync not in ("batch", "off"):
            raise BadInput(f"fsync policy must be 'batch' or 'off', got {fsync!r}")
        self.fsync = fsync == "batch"
        self.checkpoint_every = checkpoint_every
        self.segment_records = segment_records
        self.read_only = read_only
        # Threads a large batch is split over (record hashes, leaves, tree levels, verify); with
        # more than one, the segment and the tree are also written side by side. 1: everything
        # on the calling thread. Same bytes either way.
        self.threads = hashing.workers(threads)
        self._lock = threading.RLock()
        self._tree = TreeFile(tree_path, fsync=self.fsync, threads=self.threads, read_only=read_only)
        self._active: _ActiveSegment | None = None
        self._scratch = Scratch()  # appends run one at a time (under _lock)
        self._tables: dict[str, tuple[tuple[int, int], pa.Table]] = {}
        self._checkpoints: dict[str, tuple[tuple[int, int] | None, Checkpoint]] = {}
        self._last_checkpoint_time = 0.0
        self.recovery: list[str] = []
        self.problems: list[str] = []
        self._recovery_payload: dict[str, Any] = {}
        self._scratch_dir = None  # a reader's private tree, when tree.bin proved damaged
        self._rewritten: dict[str, tuple[int, Any]] = {}  # segment -> (length, SHA-256 state) of an erasure's rewrite
        self._closed = False
        self._file_lock = None
        self.location = self.root if self.local else f"{fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]}://{self.root}"
        # What this writer last signed, kept outside the log (see state.py).
        self._state_path = None
        if signer is not None and not read_only:
            from assay.trace import state

            self._state_path = state.default_path("writer", origin, self.location, signer.verifier)
        for sub in ("segments", "checkpoints"):
            fs.makedirs(f"{self.root}/{sub}", exist_ok=True)
        if self.local and not read_only:
            import fcntl

            self._file_lock = open(f"{self.root}/.writer.lock", "a")  # noqa: SIM115 - held for the log's lifetime
            fcntl.flock(self._file_lock, fcntl.LOCK_EX)
        self._recover()

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | os.PathLike | None = None, fs=None, *, origin: str = DEFAULT_ORIGIN,
             fsync: str = "batch", checkpoint_every: float | None = 0.0, segment_records: int = 1_000_000,
             signing_key: Path | None = None, read_only: bool = False,
             verifier: Verifier | None = None, threads: int | None = None, create: bool = True) -> TraceLog:
        """Open (creating if needed) the log at ``path``: a local directory or an fsspec URL
        (``memory://``, ``s3://``, ...). ``checkpoint_every``: seconds between automatic
        checkpoints (0: after every append; None: only on ``checkpoint()``). ``read_only``: take no
        writer lock and repair nothing (what recovery would do is reported in ``recovery``).
        ``threads``: how many threads large batches are split over (default: the CPU count, at
        most 8; 1: single-threaded); the bytes written are the same. ``create=False``: a path that
        holds no log is an error instead of a new, empty log (erasure uses it: a mistyped path
        must not quietly succeed)."""
        import fsspec

        home = settings().home
        if path is None:
            path = home / "trace"
        path = str(path)
        if fs is None:
            fs, root = fsspec.core.url_to_fs(path)
        else:
            root = path
        if _is_local(fs):
            root = str(Path(root).expanduser().resolve())
            if os.path.exists(root) and not os.path.isdir(root):
                raise BadInput(f"{path} is a file, not a trace log folder")
            tree_path = Path(root) / "tree.bin"
            if tree_path.is_symlink() or (tree_path.exists() and not tree_path.is_file()):
                check_regular(tree_path, "trace log")  # a FIFO or a device: refused, naming it
        else:
            digest = hashlib.sha256(f"{fs.protocol}:{root}".encode()).hexdigest()[:16]
            tree_path = home / "cache" / "trace-tree" / f"{digest}.bin"
        key_path = signing_key or home / "keys" / "trace-signing.key"
        if (read_only or not create) and not fs.exists(f"{root}/segments"):
            raise BadInput(f"there is no trace log at {path}")
        if read_only:
            # A reader creates no keys: without the signing key it needs the verifier key, and
            # without the pseudonym key it cannot look subjects up (it can still verify).
            signer = Signer.load_or_create(key_path, origin) if key_path.exists() else None
            pseudonymiser = Pseudonymiser(load_key()) if load_key_available() else Pseudonymiser(None)
        else:
            signer = Signer.load_or_create(key_path, origin)
            pseudonymiser = Pseudonymiser(load_key())
        return cls(root, fs, tree_path=tree_path, signer=signer, pseudonymiser=pseudonymiser, verifier=verifier,
                   origin=origin, fsync=fsync, checkpoint_every=checkpoint_every, segment_records=segment_records,
                   read_only=read_only, threads=threads)

    def close(self) -> None:
        """Sign what this writer appended since its last checkpoint (``checkpoint_every`` > 0 or
        None leaves records unsigned between checkpoints; a clean close acknowledges them), then
        release the files."""
        with self._lock:
            if not self.read_only and not self._closed and not self.problems and self._size and \
                    _note_name(self._size) not in self.checkpoint_names():
                self._publish_checkpoint()
            self._closed = True
            if self._active:
                self._active.close()
                self._active = None
            self._tree.close()
            if self._scratch_dir is not None:
                self._scratch_dir.cleanup()
                self._scratch_dir = None
            if self._file_lock:
                self._file_lock.close()
                self._file_lock = None

    def __enter__(self) -> TraceLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def size(self) -> int:
        return self._size

    # ------------------------------------------------------------ files

    def _list(self, folder: str) -> list[str]:
        """File names in a folder of the log (os.listdir locally: fsspec's ls costs ~0.1 ms a name)."""
        try:
            if self.local:
                return os.listdir(f"{self.root}/{folder}")
            return [p.rsplit("/", 1)[-1] for p in self.fs.ls(f"{self.root}/{folder}", detail=False)]
        except FileNotFoundError:
            return []

    def segment_names(self) -> list[str]:
        names = self._list("segments")
        return sorted(n for n in names if n.endswith(SEGMENT_SUFFIX) and n[:20].isdigit())

    def checkpoint_names(self) -> list[str]:
        names = self._list("checkpoints")
        return sorted(n for n in names if n.endswith(NOTE_SUFFIX) and n[:20].isdigit())

    def _read(self, rel: str) -> bytes:
        path = f"{self.root}/{rel}"
        if self.local and os.path.lexists(path):  # a FIFO would hang here, /dev/zero never end
            check_regular(path, "trace log")
        with self.fs.open(path, "rb") as f:
            return f.read()

    def _read_segment_buffer(self, name: str):
        path = f"{self.root}/segments/{name}"
        if self.local:
            if os.path.getsize(path) == 0:
                return pa.py_buffer(b"")
            return pa.memory_map(path).read_buffer()
        return pa.py_buffer(self._read(f"segments/{name}"))

    def _write_atomic(self, rel: str, data: bytes | Sequence[bytes | memoryview], durable: bool = True) -> None:
        """Replace a file whole: written beside it, fsynced, renamed over it, the folder fsynced
        (the old file's name and bytes are gone from the folder once this returns). ``durable``
        False: no fsync (a sidecar that can be collected again)."""
        path = f"{self.root}/{rel}"
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = path + ".tmp"
            with open(tmp, "wb") as f:
                if isinstance(data, bytes | bytearray | memoryview):
                    f.write(data)
                else:
                    f.writelines(data)  # the pieces, without joining them first
                f.flush()
                if self.fsync and durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if self.fsync and durable:
                _fsync_dir(os.path.dirname(path))
        else:
            self.fs.pipe_file(path, data if isinstance(data, bytes) else b"".join(data))

    # ------------------------------------------------------------ recovery

    def _load_checkpoint(self, name: str) -> Checkpoint:
        key = None
        if self.local:
            st = os.stat(f"{self.root}/checkpoints/{name}")
            key = (st.st_size, st.st_mtime_ns)
            cached = self._checkpoints.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
        checkpoint = self._open_checkpoint(name)
        if key is not None:
            self._checkpoints[name] = (key, checkpoint)
        return checkpoint

    def _open_checkpoint(self, name: str) -> Checkpoint:
        if self.verifier is None:
            raise BadInput("no public key for this log: pass the verifier key (`assay trace key` on the writer "
                           "prints it; --public-key on the command line)")
        text = self._read(f"checkpoints/{name}").decode("utf-8", "replace")
        checkpoint = Checkpoint.open(text, self.verifier, self.origin, where=f"checkpoint {name}")
        if _note_name(checkpoint.size) != name:
            raise SignatureError(f"checkpoint {name}: file name says size {int(name[:20])} but the signed note says {checkpoint.size}")
        return checkpoint

    # ------------------------------------------------------------ reading

    def _segment_table(self, name: str, validate: bool = False) -> pa.Table | None:
        """A segment as a table. Local segments are memory-mapped and kept while their size and
        mtime are unchanged (sealed segments never change except by erasure, which rewrites them)."""
        key = None
        if self.local and not validate:
            st = os.stat(f"{self.root}/segments/{name}")
            key = (st.st_size, st.st_mtime_ns)
            cached = self._tables.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
        batches, _, _ = read_batches(self._read_segment_buffer(name), f"segment {name}", validate)
        table = pa.Table.from_batches(batches) if batches else None
        if key is not None and table is not None:
            self._tables[name] = (key, table)
        return table

    def _iter_segments(self, columns: list[str] | None = None, start: int = 0, validate: bool = False):
        """Segments as tables. Queries skip Arrow's full validation (verify and recovery do it)."""
        names = self.segment_names()
        for i, name in enumerate(names):
            first = int(name[:20])
            end = int(names[i + 1][:20]) if i + 1 < len(names) else None
            if end is not None and end <= start:
                continue
            table = self._segment_table(name, validate)
            if table is None:
                continue
            if start > first:
                table = table.slice(start - first)
            yield table.select(columns) if columns else table

    def _named_segments(self, columns: list[str] | None = None):
        for name in self.segment_names():
            table = self._segment_table(name)
            if table is not None:
                yield name, table.select(columns) if columns else table

    def table(self, columns: list[str] | None = None) -> pa.Table:
        """Every record as one Arrow table (segments are memory-mapped, so this is cheap)."""
        tables = list(self._iter_segments(columns))
        if not tables:
            schema = canonical.SEGMENT_SCHEMA
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return pa.concat_tables(tables)

    def latest_checkpoint(self) -> tuple[Checkpoint, str] | None:
        notes = self.checkpoint_names()
        if not notes:
            return None
        return self._load_checkpoint(notes[-1]), self._read(f"checkpoints/{notes[-1]}").decode()

    def record(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._size:
            raise BadInput(f"record index {index} is outside the log (size {self._size})")
        names = self.segment_names()
        firsts = [int(n[:20]) for n in names]
        pos = int(np.searchsorted(firsts, index, side="right")) - 1
        row = self._segment_table(names[pos]).slice(index - firsts[pos], 1).to_pylist()[0]
        row["record_hash"] = row["record_hash"].hex()
        return row

    # ------------------------------------------------------------ appending

    def append(self, records: Sequence[Decision | Event]) -> AppendResult:
        """Append decisions and events in order; returns once durable under the fsync policy."""
        if not records:
            raise BadInput("nothing to append: the record list is empty")
        decisions = [r for r in records if isinstance(r, Decision)]
        others = [r for r in records if not isinstance(r, Decision)]
        if any(not isinstance(r, Event) for r in others):
            bad = next(r for r in others if not isinstance(r, Event))
            raise BadInput(f"the trace takes Decision and Event records, got {type(bad).__name__}")
        if not others:
            return self.append_table(canonical.decisions_to_table(decisions))
        parts: list[tuple[pa.RecordBatch, bytes]] = []
        positions: list[np.ndarray] = []
        is_decision = np.array([isinstance(r, Decision) for r in records])
        if decisions:
            table = self._prepare_decisions(canonical.decisions_to_table(decisions))
            parts.append(self._decision_rows(table))
            positions.append(np.flatnonzero(is_decision))
        rows = [canonical.event_row(r, i) for i, r in enumerate(records) if not isinstance(r, Decision)]
        event_table = pa.Table.from_pylist(
            [{**{k: None for k in canonical.SEGMENT_SCHEMA.names}, "erased": False, **row} for row in rows],
            schema=canonical.SEGMENT_SCHEMA)
        event_hashes = b"".join(hashlib.sha256(canonical.reference_canonical(r)).digest() for r in rows)
        parts.append((event_table.combine_chunks().to_batches()[0], event_hashes))
        positions.append(np.flatnonzero(~is_decision))
        combined = pa.Table.from_batches([p[0] for p in parts]).combine_chunks()
        hashes = np.frombuffer(b"".join(p[1] for p in parts), np.uint8).reshape(-1, 32)
        order = np.argsort(np.concatenate(positions), kind="stable")
        combined = combined.take(pa.array(order))
        hashes = hashes[order].tobytes()
        return self._commit(combined, hashes)

    def append_table(self, table: pa.Table) -> AppendResult:
        """The columnar fast path: a batch of decisions as an Arrow table in ``DECISION_SCHEMA``
        (raw subject ids; they are pseudonymised here)."""
        if table.num_rows == 0:
            raise BadInput("nothing to append: the decision table is empty")
        prepared = pa.Table.from_batches([self._decision_batch(self._prepare_decisions(canonical.normalise_decision_table(table)))])
        # The record hashes are computed in _commit: for large batches while the rest of the
        # segment bytes are already being written (see _write_early). They are computed from the
        # batch as stored (each dictionary value is quoted once, not once a row).
        return self._commit(prepared, lambda: canonical.decision_hashes(prepared.select(canonical.DECISION_SCHEMA.names),
                                                                        self.threads))

    def _prepare_decisions(self, table: pa.Table) -> pa.Table:
        subjects = table.column("subject_id").combine_chunks()
        return table.set_column(table.schema.get_field_index("subject_id"), "subject_id",
                                self.pseudonymiser.column(subjects))

    def _decision_rows(self, table: pa.Table) -> tuple[pa.RecordBatch, bytes]:
        batch = self._decision_batch(table)
        decisions = pa.Table.from_batches([batch]).select(canonical.DECISION_SCHEMA.names)
        return batch, canonical.decision_hashes(decisions, self.threads)

    def _decision_batch(self, table: pa.Table) -> pa.RecordBatch:
        n = table.num_rows

        def stored(name: str) -> pa.Array:
            col = table.column(name).combine_chunks()
            if name in canonical.DICTIONARY_COLUMNS and not pa.types.is_dictionary(col.type):
                col = pc.dictionary_encode(col)
            elif name in canonical.LIST_COLUMNS and not pa.types.is_dictionary(col.type.value_type):
                col = _encode_items(col)
            if name != "subject_id":  # pseudonymised: hex
                canonical.check_utf8(col, name)
            return col

        # Large batches encode their columns on the thread pool (Arrow's kernels release the GIL):
        # this runs before anything else can, so one core would otherwise wait.
        threads = self.threads if n >= OVERLAP_MIN_ROWS else 1
        columns = hashing.parallel_map(stored, canonical.DECISION_SCHEMA.names, threads)
        arrays = [
            pa.nulls(n, pa.uint64()),  # index: filled at commit
            pa.nulls(n, pa.binary(32)),  # record_hash: filled at commit
            pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array(["decision"])),
            pa.array(np.zeros(n, dtype=bool)),
            *columns,
            pa.nulls(n, canonical.STRING_DICT), pa.nulls(n, pa.string()), pa.nulls(n, pa.string()),
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=canonical.SEGMENT_SCHEMA)

    def _commit(self, table: pa.Table, record_hashes: bytes | Callable[[], bytes]) -> AppendResult:
        """Write rows whose record hashes are ``record_hashes`` (concatenated, 32 bytes each, or a
        function computing them: called here, or inside ``_write_early`` for large local batches)."""
        started = time.perf_counter()
        early = callable(record_hashes) and self.local and self.threads > 1 and table.num_rows >= OVERLAP_MIN_ROWS
        if callable(record_hashes) and not early:
            record_hashes = record_hashes()
        leaves = None if early else _leaf_hashes(record_hashes, self.threads)
        with self._lock:
            if self.problems:
                raise TamperError(["refusing to append to a log that failed its checks:", *self.problems])
            if self.read_only:
                raise BadInput("this log was opened read-only")
            first = self._size
            n = table.num_rows
            table = table.set_column(0, "index", pa.array(np.arange(first, first + n, dtype=np.uint64)))
            if early:
                self._write_early(table, first, record_hashes)
            elif n >= OVERLAP_MIN_ROWS and self.threads > 1:
                # The segment (serialise, hash, write, fsync) and the tree (node hashes, write,
                # fsync) are independent files and both release the GIL: write them side by side.
                # The tree is a cache that recovery cuts back to the segments after a crash.
                tree_done = hashing.pool("side").submit(self._tree.append, leaves)
                try:
                    self._write_batch(_with_hashes(table, record_hashes))
                except BaseException:
                    if tree_done.exception() is None:
                        self._tree.truncate(first)  # keep the cache in step with the segments
                    raise
                tree_done.result()
            else:
                self._write_batch(_with_hashes(table, record_hashes))
                self._tree.append(leaves)
            self._size = first + n
            due = self.checkpoint_every is not None and time.time() - self._last_checkpoint_time >= self.checkpoint_every
            if due:
                self._publish_checkpoint()
            latest = self.checkpoint_names()
            return AppendResult(first, n, self._size, merkle.root_hash(self._tree, self._size).hex(),
                                int(latest[-1][:20]) if latest else 0, time.perf_counter() - started)

    def _write_early(self, table: pa.Table, first: int, compute_hashes: Callable[[], bytes]) -> None:
        """Write a large local batch while its record hashes are computed. Only the record_hash
        column depends on them, and it sits near the start of the IPC message (after the index
        column), so the bytes after it (~90% of the batch) are written with pwrite on another
        thread while this one computes the hashes; then the head (message metadata, index,
        record hashes) is written, the tree appended beside it, and the segment fsynced once.
        The bytes are exactly those of the batch serialised with its hashes (tested). On bad
        input or an error the segment is cut back; a crash in between leaves a torn batch (a
        hole of zeros where the head belongs), which recovery cuts off like any torn batch."""
        n = table.num_rows
        placeholder = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), n, [None, pa.py_buffer(bytes(32 * n))])
        batch = table.set_column(1, "record_hash", placeholder).combine_chunks().to_batches(max_chunksize=n)[0]
        message = encode_batch(batch, self._scratch)
        body = _body_start(message)
        start, end = body + 8 * n, body + 40 * n  # the index column's 8n bytes, then the record hashes
        if bytes(message[body:start]) != np.arange(first, first + n, dtype="<u8").tobytes():
            raise AssayError("unexpected Arrow IPC layout: the index column is not where it belongs")  # pragma: no cover
        segment = self._active_segment()
        offset = segment.length
        side = hashing.pool("side")
        tail_done = side.submit(segment.pwrite, message[end:], offset + end)
        try:
            hashes = compute_hashes()
            if len(hashes) != 32 * n:
                raise AssayError(f"{len(hashes) // 32} record hashes for {n} records")  # pragma: no cover
            tree_done = side.submit(lambda: self._tree.append(_leaf_hashes(hashes, self.threads)))  # leaves there too
            try:
                head = b"".join((message[:start], hashes))
                segment.pwrite(head, offset)
                tail_done.result()
                segment.commit((head, message[end:]), rows=n)
            except BaseException:
                if tree_done.exception() is None:
                    self._tree.truncate(first)  # keep the cache in step with the segments
                raise
            tree_done.result()
        except BaseException:
            tail_done.exception()  # wait for it before cutting the segment back
            segment.cut(offset)
            raise

    def _write_batch(self, batch: pa.RecordBatch) -> None:
        message = encode_batch(batch, self._scratch)  # written and hashed without another copy
        if not self.local:
            name = _segment_name(self._size)
            data = canonical.SEGMENT_SCHEMA.serialize().to_pybytes() + bytes(message)
            self.fs.pipe_file(f"{self.root}/segments/{name}", data)
            self._segment_digests[name] = (len(data), hashlib.sha256(data).hexdigest())
            return
        self._active_segment().write(message, rows=batch.num_rows,
                                     overlap=self.threads > 1 and batch.num_rows >= OVERLAP_MIN_ROWS)

    def _active_segment(self) -> _ActiveSegment:
        if self._active is None or self._active.rows >= self.segment_records:
            if self._active:
                # The running digest is of the bytes this writer wrote: the manifest keeps it
                # instead of reading the sealed segment back (~0.35 us a record once per segment).
                self._segment_digests[self._active.name] = (self._active.length, self._active.digest())
                self._active.close()
            names = self.segment_names()
            reuse = names and int(names[-1][:20]) + self._segment_rows(names[-1]) == self._size and \
                self._segment_rows(names[-1]) < self.segment_records and \
                segment_is_current(self._read_segment_buffer(names[-1]))
            name = names[-1] if reuse else _segment_name(self._size)
            self._active = _ActiveSegment(f"{self.root}/segments/{name}", name, self.fsync,
                                          self._segment_rows(name) if reuse else 0, self._rewritten.pop(name, None))
        return self._active

    def _segment_rows(self, name: str) -> int:
        names = self.segment_names()
        if name not in names:
            return 0
        i = names.index(name)
        if i + 1 < len(names):
            return int(names[i + 1][:20]) - int(name[:20])
        return self._size - int(name[:20])

    # ------------------------------------------------------------ checkpoints

    def _segment_manifest(self) -> list[dict[str, Any]]:
        out = []
        for name in self.segment_names():
            if self._active is not None and self._active.name == name:
                length, digest = self._active.length, self._active.digest()
            elif name in self._segment_digests:
                length, digest = self._segment_digests[name]
            else:
                data = self._read(f"segments/{name}")
                length, digest = len(data), hashlib.sha256(data).hexdigest()
                self._segment_digests[name] = (length, digest)
            out.append({"name": name, "bytes": length, "sha256": digest})
        return out

    def _publish_checkpoint(self) -> Checkpoint:
        manifest = {"origin": self.origin, "size": self._size, "segments": self._segment_manifest()}
        manifest_bytes = canonical.jcs(manifest)
        checkpoint = Checkpoint(self.origin, self._size, merkle.root_hash(self._tree, self._size), time.time())
        body = checkpoint.body() + f"segments {hashlib.sha256(manifest_bytes).hexdigest()}\n"
        note = self.signer.sign_note(body)
        self._write_atomic(f"checkpoints/{self._size:020d}{MANIFEST_SUFFIX}", manifest_bytes)
        self._write_atomic(f"checkpoints/{_note_name(self._size)}", note.encode())
        if self._state_path is not None:
            from assay.trace import state

            # Not fsynced: a crash can only leave it behind the log (less protection, no false alarm),
            # and the checkpoint itself is durable; two more fsyncs a checkpoint would cost appends.
            state.save(self._state_path, note, fsync=False)
        self._last_checkpoint_time = checkpoint.time or time.time()
        return checkpoint

    def checkpoint(self) -> tuple[Checkpoint, str]:
        """Sign and publish a checkpoint for the current size (no-op if one exists); returns it and its note text."""
        if self.read_only:
            raise BadInput("this log was opened read-only")
        with self._lock:
            if self._size == 0:
                raise BadInput("the log is empty: there is nothing to checkpoint")
            if _note_name(self._size) not in self.checkpoint_names():
                self._publish_checkpoint()
            return self._load_checkpoint(_note_name(self._size)), self._read(f"checkpoints/{_note_name(self._size)}").decode()

    # ------------------------------------------------------------ proofs

    def root_hash(self, size: int | None = None) -> bytes:
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise BadInput(f"tree size {size} is outside 0..{self._size}")
        return merkle.root_hash(self._tree, size)

    def prove_inclusion(self, index: int, tree_size: int | None = None) -> dict[str, Any]:
        """Everything a third party needs, with only the public key, to check that record
        ``index`` is in the log: the record, its RFC 8785 JSON, the proof and a signed checkpoint
        (with the witnesses' cosignatures collected for it). The proof is checked against the
        signed root before it is handed out: a damaged tree cache is rebuilt, never served."""
        found = self.latest_checkpoint()
        if found is None:
            raise BadInput("the log has no checkpoint yet")
        checkpoint, note = found
        if tree_size is not None and tree_size != checkpoint.size:
            name = _note_name(tree_size)
            if name not in self.checkpoint_names():
                raise BadInput(f"there is no checkpoint of size {tree_size}; sizes: {self.checkpoint_sizes()[-5:]}")
            checkpoint = self._load_checkpoint(name)
            note = self._read(f"checkpoints/{name}").decode()
        if not 0 <= index < checkpoint.size:
            raise BadInput(f"record index {index} is not covered by the checkpoint of size {checkpoint.size}")
        row = self.record(index)
        record_hash = bytes.fromhex(row["record_hash"])
        bundle: dict[str, Any] = {
            "kind": "assay.trace.inclusion/v1",
            "index": index,
            "tree_size": checkpoint.size,
            "record_hash": row["record_hash"],
            "proof": [p.hex() for p in self._checked_proof(
                lambda: merkle.inclusion_proof(self._tree, index, checkpoint.size),
                lambda proof: merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(record_hash), proof,
                                                      checkpoint.root),
                f"record {index} in the checkpoint of size {checkpoint.size}")],
            "checkpoint": note + self.cosignatures(checkpoint.size),
            "verifier_key": self.verifier.vkey(),
        }
        if not row["erased"]:
            text = canonical.reference_canonical(row)
            if hashlib.sha256(text).digest() != record_hash:
                raise TamperError([f"record {index} does not match its record hash (its content was altered); "
                                   f"run `assay trace verify`"])
            bundle["record_json"] = text.decode()
        else:
            bundle["erased"] = True
        return bundle

    def _checked_proof(self, make: Callable[[], list[bytes]], check: Callable[[list[bytes]], None], what: str) -> list[bytes]:
        """A proof from the tree cache that computes the signed root; else the cache is rebuilt
        from the segments and the proof made again; else the records themselves disagree with
        the signed checkpoint, and nothing is served."""
        for attempt in range(2):
            try:
                proof = make()
                check(proof)
                return proof
            except (merkle.ProofError, IndexError) as e:
                if attempt:
                    raise TamperError([f"no valid proof of {what}: the records do not hash to the signed root ({e}); "
                                       f"run `assay trace verify`"]) from e
                log.warning("trace: the tree cache gave a proof of %s that does not check (%s); rebuilding it", what, e)
                self._rebuild_tree()
        raise AssertionError("unreachable")  # pragma: no cover

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> dict[str, Any]:
        sizes = self.checkpoint_sizes()
        new_size = sizes[-1] if new_size is None and sizes else new_size
        for size in (old_size, new_size):
            if size not in sizes:
                raise BadInput(f"there is no checkpoint of size {size}; sizes: {sizes[-5:]}")
        if old_size > new_size:
            raise BadInput(f"old size {old_size} is larger than new size {new_size}")
        old, new = self._load_checkpoint(_note_name(old_size)), self._load_checkpoint(_note_name(new_size))
        proof = self._checked_proof(lambda: merkle.consistency_proof(self._tree, old_size, new_size),
                                    lambda p: merkle.verify_consistency(old_size, new_size, p, old.root, new.root),
                                    f"consistency from size {old_size} to {new_size}")
        return {
            "kind": "assay.trace.consistency/v1",
            "old_size": old_size,
            "new_size": new_size,
            "proof": [p.hex() for p in proof],
            "old_checkpoint": self._read(f"checkpoints/{_note_name(old_size)}").decode() + self.cosignatures(old_size),
            "new_checkpoint": self._read(f"checkpoints/{_note_name(new_size)}").decode() + self.cosignatures(new_size),
            "verifier_key": self.verifier.vkey(),
        }

    def add_cosignatures(self, size: int, lines: Sequence[str]) -> None:
        """Keep witness cosignature lines for the checkpoint of ``size`` (one per witness key: a
        newer line of the same key replaces the older). Readers may call it: it touches only this
        sidecar, never what a checkpoint signed."""
        from assay.trace.witness import split_note

        if _note_name(size) not in self.checkpoint_names():
            raise BadInput(f"there is no checkpoint of size {size}")
        rel = f"checkpoints/{size:020d}{COSIGNATURES_SUFFIX}"
        with self._sidecar_lock():
            kept: dict[tuple[str, bytes], str] = {}
            for line in [*self.cosignatures(size).splitlines(), *lines]:
                if line.strip():
                    (name, blob), = split_note(f"x\n\n{line}\n", "cosignature")[1]
                    kept[(name, blob[:4])] = line
            # Not fsynced: lost cosignatures are collected again (a witness re-cosigns the size it knows).
            self._write_atomic(rel, "".join(line + "\n" for line in kept.values()).encode(), durable=False)

    def witness_sizes(self) -> dict[str, int]:
        """The size each witness (by URL) last cosigned for this log, as the log recorded it."""
        import json

        try:
            return {str(k): int(v) for k, v in json.loads(self._read("checkpoints/witnesses.json")).items()}
        except (FileNotFoundError, ValueError, AttributeError):
            return {}

    def remember_witness_size(self, url: str, size: int) -> None:
        with self._sidecar_lock():
            sizes = self.witness_sizes()
            sizes[url] = size
            self._write_atomic("checkpoints/witnesses.json", canonical.jcs(sizes), durable=False)

    @contextlib.contextmanager
    def _sidecar_lock(self):
        """Serialises writers of the checkpoints' sidecar files (cosignatures), which readers write too."""
        if not self.local:
            yield
            return
        import fcntl

        with open(f"{self.root}/checkpoints/.sidecar.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def cosignatures(self, size: int) -> str:
        """The witness cosignature lines collected for the checkpoint of ``size`` ('' if none):
        appended to the log's note they make the C2SP cosigned checkpoint."""
        try:
            return self._read(f"checkpoints/{size:020d}{COSIGNATURES_SUFFIX}").decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def checkpoint_sizes(self) -> list[int]:
        return [int(n[:20]) for n in self.checkpoint_names()]

    # ------------------------------------------------------------ queries

    def why(self, item_id: str, subject_id: str, at: float | None = None) -> dict[str, Any] | None:
        from assay.trace.query import why

        return why(self, item_id, subject_id, at)

    def aggregate(self, by: Sequence[str] = ("rule",), bucket: str | None = None, since: float | None = None,
                  until: float | None = None) -> list[dict[str, Any]]:
        from assay.trace.query import aggregate

        return aggregate(self, by, bucket, since, until)

    # ------------------------------------------------------------ erasure

    def _remove(self, rel: str) -> None:
        path = f"{self.root}/{rel}"
        if self.local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if self.fsync:
                _fsync_dir(os.path.dirname(path))
        elif self.fs.exists(path):
            self.fs.rm(path)

    # ------------------------------------------------------------ verification

    def verify(self, verifier: Verifier | None = None, tree_dir: Path | None = None, *,
               state: Path | bool = True, witnesses: Sequence[Any] = (), quorum: int | None = None) -> VerifyReport:
        """Recompute everything and check it against the checkpoints (see verify.py). ``state``:
        where this verifier keeps the newest checkpoint it verified (True: its default file under
        ``ASSAY_HOME``; False: none), so that a later rollback fails. ``witnesses``
        (``witness.CosignatureVerifier``) and ``quorum`` (default: all of them): a checkpoint
        must carry that many valid cosignatures."""
        from assay.trace.verify import verify_log

        verifier = verifier or self.verifier
        if verifier is None:
            raise BadInput("no public key for this log: pass the verifier key (`assay trace key` on the writer "
                           "prints it; --public-key on the command line)")
        if state is True:
            from assay.trace import state as trusted_state

            state = trusted_state.default_path("verifier", self.origin, self.location, verifier)
        return verify_log(self, verifier, tree_dir, state=state or None, witnesses=witnesses, quorum=quorum)


def _leaf_hashes(record_hashes: bytes | memoryview | np.ndarray, threads: int | None = None) -> bytes:
    """RFC 9162 leaf hashes of concatenated 32-byte record hashes."""
    return hashing.leaf_hashes(record_hashes, threads)
