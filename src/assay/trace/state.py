"""Trusted state kept outside a log: what a writer last signed, and what a verifier last verified.

A log that can be rolled back (its newest checkpoints deleted, its segments cut) cannot notice on
its own: the files it would compare against are the ones that were changed. So whoever depends on
the log remembers, in a file outside the log's folder, the newest checkpoint it saw:

- the **writer** remembers the newest checkpoint it signed; opening a log whose newest checkpoint
  is older (or whose records no longer hash to that root) is refused, never "repaired" by signing
  what is there;
- **verify** remembers the newest checkpoint it verified and the sizes of every checkpoint it saw;
  a later run fails, naming the sizes, on a rollback, a truncation, a rewritten history or a
  deleted checkpoint.

The state holds the signed checkpoint note itself, so a state file edited by hand does not verify.
Files live under ``ASSAY_HOME/state/trace/<writer|verifier>/``, one per log (its origin, its
location and the key that signs it), unless a path is given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.config import settings
from assay.errors import BadInput
from assay.files import FileRefused, read_regular
from assay.trace.checkpoint import Checkpoint, SignatureError, Verifier

STATE_LIMIT = 64 << 20  # a note and the checkpoint sizes, compressed: far below this


class StateUnreadable(SignatureError):
    """The state file is not a state file at all (empty, torn, not JSON)."""


@dataclass(frozen=True)
class TrustedState:
    path: Path
    checkpoint: Checkpoint
    note: str  # the signed checkpoint note, as the log published it
    sizes: tuple[int, ...]  # the checkpoint sizes present when it was recorded (verifier state only)
    recorded_at: float


def default_path(role: str, origin: str, location: str, verifier: Verifier) -> Path:
    """The state file of ``role`` ("writer" or "verifier") for one log."""
    identity = "\n".join((origin, location, verifier.vkey()))
    return settings().home / "state" / "trace" / role / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"


def load(path: Path, verifier: Verifier, origin: str) -> TrustedState | None:
    """The state at ``path``, or None if there is none. Raises ``SignatureError`` when the stored
    checkpoint does not verify with ``verifier`` (the file was edited, or belongs to another key)."""
    if not os.path.lexists(path):
        return None
    try:  # a regular file of bounded size: a FIFO would hang verify, /dev/zero exhaust its memory
        raw = read_regular(path, STATE_LIMIT)
    except FileRefused as e:
        raise BadInput(f"trusted state {path}: {e.message}") from None
    try:
        data = json.loads(raw)
        note = data["note"]
        sizes = _decode_sizes(data.get("sizes", ""))
        recorded_at = float(data["recorded_at"])
    except (ValueError, KeyError, TypeError, zlib.error, RecursionError) as e:
        raise StateUnreadable(f"trusted state {path}: not a trusted-state file ({e})") from e
    checkpoint = Checkpoint.open(note, verifier, origin, where=f"trusted state {path}")
    return TrustedState(path, checkpoint, note, sizes, recorded_at)


def save(path: Path, note: str, sizes: list[int] | tuple[int, ...] = (), fsync: bool = True) -> None:
    """Replace the state atomically (a crash leaves the old state or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"note": note, "sizes": _encode_sizes(sizes), "recorded_at": time.time()}).encode(), fsync)


def write_atomic(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write beside the file, fsync, rename over it, fsync the folder (with ``fsync``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _encode_sizes(sizes) -> str:
    """Sorted sizes as zlib-compressed deltas (a log with a checkpoint a second keeps millions)."""
    values = np.asarray(sorted(sizes), dtype=np.uint64)
    deltas = np.diff(values, prepend=np.uint64(0)) if len(values) else values
    return base64.b64encode(zlib.compress(deltas.astype("<u8").tobytes(), 6)).decode()


def _decode_sizes(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    deltas = np.frombuffer(zlib.decompress(base64.b64decode(text, validate=True)), "<u8")
    return tuple(int(x) for x in np.cumsum(deltas, dtype=np.uint64))
