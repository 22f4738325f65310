"""Reading a file someone else named, bounded: a regular file only, never more than a limit.

A path from a request or a command line may be a FIFO (opening it would wait for a writer
forever), a device such as ``/dev/zero`` (endless), or simply huge. ``read_regular`` opens
without blocking, checks the open descriptor with ``fstat``, and reads at most ``limit + 1``
bytes, so each of these is refused at once. Used by the policy loader (bundle files) and by the
command line's JSON inputs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from assay.errors import BadInput


class FileRefused(BadInput):
    """A file that is not read: not regular, unreadable, or over the limit (``data`` then holds
    the first ``limit + 1`` bytes, so the caller can say where the limit was crossed)."""

    def __init__(self, message: str, data: bytes | None = None):
        super().__init__(message)
        self.data = data


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file at ``path`` if it holds at most ``limit`` bytes."""
    try:
        fd = os.open(Path(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise FileRefused(f"cannot read it: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
            raise FileRefused(f"it is {kind}; only regular files are read")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise FileRefused(f"cannot read it: {e.strerror}") from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    if len(raw) > limit:
        raise FileRefused(f"it is larger than the limit of {limit} bytes", data=raw)
    return raw
