"""Recovery when the decision log is opened: a partial batch left by a crash is cut off and
reported, unsigned tails are quarantined, the Merkle tree cache is rebuilt where it disagrees,
and the writer's state is checked against the newest checkpoint. ``TraceLog`` takes these
methods from :class:`Recovery`. Split out of ``log.py`` (issue 22).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from assay.errors import AssayError
from assay.records import Event
from assay.trace import canonical, hashing, merkle
from assay.trace.checkpoint import Checkpoint, SignatureError
from assay.trace.durable import _fsync_dir
from assay.trace.segments import (
    MANIFEST_SUFFIX,
    _fixed_bytes,
    _note_name,
    _rows_end,
    _schema_message,
    read_batches,
)
from assay.trace.tree import TreeFile

log = logging.getLogger("assay.trace")


class TamperError(AssayError):
    """The log does not match its signed checkpoints; ``problems`` says what and where."""

    def __init__(self, problems: list[str]):
        super().__init__("trace log failed verification:\n  " + "\n  ".join(problems))
        self.problems = problems


class Recovery:
    """What ``TraceLog.open`` does to a log a crash left behind (mixed into ``TraceLog``)."""

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
            self._tree.append(hashing.leaf_hashes(_fixed_bytes(table.column("record_hash").combine_chunks()), self.threads))

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
