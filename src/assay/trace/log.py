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
from assay.records import Decision, Event
from assay.trace import canonical, hashing, merkle
from assay.trace.checkpoint import Checkpoint, SignatureError, Signer, Verifier
from assay.trace.pseudonym import Pseudonymiser, load_key, load_key_available
from assay.trace.tree import TreeFile

log = logging.getLogger("assay.trace")

SEGMENT_SUFFIX = ".arrows"
NOTE_SUFFIX = ".note"
MANIFEST_SUFFIX = ".manifest.json"
COSIGNATURES_SUFFIX = ".cosignatures"
PENDING_ERASURE = "erasure.pending.json"  # an erasure between its signed event and its last rewrite  # witness cosignature lines for the note of that size
DEFAULT_ORIGIN = "assay.local/trace"
OVERLAP_MIN_ROWS = 10_000  # appends at least this large write the segment and the tree in parallel


class TamperError(AssayError):
    """The log does not match its signed checkpoints; ``problems`` says what and where."""

    def __init__(self, problems: list[str]):
        super().__init__("trace log failed verification:\n  " + "\n  ".join(problems))
        self.problems = problems


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


def _segment_name(first_index: int) -> str:
    return f"{first_index:020d}{SEGMENT_SUFFIX}"


def _note_name(size: int) -> str:
    return f"{size:020d}{NOTE_SUFFIX}"


_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"  # an Arrow IPC stream's end marker


class Scratch:
    """A buffer reused by every append of a writer: a batch is encoded into memory that is
    already mapped (a fresh 20 MB buffer a batch costs page faults and zeroing, and a growing
    one copies itself as it doubles)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def take(self, size: int) -> bytearray:
        if len(self.buffer) < size:
            self.buffer = bytearray(size + size // 8)  # a new one: views of the old stay valid
        return self.buffer


def encode_batch(batch: pa.RecordBatch, scratch: Scratch | None = None) -> memoryview:
    """One append's bytes in a segment: the batch's dictionaries, then the batch itself (an Arrow
    IPC stream without the schema, which opens the segment, and without the end marker). A
    dictionary sent again replaces the previous one, so every append stands on its own. With
    ``scratch`` the bytes are written into its buffer (valid until the next encode into it)."""
    if scratch is None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, canonical.SEGMENT_SCHEMA) as writer:
            writer.write_batch(batch)
        data = sink.getvalue()
    else:
        counter = pa.MockOutputStream()  # the size first: counts bytes, copies nothing
        with pa.ipc.new_stream(counter, canonical.SEGMENT_SCHEMA) as writer:
            writer.write_batch(batch)
        target = pa.py_buffer(scratch.take(counter.size()))  # mutable (a bytearray); a slice would not be
        with pa.ipc.new_stream(pa.FixedSizeBufferWriter(target), canonical.SEGMENT_SCHEMA) as writer:
            writer.write_batch(batch)
        data = target.slice(0, counter.size())
    reader = pa.BufferReader(data)
    pa.ipc.read_message(reader)  # the schema
    view = memoryview(data)
    if bytes(view[len(view) - 8 :]) != _EOS:
        raise AssayError("unexpected Arrow IPC stream layout: no end marker")  # pragma: no cover
    return view[reader.tell() : len(view) - 8]


def segment_bytes(batches: Sequence[pa.RecordBatch]) -> bytes:
    """A whole segment: the schema, then each batch as ``encode_batch`` writes it."""
    return b"".join([canonical.SEGMENT_SCHEMA.serialize().to_pybytes(), *(bytes(encode_batch(b)) for b in batches)])


def read_batches(data: bytes | pa.Buffer, where: str, validate: bool = True) -> tuple[list[pa.RecordBatch], int, str | None]:
    """Decode a segment. Returns the batches, the byte offset after the last complete batch, and a
    description of what follows it if it is not a clean end. An append is a run of dictionary
    messages and then its record batch message; the messages are walked first (the metadata only),
    then the complete appends decoded as one stream. Segments written before columns were
    dictionary-encoded (``LEGACY_SEGMENT_SCHEMA``) are read and cast to the current schema."""
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    reader = pa.BufferReader(buffer)
    total = reader.size()
    try:
        schema_message = pa.ipc.read_message(reader)
        schema = pa.ipc.read_schema(schema_message)
    except (pa.ArrowException, OSError, EOFError) as e:  # EOFError: an empty file
        return [], 0, f"{where}: no readable schema at the start ({e})"
    legacy = schema == canonical.LEGACY_SEGMENT_SCHEMA
    if schema != canonical.SEGMENT_SCHEMA and not legacy:
        return [], 0, f"{where}: schema is not the trace segment schema"
    whole = _read_whole(buffer, total, legacy, validate)
    if whole is not None:
        return whole, total, None
    start = reader.tell()
    ends: list[int] = []  # where each complete append ends
    error = None
    while reader.tell() < total:
        try:
            message = pa.ipc.read_message(reader)
        except (pa.ArrowException, OSError, EOFError) as e:
            error = e
            break
        if message.type == "record batch":
            ends.append(reader.tell())
        elif message.type != "dictionary":
            error = f"a {message.type} message inside the stream"
            break
    batches: list[pa.RecordBatch] = []
    if ends:
        stream = pa.ipc.open_stream(buffer.slice(0, ends[-1]))
        for k in range(len(ends)):
            try:
                batch = stream.read_next_batch()
                if validate:
                    batch.validate(full=True)
            except (pa.ArrowException, OSError, EOFError, StopIteration) as e:
                good = ends[k - 1] if k else start
                return batches, good, f"{where}: {total - good} bytes after byte {good} are not a complete record batch ({e})"
            batches.append(batch.cast(canonical.SEGMENT_SCHEMA) if legacy else batch)
    good = ends[-1] if ends else start
    if good < total:
        why = error if error is not None else "no record batch follows its dictionaries"
        return batches, good, f"{where}: {total - good} bytes after byte {good} are not a complete record batch ({why})"
    return batches, good, None


# Dictionary messages in each append (one per dictionary-encoded field, lists' items included).
_DICTIONARIES = sum(pa.types.is_dictionary(f.type) or (pa.types.is_list(f.type) and pa.types.is_dictionary(f.type.value_type))
                    for f in canonical.SEGMENT_SCHEMA)


def _read_whole(buffer: pa.Buffer, total: int, legacy: bool, validate: bool) -> list[pa.RecordBatch] | None:
    """Every batch of a segment that is clean to its last byte, decoded as one stream (no walk over
    the ~14 messages of each append), or None: then the caller walks the messages to find where
    the damage or the torn tail starts. Clean: the stream decodes and validates, ends exactly at
    the end of the bytes, and holds each append's dictionaries and batch, nothing more."""
    source = pa.BufferReader(buffer)
    try:
        stream = pa.ipc.open_stream(source)
        batches = list(stream)
        if validate:
            for batch in batches:
                batch.validate(full=True)
    except (pa.ArrowException, OSError, EOFError):
        return None
    per = 0 if legacy else _DICTIONARIES
    stats = stream.stats
    if source.tell() != total or stats.num_dictionary_batches != per * len(batches) or \
            stats.num_messages != 1 + (per + 1) * len(batches):
        return None
    return [batch.cast(canonical.SEGMENT_SCHEMA) for batch in batches] if legacy else batches


def segment_is_current(data: bytes | pa.Buffer) -> bool:
    """Whether a segment starts with the current schema (appends may only extend such a one)."""
    try:
        return pa.ipc.read_schema(pa.ipc.read_message(pa.BufferReader(data))) == canonical.SEGMENT_SCHEMA
    except (pa.ArrowException, OSError, EOFError):
        return False


class TraceLog:
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
        with self.fs.open(f"{self.root}/{rel}", "rb") as f:
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

    def _recover(self) -> None:
        """Bring the log to its last acknowledged state: the newest signed checkpoint. What lies
        beyond it (complete batches a crashed writer never saw acknowledged, a torn batch, a
        forged record) was never signed by this writer and will not be: a writer moves it to
        ``quarantine/`` with a report, a reader only reports it. Damage to what a checkpoint
        signed, or a log older than what this writer last signed, goes to ``problems`` and the
        log refuses appends (the evidence is kept)."""
        notes = self.checkpoint_names()
        latest = None
        if notes and self.verifier is not None:
            try:
                latest = self._load_checkpoint(notes[-1])
            except (SignatureError, AssayError) as e:
                self.problems.append(str(e))
        signed = latest.size if latest else 0
        self._segment_digests: dict[str, tuple[int, str]] = {}
        trusted = self._check_writer_state(latest) if not self.read_only else None
        if not self.read_only and not self.problems and self.verifier is not None:
            self._quarantine_unsigned(signed)
        size, torn = self._count_records()
        self._size = size
        if torn and size < signed:
            # Cutting here would drop signed records: that is damage, not a crash; keep the evidence.
            self.problems.append(f"{torn}, and the signed checkpoint covers records beyond it")
        elif torn and self.read_only:
            self.recovery.append(f"{torn}; a writer would move it to quarantine (that batch was never acknowledged)")
        elif torn and not self.problems:
            self.problems.append(f"{torn} (and no signed checkpoint says where the acknowledged records end)")
        if self.read_only:
            if signed > size:
                self.problems.append(f"checkpoint {notes[-1]} covers {signed} records but the segments hold only {size}")
            elif size > signed and latest is not None:
                self.recovery.append(f"{size - signed} records after the newest signed checkpoint (size {signed}) were "
                                     f"never acknowledged; a writer opening the log moves them to quarantine")
            return
        # The tree cache follows the segments.
        if self._tree.size > size:
            self._tree.truncate(size)
        if self._tree.size < size:
            self._rebuild_tree_from(self._tree.size)
        if latest is not None:
            self._last_checkpoint_time = latest.time or 0.0
            if latest.size > size:
                self.problems.append(
                    f"checkpoint {notes[-1]} covers {latest.size} records but the segments hold only {size}: "
                    f"acknowledged records are missing (a segment was truncated or deleted)")
            elif merkle.root_hash(self._tree, latest.size) != latest.root:
                # The cache disagrees with the signed root: rebuild it from the segments and look again.
                self._rebuild_tree()
                if merkle.root_hash(self._tree, latest.size) != latest.root:
                    self.problems.append(
                        f"the records up to {latest.size} do not hash to the root signed in {notes[-1]}; run `assay trace verify`")
        if trusted is not None and not self.problems and trusted.checkpoint.size <= size and \
                merkle.root_hash(self._tree, trusted.checkpoint.size) != trusted.checkpoint.root:
            self.problems.append(
                f"the records up to {trusted.checkpoint.size} no longer hash to the root this writer signed "
                f"(its state {trusted.path}): the log's history was rewritten")
        if self.recovery and not self.problems:
            for message in self.recovery:
                log.warning("trace recovery: %s", message)
            self.append([Event(kind="trace.recovered", ts=time.time(), subject=self.origin,
                               payload={"messages": list(self.recovery), **self._recovery_payload})])
            self._recovery_payload = {}
        if not self.problems:
            self._finish_pending_erasure()

    def _check_writer_state(self, latest: Checkpoint | None):
        """What this writer last signed, against the log's newest checkpoint: a log that went back
        (newest checkpoints deleted, rolled back to a copy) is refused, never re-signed."""
        from assay.trace import state

        if self._state_path is None or self.verifier is None:
            return None
        try:
            trusted = state.load(self._state_path, self.verifier, self.origin)
        except state.StateUnreadable as e:
            # Torn by a crash (it is written without fsync): start afresh from the log's checkpoints.
            self.recovery.append(f"{e}; the writer's trusted state starts again from the newest checkpoint")
            return None
        except SignatureError as e:
            self.problems.append(f"{e}; remove {self._state_path} only if this key really signed nothing else here")
            return None
        if trusted is None:
            return None
        have = latest.size if latest else 0
        if have < trusted.checkpoint.size:
            self.problems.append(
                f"rollback: this writer signed a checkpoint of size {trusted.checkpoint.size} but the newest checkpoint "
                f"in the log is of size {have} (checkpoints deleted or the log rolled back; writer state "
                f"{self._state_path}); nothing will be signed until this is resolved")
        elif _note_name(trusted.checkpoint.size) not in self.checkpoint_names():
            self.problems.append(
                f"the checkpoint of size {trusted.checkpoint.size} that this writer signed is missing from the log "
                f"(deleted); writer state {self._state_path}")
        return trusted

    def _count_records(self) -> tuple[int, str | None]:
        """Records in the segments (through the newest segment holding a complete batch) and what
        follows the last complete batch, if that is not a clean end (a torn batch, a segment the
        writer died creating)."""
        torn = None
        for name in reversed(self.segment_names()):
            batches, _good, trailing = read_batches(self._read_segment_buffer(name), f"segment {name}")
            torn = torn or trailing
            if batches:
                return int(name[:20]) + sum(b.num_rows for b in batches), torn
        return 0, torn

    def _quarantine_unsigned(self, signed: int) -> None:
        """Move every byte after the newest signed checkpoint (``signed`` records) out of the
        segments into ``quarantine/<signed>-<digest>/``: for each segment the bytes as they were
        (a readable Arrow stream: the segment's schema, then the batches, a torn one included)
        and a ``report.json``; then cut the segments back (fsynced). The cut point in the
        segment holding record ``signed`` is the byte length the checkpoint's signed manifest
        recorded for it. Nothing is signed here: the caller records the quarantine as an event."""
        names = self.segment_names()
        boundary = max((n for n in names if int(n[:20]) < signed), default=None)
        pieces: list[tuple[str, int, bytes]] = []  # (segment, first byte moved, its content in quarantine)
        for name in names:
            data = memoryview(self._read_segment_buffer(name))
            if int(name[:20]) >= signed:
                batches, good, trailing = read_batches(data, f"segment {name}", validate=False)
                if not batches and (not trailing or good == 0) and len(data) <= len(_schema_message(data)):
                    self.recovery.append(f"segment {name} holds no record; removed the empty segment {name}")
                    self.fs.rm(f"{self.root}/segments/{name}")
                    self._forget_segment(name)
                    continue
                pieces.append((name, 0, bytes(data)))
            elif name == boundary:
                cut = self._signed_length(name, signed, len(data))
                if cut is None:
                    return
                if cut < len(data):
                    pieces.append((name, cut, _schema_message(data) + bytes(data[cut:])))
        if not pieces:
            return
        digest = hashlib.sha256(b"".join(p[2] for p in pieces)).hexdigest()
        folder = f"quarantine/{signed:020d}-{digest[:12]}"
        entries = []
        records = torn_bytes = 0
        for name, offset, content in pieces:
            batches, good, trailing = read_batches(content, f"quarantined {name}", validate=False)
            rows = sum(b.num_rows for b in batches)
            torn = len(content) - good if trailing else 0
            records += rows
            torn_bytes += torn
            entries.append({"segment": name, "first_index": signed if offset else int(name[:20]), "records": rows,
                            "torn_bytes": torn, "from_byte": offset, "file": name,
                            "sha256": hashlib.sha256(content).hexdigest()})
            self._write_atomic(f"{folder}/{name}", content)
        report = {"reason": "records after the newest signed checkpoint: never acknowledged by a writer, so never signed",
                  "signed_size": signed, "records": records, "torn_bytes": torn_bytes, "time": time.time(),
                  "segments": entries}
        self._write_atomic(f"{folder}/report.json", canonical.jcs(report))
        for name, offset, _ in pieces:
            if offset == 0:
                self.fs.rm(f"{self.root}/segments/{name}")
            else:
                self._cut_segment(name, offset)
            self._forget_segment(name)
        if self.local and self.fsync:
            _fsync_dir(f"{self.root}/segments")
        what = f"{records} records" + (f" and {torn_bytes} bytes of a torn batch (not a complete record batch)" if torn_bytes else "")
        self.recovery.append(f"{what} after the newest signed checkpoint (size {signed}) were never acknowledged: "
                             f"moved to {folder} (not signed)")
        self._recovery_payload = {"quarantine": folder, "quarantined_records": records,
                                  "quarantined_torn_bytes": torn_bytes, "quarantine_sha256": digest}

    def _signed_length(self, name: str, size: int, length: int) -> int | None:
        """The byte length of segment ``name`` that holds its records up to ``size`` (where the
        batches end), checked against the checkpoint's signed manifest (byte length and SHA-256;
        hashed only when the file is longer, i.e. something follows). A segment an interrupted
        erasure was rewriting no longer matches the older manifest: its records, checked by the
        tree against the signed root, say where it ends. None, with a problem, when the cut
        cannot be established."""
        import json

        note_name = _note_name(size)
        cut = _rows_end(self._read_segment_buffer(name), size - int(name[:20]))
        if name in self._pending_erasure_segments():
            return cut
        try:
            body = self.verifier.verify_note(self._read(f"checkpoints/{note_name}").decode("utf-8", "replace"),
                                             f"checkpoint {note_name}")
            committed = next(line.split(" ", 1)[1] for line in body.splitlines() if line.startswith("segments "))
            raw = self._read(f"checkpoints/{size:020d}{MANIFEST_SUFFIX}")
        except (SignatureError, StopIteration, FileNotFoundError) as e:
            self.problems.append(f"checkpoint {note_name}: its signed segment manifest cannot be read "
                                 f"({e or 'no segments line'}), so the records after it cannot be told from the signed ones")
            return None
        if hashlib.sha256(raw).hexdigest() != committed:
            self.problems.append(f"checkpoint {note_name}: its segment manifest is not the one the note signed (replaced)")
            return None
        entry = next((e for e in json.loads(raw)["segments"] if e["name"] == name), None)
        if entry is None or length < entry["bytes"] or cut is None:
            return None if cut is None else cut  # short: _count_records reports the damage
        if length == cut == entry["bytes"]:
            return cut  # nothing follows: verify checks these bytes
        if cut != entry["bytes"] or hashlib.sha256(memoryview(self._read_segment_buffer(name))[:cut]).hexdigest() != entry["sha256"]:
            self.problems.append(f"segment {name}: its first {entry['bytes']} bytes differ from those signed in "
                                 f"checkpoint {note_name}; run `assay trace verify`")
            return None
        return cut

    def _pending_erasure(self) -> dict[str, Any] | None:
        import json

        try:
            return json.loads(self._read(PENDING_ERASURE))
        except FileNotFoundError:
            return None
        except ValueError:
            self.problems.append(f"{PENDING_ERASURE} is not readable JSON: an erasure was interrupted; look at it before going on")
            return None

    def _pending_erasure_segments(self) -> list[str]:
        pending = self._pending_erasure()
        return pending["segments"] if pending else []

    def _cut_segment(self, name: str, length: int) -> None:
        path = f"{self.root}/segments/{name}"
        if self.local:
            with open(path, "r+b") as f:
                f.truncate(length)
                f.flush()
                os.fsync(f.fileno())
        else:
            self.fs.pipe_file(path, self._read(f"segments/{name}")[:length])

    def _forget_segment(self, name: str) -> None:
        """Drop what was cached about a segment whose bytes changed (tables, digests, why index)."""
        self._tables.pop(name, None)
        self._segment_digests.pop(name, None)
        self.__dict__.get("_why_index", {}).pop(name, None)
        if self.local:
            for path in Path(self.root, "index").glob(f"{name}.*"):
                path.unlink(missing_ok=True)

    def _rebuild_tree_from(self, start: int) -> None:
        for table in self._iter_segments(columns=["index", "record_hash"], start=start):
            self._tree.append(_leaf_hashes(_fixed_bytes(table.column("record_hash").combine_chunks()), self.threads))

    def _rebuild_tree(self) -> None:
        """Recompute the tree cache from the segments' record hashes. A writer rewrites
        ``tree.bin``; a reader (which must not write under a live writer) builds a private copy."""
        with self._lock:
            if self.read_only:
                import tempfile

                if self._scratch_dir is None:
                    self._scratch_dir = tempfile.TemporaryDirectory(prefix="assay-trace-tree-")
                self._tree.close()
                path = Path(self._scratch_dir.name) / "tree.bin"
                path.unlink(missing_ok=True)
                self._tree = TreeFile(path, fsync=False, threads=self.threads)
            else:
                self._tree.truncate(0)
            self._rebuild_tree_from(0)

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

    def erase(self, subject_id: str, reason: str = "data subject request") -> dict[str, Any]:
        """Erase every record about ``subject_id``: each keeps only what its proof needs (index,
        record hash, that it is an erased decision); every payload field is removed from every
        file under the log (segments, quarantined tails, the ``why`` item index): each affected
        file is rewritten, fsynced and swapped in, the old one gone. Then the erasure is appended
        as a ``trace.erasure`` event (the indices and the reason, not the subject) and a
        checkpoint signs it. The tree, every checkpoint's root and every other record's proof are
        unchanged. A crash in between leaves ``erasure.pending.json``; the next writer finishes it."""
        if self.read_only:
            raise BadInput("this log was opened read-only")
        if not isinstance(reason, str):
            raise BadInput("the erasure reason must be text")
        canonical.check_text(reason, "the erasure reason")
        pseudonym = self.pseudonymiser.one(subject_id)
        with self._lock:
            if self.problems:
                raise TamperError(["refusing to erase in a log that failed its checks:", *self.problems])
            indices, segments = self._find_subject(pseudonym)
            pending = {"pseudonym": pseudonym, "indices": indices, "reason": reason, "event_index": self._size,
                       "segments": segments, "quarantine": self._quarantine_files_with(pseudonym)}
            self._write_atomic(PENDING_ERASURE, canonical.jcs(pending))
            return self._complete_erasure(pending)

    def _complete_erasure(self, pending: dict[str, Any]) -> dict[str, Any]:
        """Rewrite the files, then append and sign the erasure event, then drop the pending note."""
        rewritten = self._apply_erasure(pending["pseudonym"], pending["segments"], pending["quarantine"])
        self.append([Event(kind="trace.erasure", ts=time.time(), subject="",
                           payload={"indices": pending["indices"], "count": len(pending["indices"]),
                                    "reason": pending["reason"]})])
        if _note_name(self._size) not in self.checkpoint_names():
            self._publish_checkpoint()  # the erasure is signed, and the new bytes are in its manifest
        self._remove(PENDING_ERASURE)
        return {"erased": len(pending["indices"]), "indices": pending["indices"], "event_index": self._size - 1,
                "files_rewritten": rewritten}

    def _find_subject(self, pseudonym: str) -> tuple[list[int], list[str]]:
        """Indices of the subject's decisions not yet erased, and the segments holding them."""
        indices: list[int] = []
        segments: list[str] = []
        for name, table in self._named_segments(["index", "subject_id", "erased"]):
            found = []
            for subjects, index, erased in zip(table.column("subject_id").chunks, table.column("index").chunks,
                                               table.column("erased").chunks, strict=True):
                mask = _subject_mask(subjects, erased, pseudonym)
                if mask is not None:
                    found.extend(pc.filter(index, mask).to_pylist())
            if found:
                indices.extend(found)
                segments.append(name)
        return indices, segments

    def _quarantine_files_with(self, pseudonym: str) -> list[str]:
        """Quarantined segment files whose bytes hold the subject's pseudonym."""
        out = []
        for folder in self._list("quarantine"):
            for name in self._list(f"quarantine/{folder}"):
                if name.endswith(SEGMENT_SUFFIX) and pseudonym.encode() in self._read(f"quarantine/{folder}/{name}"):
                    out.append(f"quarantine/{folder}/{name}")
        return sorted(out)

    def _apply_erasure(self, pseudonym: str, segments: Sequence[str], quarantined: Sequence[str]) -> int:
        """Rewrite each file with the subject's decisions reduced to index, hash and the erased
        flag (dictionaries rebuilt from the values left, so no erased value stays in a
        dictionary either). A quarantined torn tail that holds the pseudonym is dropped: it
        cannot be read, so it cannot be erased in part. Returns how many files were rewritten."""
        if self._active:
            self._active.close()
            self._active = None
        rewritten = 0
        for rel in [f"segments/{name}" for name in segments] + list(quarantined):
            name = rel.rsplit("/", 1)[-1]
            data = self._read_segment_buffer(name) if rel.startswith("segments/") else pa.py_buffer(self._read(rel))
            units, good, trailing = _appends(data, rel)
            if trailing and rel.startswith("segments/"):
                raise TamperError([trailing])
            changed = [_erased_batch(batch, pseudonym) for batch, _ in units]
            torn = bytes(memoryview(data)[good:]) if trailing else b""
            tail = b"" if pseudonym.encode() in torn else torn
            if all(c is None for c in changed) and tail == torn:
                continue
            for batch, c in zip(units, changed, strict=True):
                if c is not None:
                    batch[0].validate(full=True)  # what is decoded and re-encoded is checked first
            # Appends that hold none of the subject's records are copied byte for byte.
            out = [_schema_message(data), *(encode_batch(c) if c is not None else raw
                                            for (_, raw), c in zip(units, changed, strict=True)), tail]
            if rel.startswith("segments/"):
                digest = hashlib.sha256()
                hashed = hashing.pool("side").submit(lambda d=digest, pieces=out: [d.update(p) for p in pieces])
                length = sum(len(piece) for piece in out)
                self._forget_segment(name)
                try:
                    self._write_atomic(rel, out)  # while the new bytes are hashed (both release the GIL)
                finally:
                    hashed.result()
                self._segment_digests[name] = (length, digest.hexdigest())
                self._rewritten[name] = (length, digest)
            else:
                self._write_atomic(rel, out)
            del data, units, out
            rewritten += 1
        return rewritten

    def _finish_pending_erasure(self) -> None:
        """An erasure interrupted by a crash is finished: its files rewritten (again: rewriting is
        idempotent) and its event appended, unless that event was already signed."""
        pending = self._pending_erasure()
        if pending is None:
            return
        index = pending["event_index"]
        if index < self._size:
            record = self.record(index)
            if record["type"] == "event" and record["kind"] == "trace.erasure":
                self._remove(PENDING_ERASURE)
                return
        with self._lock:
            result = self._complete_erasure(pending)
        self.recovery.append(f"finished an erasure interrupted by a crash ({result['erased']} records; event #{result['event_index']})")

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


class _ActiveSegment:
    """The segment being appended to: raw IPC messages, fsync per batch, a running SHA-256."""

    def __init__(self, path: str, name: str, fsync: bool, rows: int, hashed: tuple[int, Any] | None = None):
        """``hashed``: (length, SHA-256 object) of the file's bytes when the caller just wrote them
        (an erasure's rewrite), so they are not read back and hashed again."""
        self.name = name
        self.fsync = fsync
        self.rows = rows
        exists = os.path.exists(path) and os.path.getsize(path) > 0
        self._hash = hashlib.sha256()
        if exists and hashed is not None and hashed[0] == os.path.getsize(path):
            self._hash = hashed[1].copy()
        elif exists:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    self._hash.update(chunk)
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across appends
        self._fd = os.open(path, os.O_WRONLY)  # positional writes (the file object appends)
        self.length = self._file.tell()
        if not exists:
            self.write(canonical.SEGMENT_SCHEMA.serialize().to_pybytes(), rows=0)
            if fsync:
                _fsync_dir(os.path.dirname(path))

    def write(self, data: bytes | memoryview, rows: int, overlap: bool = False) -> None:
        """Append, fsync, and extend the running SHA-256 (the signed manifest commits to it).
        ``overlap``: hash on another thread while this one writes (both release the GIL)."""
        hashed = hashing.pool("side").submit(self._hash.update, data) if overlap else None
        try:
            self._file.write(data)
            self._file.flush()
            if self.fsync:
                # The disk starts on the bytes now and the CPU hashes them meanwhile: fsync waits less.
                _start_writeback(self._file.fileno(), self.length, len(data))
            if hashed is None:
                self._hash.update(data)
            if self.fsync:
                os.fsync(self._file.fileno())
        finally:
            if hashed is not None:
                hashed.result()
        self.length += len(data)
        self.rows += rows

    def pwrite(self, data: bytes | memoryview, offset: int) -> None:
        view = memoryview(data)
        start, size = offset, len(view)
        while len(view):
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        if self.fsync:
            _start_writeback(self._fd, start, size)  # written out while the batch's hashes are computed

    def commit(self, parts: Sequence[bytes | memoryview], rows: int) -> None:
        """Make a batch written with ``pwrite`` at ``length`` durable, and extend the running hash
        with its parts (in order) on another thread meanwhile."""
        hashed = hashing.pool("side").submit(lambda: [self._hash.update(p) for p in parts])
        try:
            if self.fsync:
                os.fsync(self._fd)
        finally:
            hashed.result()
        self.length += sum(len(p) for p in parts)
        self.rows += rows

    def cut(self, length: int) -> None:
        """Undo a batch that was not acknowledged: back to ``length`` bytes."""
        os.ftruncate(self._fd, length)
        if self.fsync:
            os.fsync(self._fd)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def _subject_mask(subjects: pa.Array, erased: pa.Array, pseudonym: str) -> pa.Array | None:
    """Rows of one chunk that are the subject's and not yet erased (None: no such row). The
    pseudonym is looked up once in the chunk's dictionary, then matched on the indices."""
    if pa.types.is_dictionary(subjects.type):
        position = pc.index(subjects.dictionary, pseudonym).as_py()
        if position < 0:
            return None
        mask = pc.equal(subjects.indices, position)
    else:
        mask = pc.equal(subjects, pseudonym)
    mask = pc.fill_null(pc.and_(mask, pc.invert(erased)), False)
    return mask if pc.any(mask).as_py() else None


KEPT_WHEN_ERASED = ("index", "record_hash", "type")  # what a proof of an erased decision needs


def _erased_batch(batch: pa.RecordBatch, pseudonym: str) -> pa.RecordBatch | None:
    """The batch with the subject's decisions reduced to index, record hash, type and the erased
    flag; None if it holds none of them. Each nulled column is rebuilt (not masked): string data
    and dictionaries hold only the values that remain."""
    mask = _subject_mask(batch.column("subject_id"), batch.column("erased"), pseudonym)
    if mask is None:
        return None
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name in KEPT_WHEN_ERASED:
            arrays.append(column)
        elif name == "erased":
            arrays.append(pc.or_(column, mask))
        else:
            arrays.append(_null_where(column, mask))
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _null_where(column: pa.Array, mask: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        plain = pc.if_else(mask, pa.scalar(None, column.type.value_type), column.cast(column.type.value_type))
        return pc.dictionary_encode(plain)
    if pa.types.is_list(column.type) and pa.types.is_dictionary(column.type.value_type):
        plain_type = pa.list_(column.type.value_type.value_type)
        plain = pc.if_else(mask, pa.scalar(None, plain_type), column.cast(plain_type))
        if len(plain.flatten()) != plain.offsets[-1].as_py() - plain.offsets[0].as_py():
            plain = pa.array(plain.to_pylist(), plain_type)  # null lists backed by values: build them clean
        return _encode_items(plain)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        # A null slot of a fixed-width column still has bytes in the values buffer, and kernels
        # may leave the old value there: write zeros under every null.
        nulls = pc.or_(pc.fill_null(mask, False), column.is_null()).to_numpy(zero_copy_only=False)
        values = column.fill_null(0).to_numpy(zero_copy_only=False).copy()
        values[nulls] = 0
        return pa.array(values, type=column.type, mask=nulls)
    out = pc.if_else(mask, pa.scalar(None, column.type), column)
    if pa.types.is_string(column.type) and out.null_count:
        # Keep no bytes of a nulled value in the data buffer (if_else copies only kept values;
        # this makes it a rule, not an implementation detail).
        offsets = np.frombuffer(out.buffers()[1], np.int32, count=len(out) + 1, offset=out.offset * 4)
        if int(offsets[-1] - offsets[0]) != (pc.sum(pc.binary_length(out)).as_py() or 0):
            out = pa.array(out.to_pylist(), column.type)
    return out


def _appends(data, where: str) -> tuple[list[tuple[pa.RecordBatch, bytes | memoryview]], int, str | None]:
    """A segment as its appends: each record batch with its bytes as written (its dictionaries
    and itself), the offset after the last complete one, and what follows it if that is not a
    clean end. Segments in the legacy schema are decoded and re-encoded whole (their bytes are
    not the current format)."""
    view = memoryview(data)
    source = pa.BufferReader(data if isinstance(data, pa.Buffer) else pa.py_buffer(data))
    try:
        stream = pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError, EOFError):
        batches, good, trailing = read_batches(data, where)
        return [(b, bytes(encode_batch(b))) for b in batches], good, trailing
    if stream.schema != canonical.SEGMENT_SCHEMA:
        batches, good, trailing = read_batches(data, where)
        return [(b, bytes(encode_batch(b))) for b in batches], good, trailing
    units: list[tuple[pa.RecordBatch, bytes | memoryview]] = []
    start = source.tell()
    while True:
        try:
            batch = stream.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowException, OSError, EOFError) as e:
            return units, start, f"{where}: {len(view) - start} bytes after byte {start} are not a complete record batch ({e})"
        end = source.tell()
        units.append((batch, view[start:end]))
        start = end
    if start < len(view):  # e.g. an end-of-stream marker: appends never write one
        return units, start, f"{where}: {len(view) - start} bytes after byte {start} are not a complete record batch"
    return units, len(view), None


def _rows_end(data, rows: int) -> int | None:
    """The byte offset in a segment where its first ``rows`` records end (after that batch), or
    None if no batch ends there."""
    if rows == 0:
        return len(_schema_message(data))
    source = pa.BufferReader(data if isinstance(data, pa.Buffer) else pa.py_buffer(data))
    try:
        stream = pa.ipc.open_stream(source)
        seen = 0
        while seen < rows:
            seen += stream.read_next_batch().num_rows
            if seen == rows:
                return source.tell()
    except (pa.ArrowException, OSError, EOFError, StopIteration):
        return None
    return None


def _schema_message(data) -> bytes:
    """The schema message that opens a segment (what makes a cut-off tail a readable stream)."""
    reader = pa.BufferReader(data if isinstance(data, pa.Buffer) else pa.py_buffer(data))
    try:
        pa.ipc.read_message(reader)
    except (pa.ArrowException, OSError, EOFError):
        return canonical.SEGMENT_SCHEMA.serialize().to_pybytes()
    return bytes(memoryview(data)[: reader.tell()])


def _is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _load_sync_file_range():
    """Linux's sync_file_range(2) from libc, or None (elsewhere: fsync alone does the work)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range  # the C library already loaded
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now, without waiting (the fsync that
    follows is still what makes it durable). The disk then works while the CPU hashes."""
    if _SYNC_FILE_RANGE is not None and length:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: a failure only loses the overlap


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_items(lists: pa.ListArray) -> pa.ListArray:
    """A list<string> column with its items dictionary-encoded (list<dictionary<int32, string>>)."""
    offsets = lists.offsets
    if lists.offset or offsets[0].as_py():
        offsets = pc.subtract(offsets, offsets[0])
    items = pc.dictionary_encode(lists.flatten())
    return pa.ListArray.from_arrays(offsets, items, mask=lists.is_null() if lists.null_count else None)


def _body_start(unit: memoryview) -> int:
    """Where the record batch's body starts in an append's bytes (after its dictionaries)."""
    reader = pa.BufferReader(pa.py_buffer(unit))
    while True:
        message = pa.ipc.read_message(reader)
        if message.type == "record batch":
            return reader.tell() - message.body.size


def _fixed_bytes(arr: pa.Array) -> memoryview:
    """The values of a ``binary(32)`` array, concatenated (no copy)."""
    return memoryview(arr.buffers()[1])[arr.offset * 32 : (arr.offset + len(arr)) * 32]


def _with_hashes(table: pa.Table, record_hashes: bytes) -> pa.RecordBatch:
    """The batch to write: ``table`` with its ``record_hash`` column filled."""
    n = table.num_rows
    table = table.set_column(1, "record_hash", pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(32), n, [None, pa.py_buffer(record_hashes)]))
    return table.combine_chunks().to_batches(max_chunksize=n)[0]


def _leaf_hashes(record_hashes: bytes | memoryview | np.ndarray, threads: int | None = None) -> bytes:
    """RFC 9162 leaf hashes of concatenated 32-byte record hashes."""
    return hashing.leaf_hashes(record_hashes, threads)
