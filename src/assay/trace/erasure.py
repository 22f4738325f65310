"""Erasure of a data subject from the decision log: the personal columns of each of their
decisions are nulled and the segments rewritten, the record hashes (and so every proof) kept;
an erasure interrupted by a crash is finished by the next writer. ``TraceLog`` takes these
methods from :class:`Erasure`. Split out of ``log.py`` (issue 22).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assay.errors import BadInput
from assay.records import Event
from assay.trace import canonical, hashing
from assay.trace.recovery import TamperError
from assay.trace.segments import (
    SEGMENT_SUFFIX,
    _appends,
    _encode_items,
    _note_name,
    _schema_message,
    encode_batch,
)

PENDING_ERASURE = "erasure.pending.json"  # an erasure between its signed event and its last rewrite  # witness cosignature lines for the note of that size


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


class Erasure:
    """``TraceLog.erase`` and the steps that make it crash-safe (mixed into ``TraceLog``)."""

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
