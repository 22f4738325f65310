"""Reading a file someone else named, bounded: a regular file only, never more than a limit.

A path from a request or a command line may be a FIFO (opening it would wait for a writer
forever), a device such as ``/dev/zero`` (endless), or simply huge. ``read_regular`` opens
without blocking, checks the open descriptor with ``fstat``, and reads at most ``limit + 1``
bytes, so each of these is refused at once. Used by the policy loader (bundle files) and, through
``read_json``, by the command line's JSON inputs.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assay.errors import BadInput, LocatedError, Location


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


JSON_LIMIT = 16 << 20  # a JSON input file: what the HTTP services take as one request body


def refuse_constant(name: str) -> Any:
    """``json.loads``'s ``parse_constant``: NaN, Infinity and -Infinity are not JSON (RFC 8259),
    and the HTTP services' parser (orjson) refuses them too."""
    raise ValueError(f"{name} is not a JSON number")


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float as ``None``: what the command line prints must
    be JSON (RFC 8259 has no NaN), and an undefined metric (no relevant items, an empty run) is
    ``null`` there, as it is in run logs."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:  # numpy scalars
        return strict_json(value.item())
    return value


def dumps_json(value: Any, **options: Any) -> str:
    """``json.dumps`` for what a command prints: non-finite floats become null
    (:func:`strict_json`), so the output always parses as JSON; ``options`` as for ``json.dumps``
    (``default=str`` unless given)."""
    options.setdefault("default", str)
    return json.dumps(strict_json(value), allow_nan=False, **options)


class _RepeatedKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a name twice in one object (RFC 8259: names SHOULD be
    unique; ``json`` keeps the last, so the first would vanish without a word)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def parse_json(text: str, where: str, *, what: str = "", first_line: int = 1, unique_keys: bool = False) -> Any:
    """One JSON document, or a ``LocatedError`` (bad input) saying ``where`` it is not JSON, at
    which line and column (``first_line``: the line ``text`` starts on; column 1 when the parser
    names none).

    Every way a hostile document fails is that error, not an exception of the parser's own:
    NaN/Infinity, nesting deeper than the parser's stack (``RecursionError``) and an integer of
    more than 4,300 digits (``ValueError`` from ``int``) included."""
    what = f"{what}: " if what else ""
    try:
        return json.loads(text, parse_constant=refuse_constant, object_pairs_hook=_unique_pairs if unique_keys else None)
    except _RepeatedKey as e:
        line = f":{first_line}" if "\n" not in text.strip() else ""
        raise BadInput(f"{where}{line}: {what}the name {e.args[0]!r} appears twice in one object") from None
    except json.JSONDecodeError as e:
        raise LocatedError(f"{what}not JSON: {e.msg}", Location(where, first_line + e.lineno - 1, e.colno)) from None
    except RecursionError:
        raise LocatedError(f"{what}not JSON: nested too deeply", Location(where, first_line, 1)) from None
    except ValueError as e:
        line, column = _constant_at(text) if str(e).endswith("is not a JSON number") else (1, 1)
        raise LocatedError(f"{what}not JSON: {str(e).split(';')[0][:200]}", Location(where, first_line + line - 1, column)) from None


def _constant_at(text: str) -> tuple[int, int]:
    """(line, column) of the first NaN/Infinity outside a string: ``json`` refuses it through
    ``parse_constant`` without saying where, and an error should point at it."""
    in_string = escaped = False
    line, start = 1, 0
    for i, ch in enumerate(text):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch == "\n":
            line, start = line + 1, i + 1
        elif ch in "NI" and text.startswith(("NaN", "Infinity"), i):
            return line, i - start + (0 if i and text[i - 1] == "-" else 1)
    return 1, 1


def read_jsonl(path: str | os.PathLike, what: str, *, unique_keys: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, document) of each non-blank line of the regular file at ``path``
    (``check_regular``), read a line at a time, so a file of any length is streamed. A line that
    is not UTF-8 or not JSON is a ``LocatedError`` at its file:line:column (``parse_json``)."""
    p = check_regular(path, what)
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LocatedError(f"{what}: not UTF-8", Location(str(p), lineno, e.start + 1)) from None
            if line.strip():  # parsed without its line ending, so an error at its end stays on its line
                yield lineno, parse_json(line.rstrip("\r\n"), str(p), what=what, first_line=lineno, unique_keys=unique_keys)


def read_json(path: str | os.PathLike, what: str, *, limit: int = JSON_LIMIT, lines: bool = False, unique_keys: bool = False) -> Any:
    """The JSON document (with ``lines``, the list of JSON Lines documents, blank lines skipped) in
    the regular file at ``path`` of at most ``limit`` bytes (``read_regular``: a FIFO, a device or a
    folder is refused at once). Any problem is ``BadInput`` naming the file, ``what`` it was to
    hold, and where a decoding or syntax error is, ``file:line[:column]``."""
    text = read_text(path, what, limit=limit)
    if not lines:
        return parse_json(text, str(path), what=what, unique_keys=unique_keys)
    return [parse_json(line, str(path), what=what, first_line=n, unique_keys=unique_keys) for n, line in enumerate(text.split("\n"), start=1)
            if line.strip()]


def read_text(path: str | os.PathLike, what: str, *, limit: int) -> str:
    """The UTF-8 text of the regular file at ``path`` of at most ``limit`` bytes (``read_regular``).
    Any problem is ``BadInput`` naming the file and ``what`` it was to hold; bytes that are not
    UTF-8 are a ``LocatedError`` at their ``file:line:column``."""
    try:
        raw = read_regular(path, limit)
    except FileRefused as e:
        raise BadInput(f"{path}: {what}: {e.message}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LocatedError(f"{what}: not UTF-8", Location.of_offset(str(path), raw, e.start)) from None


def check_regular(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it names a regular file (after symbolic links), else ``BadInput`` naming ``what``
    and what it is instead: for readers that stream a file themselves (Arrow, line by line)."""
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise BadInput(f"{what}: cannot read {p}: no such file") from None
    except OSError as e:
        raise BadInput(f"{what}: cannot read {p}: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a folder" if stat.S_ISDIR(mode) else "not a regular file")
        raise BadInput(f"{what}: {p} is {kind}; only regular files are read")
    return p


TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".ndjson")


def read_table(path: str | os.PathLike, what: str) -> Any:
    """The Arrow table in a regular .parquet, .csv or .jsonl file; a file Arrow cannot read (not
    that format, damaged, ragged, empty) is ``BadInput`` naming ``what``, the file and Arrow's reason."""
    import pyarrow as pa

    p = check_regular(path, what)
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise BadInput(f"{what}: unsupported format {suffix!r} ({p}); use .parquet, .csv or .jsonl")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(p)
        import pyarrow.json as pjson

        return pjson.read_json(p)
    except (pa.ArrowException, OSError) as e:
        raise BadInput(f"{what}: cannot read {p} as {suffix[1:]}: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}") from None
