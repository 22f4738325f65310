"""SHA-256 over many small messages: record hashes, RFC 9162 leaves and nodes.

The C extension (``assay.trace._native``, built from ``_native.c`` with OpenSSL; required: the
build fails without a compiler) hashes a whole column per call with the GIL released, so large
batches also spread over a thread pool. ``hashlib`` is the oracle it is tested against
(tests/trace/test_trace_native.py), not a fallback.

Every function returns the digests concatenated (``n * 32`` bytes), the form the tree file and
the segments' ``record_hash`` column store.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa

from assay.trace import _native

PARALLEL_MIN = 16_384  # below this a thread pool costs more than it saves (~0.1 ms a hand-off)
MAX_THREADS = 8


THREADS_ENV = "ASSAY_TRACE_THREADS"


def workers(threads: int | None = None) -> int:
    """Threads a batch is split over: ``threads`` if given, else ``ASSAY_TRACE_THREADS``, else
    the CPU count (at most 8). 1 means everything runs on the calling thread."""
    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise ValueError(f"{THREADS_ENV} must be a whole number, got {os.environ[THREADS_ENV]!r}") from None
    if threads is not None:
        return max(1, min(MAX_THREADS, int(threads)))
    return max(1, min(MAX_THREADS, os.cpu_count() or 1))


# Two long-lived pools (threads are started once, not per call). Chunk tasks (hash or build one
# slice) never wait on other tasks; side tasks (write the tree, hash the segment bytes, check a
# segment in verify) may wait on chunk tasks, so they have their own pool and cannot starve it.
_POOLS: dict[str, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def pool(kind: str = "chunk") -> ThreadPoolExecutor:
    executor = _POOLS.get(kind)
    if executor is None:
        with _POOLS_LOCK:
            executor = _POOLS.get(kind)
            if executor is None:
                executor = ThreadPoolExecutor(MAX_THREADS * 2, thread_name_prefix=f"assay-trace-{kind}")
                _POOLS[kind] = executor
    return executor


def parallel_map(fn, items: Sequence, threads: int | None = None) -> list:
    """``[fn(x) for x in items]`` over at most ``threads`` threads (default: the CPU count): the
    calling thread takes the first share (it would otherwise only wait), the chunk pool the
    others; each share is a run of consecutive items. ``fn`` must not wait on the pool."""
    items = list(items)
    parts = min(len(items), workers(threads))
    if parts <= 1:
        return [fn(x) for x in items]
    step = -(-len(items) // parts)
    shares = [items[a : a + step] for a in range(0, len(items), step)]
    run = lambda share: [fn(x) for x in share]  # noqa: E731
    futures = [pool().submit(run, share) for share in shares[1:]]
    try:
        first = run(shares[0])
    finally:
        rest = [f.result() for f in futures]  # always collected: no task outlives the call
    return [*first, *(x for share in rest for x in share)]


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    step = max(1, -(-n // parts))
    return [(a, min(n, a + step)) for a in range(0, n, step)]


def _map(fn, ranges: list[tuple[int, int]]) -> bytes:
    return b"".join(parallel_map(lambda r: fn(*r), ranges, len(ranges)))


def _ranges(n: int, threads: int | None) -> list[tuple[int, int]]:
    return _split(n, workers(threads) if n >= PARALLEL_MIN else 1)


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
    return _native.sha256_rows([_as_part(p, n) for p in pieces], n)


def _validity(arr: pa.Array):
    return arr.buffers()[0] if arr.null_count else None


def string_part(arr: pa.Array, quoted: bool, null: bytes | None = b"null") -> tuple:
    """A string column for ``json_rows``: each value as a JSON string literal (``quoted``) or as
    is (pre-formatted JSON); a null as ``null``."""
    _, offsets, data = arr.buffers()
    return (1 if quoted else 0, offsets, data if data is not None else b"", arr.offset, _validity(arr), null)


def int_part(arr: pa.Array, null: bytes | None = b"null") -> tuple:
    """An int64 column for ``json_rows``: each value as a JSON number."""
    return (2, arr.buffers()[1], arr.offset, _validity(arr), null)


def list_part(arr: pa.Array, null: bytes | None = b"[]") -> tuple:
    """A list<string> column for ``json_rows``: each list as a JSON array of string literals (a
    null string inside as ``null``; a null list as ``null``)."""
    values = arr.values  # the whole child array: the list offsets index it from its own offset
    if pa.types.is_dictionary(values.type):  # list<dictionary<int32, string>>, as segments store it
        if values.indices.type != pa.int32():
            raise ValueError("dictionary columns must have int32 indices")
        words = values.dictionary
        _, word_offsets, word_data = words.buffers()
        return (6, arr.buffers()[1], arr.offset, _validity(arr), null, values.buffers()[1], values.offset,
                _validity(values), word_offsets, word_data if word_data is not None else b"", words.offset, len(words))
    _, offsets, data = values.buffers()
    return (3, arr.buffers()[1], arr.offset, _validity(arr), null, offsets, data if data is not None else b"",
            values.offset, _validity(values))


def numbers_part(arr: pa.Array) -> tuple:
    """A float64 column for ``json_rows``: each value in ECMAScript's number form (RFC 8785), a
    null as ``null``. orjson writes the shortest round-trip digits (~3x faster than Arrow's
    formatter); the extension only moves the decimal point where ECMAScript puts it. Values must
    be finite (a non-finite one would come out as ``null``: the caller refuses them first)."""
    import orjson

    values = arr.to_numpy(zero_copy_only=False)  # nulls become NaN, which orjson writes as null
    return (5, orjson.dumps(np.ascontiguousarray(values, dtype=np.float64), option=orjson.OPT_SERIALIZE_NUMPY))


def dict_part(arr: pa.DictionaryArray, null: bytes | None = b"null") -> tuple:
    """A dictionary<int32, string> column for ``json_rows``: each value as a JSON string literal."""
    if arr.indices.type != pa.int32():
        raise ValueError("dictionary columns must have int32 indices")
    words = arr.dictionary
    _, offsets, data = words.buffers()
    return (4, arr.buffers()[1], arr.offset, _validity(arr), null, offsets, data if data is not None else b"",
            words.offset, len(words))


def json_rows(parts: Sequence, n: int) -> bytes:
    """SHA-256 of each row's JSON built from a template of constants and typed column parts
    (``string_part``, ``int_part``, ``list_part``): one pass over the rows, natively."""
    return _native.json_rows(list(parts), n) if n else b""


def json_text(parts: Sequence, n: int) -> pa.Array:
    """The JSON ``json_rows`` hashes, as a string array."""
    offsets, data = _native.json_rows(list(parts), n, True)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def sha256_each(arr: pa.Array, threads: int | None = None) -> bytes:
    """SHA-256 of each value of a string/binary array (a null hashes as the empty string)."""
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    if arr.type != pa.binary():
        arr = arr.cast(pa.binary())
    n = len(arr)
    if n == 0:
        return b""
    _, offsets_buf, data_buf = arr.buffers()
    data = data_buf if data_buf is not None else b""
    return _map(lambda a, b: _native.sha256_rows([(offsets_buf, data, arr.offset + a)], b - a), _ranges(n, threads))


# ---------------------------------------------------------------- RFC 9162


def leaf_hashes(record_hashes: bytes | np.ndarray, threads: int | None = None) -> bytes:
    """SHA-256(0x00 ‖ h) for each 32-byte record hash ``h`` (concatenated in, concatenated out)."""
    return _prefixed(record_hashes, 32, _native.leaf_hashes, "record hashes must be 32 bytes each", threads)


def node_hashes(pairs: bytes | np.ndarray, threads: int | None = None) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right) for each 64-byte ``left ‖ right`` (concatenated)."""
    return _prefixed(pairs, 64, _native.node_hashes, "node pairs must be 64 bytes each", threads)


def _prefixed(value: bytes | np.ndarray, width: int, fn, misfit: str, threads: int | None) -> bytes:
    """``fn`` (SHA-256 of a domain prefix ‖ m, RFC 9162: 0x00 for leaves, 0x01 for nodes) over
    each ``width``-byte message m of ``value``, split over threads for large batches."""
    data = _bytes(value)
    if len(data) % width:
        raise ValueError(misfit)
    return _map(lambda a, b: fn(data[width * a : width * b]), _ranges(len(data) // width, threads))


def _bytes(value: bytes | np.ndarray) -> memoryview:
    if isinstance(value, np.ndarray):
        value = np.ascontiguousarray(value, dtype=np.uint8)
    return memoryview(value).cast("B")
