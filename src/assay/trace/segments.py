"""The decision log's files: segment and checkpoint names, and a segment's bytes (an Arrow IPC
stream, one record batch per append): encoding a batch, reading the appends back and finding
where they end. Split out of ``log.py`` (issue 22); ``assay.trace.log`` re-exports the names.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from assay.errors import AssayError
from assay.trace import canonical

SEGMENT_SUFFIX = ".arrows"


NOTE_SUFFIX = ".note"


MANIFEST_SUFFIX = ".manifest.json"


COSIGNATURES_SUFFIX = ".cosignatures"


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
