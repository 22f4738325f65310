"""SHA-256 over many small messages: record hashes, RFC 9162 leaves and nodes.

The native path (``assay.trace._native``, built from ``_native.c`` with OpenSSL) hashes a whole
column per call with the GIL released, so large batches also spread over a thread pool. Without
the extension (no C compiler when the package was installed) the same functions run on
``hashlib`` one message at a time: same bytes, several times slower. ``NATIVE`` says which.

Every function returns the digests concatenated (``n * 32`` bytes), the form the tree file and
the segments' ``record_hash`` column store.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import pyarrow as pa

try:
    from assay.trace import _native
except ImportError:  # pragma: no cover - exercised where the extension could not be built
    _native = None

NATIVE = _native is not None
PARALLEL_MIN = 65_536  # below this a thread pool costs more than it saves
_sha256 = hashlib.sha256


def workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, -(-n // parts))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _map(fn, ranges: list[tuple[int, int]]) -> bytes:
    if len(ranges) <= 1:
        return b"".join(fn(a, b) for a, b in ranges)
    with ThreadPoolExecutor(len(ranges)) as pool:
        return b"".join(pool.map(lambda r: fn(*r), ranges))


# ---------------------------------------------------------------- rows built from column pieces


def _as_part(piece, n: int):
    if isinstance(piece, str):
        return piece.encode()
    if isinstance(piece, bytes):
        return piece
    arr = piece.combine_chunks() if isinstance(piece, pa.ChunkedArray) else piece
    if arr.type not in (pa.string(), pa.binary()) or len(arr) != n or arr.null_count:
        raise ValueError("pieces must be string/binary arrays of the batch length without nulls")
    _, offsets, data = arr.buffers()
    return (offsets, data if data is not None else b"", arr.offset)


def sha256_rows(pieces: Sequence, n: int) -> bytes:
    """SHA-256 of each row's concatenated pieces; a piece is a constant (str/bytes, the same in
    every row) or a string/binary array of ``n`` values without nulls. Equal to hashing
    ``pc.binary_join_element_wise(*pieces, "")`` row by row, without building that array."""
    if n == 0:
        return b""
    parts = [_as_part(p, n) for p in pieces]
    if _native is not None:
        return _native.sha256_rows(parts, n)
    joined = [_row_values(p, n) for p in parts]
    return b"".join(_sha256(b"".join(values)).digest() for values in zip(*joined, strict=True))


def _row_values(part, n: int) -> list[bytes] | Sequence[bytes]:
    if isinstance(part, bytes):
        return [part] * n
    offsets_buf, data, offset = part
    offsets = np.frombuffer(offsets_buf, np.int32, count=n + 1, offset=offset * 4).tolist()
    view = memoryview(data)
    return [bytes(view[a:b]) for a, b in pairwise(offsets)]


def sha256_each(arr: pa.Array) -> bytes:
    """SHA-256 of each value of a string/binary array (a null hashes as the empty string)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.type != pa.binary():
        arr = arr.cast(pa.binary())
    n = len(arr)
    if n == 0:
        return b""
    _, offsets_buf, data_buf = arr.buffers()
    data = data_buf if data_buf is not None else b""
    if _native is not None:
        return _map(lambda a, b: _native.sha256_rows([(offsets_buf, data, arr.offset + a)], b - a),
                    _split(n, workers() if n >= PARALLEL_MIN else 1))
    offsets = np.frombuffer(offsets_buf, np.int32, count=n + 1, offset=arr.offset * 4).tolist()
    view = memoryview(data)
    return b"".join(_sha256(view[a:b]).digest() for a, b in pairwise(offsets))


# ---------------------------------------------------------------- RFC 9162


def leaf_hashes(record_hashes: bytes | np.ndarray) -> bytes:
    """SHA-256(0x00 ‖ h) for each 32-byte record hash ``h`` (concatenated in, concatenated out)."""
    data = _bytes(record_hashes)
    if len(data) % 32:
        raise ValueError("record hashes must be 32 bytes each")
    if _native is not None:
        n = len(data) // 32
        return _map(lambda a, b: _native.leaf_hashes(data[32 * a : 32 * b]),
                    _split(n, workers() if n >= PARALLEL_MIN else 1))
    view = memoryview(data)
    return b"".join(_sha256(b"\x00" + view[i : i + 32]).digest() for i in range(0, len(data), 32))


def node_hashes(pairs: bytes | np.ndarray) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right) for each 64-byte ``left ‖ right`` (concatenated)."""
    data = _bytes(pairs)
    if len(data) % 64:
        raise ValueError("node pairs must be 64 bytes each")
    if _native is not None:
        n = len(data) // 64
        return _map(lambda a, b: _native.node_hashes(data[64 * a : 64 * b]),
                    _split(n, workers() if n >= PARALLEL_MIN else 1))
    view = memoryview(data)
    return b"".join(_sha256(b"\x01" + view[i : i + 64]).digest() for i in range(0, len(data), 64))


def _bytes(value: bytes | np.ndarray) -> memoryview:
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value, dtype=np.uint8)
    return memoryview(value).cast("B")
