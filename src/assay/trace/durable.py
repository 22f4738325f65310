"""The durable writer under the decision log: the segment being appended to (raw IPC messages,
an fsync per batch, a running SHA-256), writeback started early with ``sync_file_range`` and
folder fsyncs. Split out of ``log.py`` (issue 22).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from typing import Any

from assay.trace import canonical, hashing


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
