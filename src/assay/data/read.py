"""Reading a public dataset's files: the one place where the loaders of ``assay.data`` turn a file
into records and check their fields, so that a damaged, truncated or hostile copy is a
``BadInput`` naming the file, the line and what is wrong -- never a traceback, a hang, or a
record silently dropped or guessed.

Files are read through ``assay.files`` (a regular file only: a FIFO, a folder, a device or a
symbolic-link loop is refused at once; UTF-8; bounded). CSV is parsed strictly: a row cut inside
a quoted field, a row with more or fewer fields than the header, a NUL byte or a field over the
``csv`` module's limit is refused at its line, not read as a shorter file. A file with no records
is refused too: an empty dataset must never be evaluated as a pass.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from assay.errors import BadInput, LocatedError, Location
from assay.files import read_json, read_jsonl, read_text

DATA_LIMIT = 512 << 20  # one dataset file; the largest public one used here is under 20 MB

_INT = re.compile(r"[+-]?\d{1,18}")


def text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of a dataset file (a leading byte-order mark dropped). A NUL byte is refused
    at its line and column: no text dataset holds one, a damaged download does."""
    src = read_text(path, what, limit=DATA_LIMIT)
    src = src.removeprefix("\ufeff")
    nul = src.find("\x00")
    if nul >= 0:
        raise LocatedError(f"{what}: a NUL byte: the file is damaged or not text", Location.of_offset(str(path), src, nul))
    return src


def lines(path: str | os.PathLike, what: str) -> list[tuple[int, str]]:
    """(line number, stripped line) of each non-blank line of a text file; none is refused."""
    out = [(n, line.strip()) for n, line in enumerate(text(path, what).splitlines(), start=1) if line.strip()]
    if not out:
        raise BadInput(f"{path}: {what}: the file has no lines")
    return out


def json_file(path: str | os.PathLike, what: str) -> Any:
    """The JSON document in a dataset file (``assay.files.read_json``: located syntax errors; a
    name repeated in one object is refused, not silently reduced to its last value)."""
    return read_json(path, what, limit=DATA_LIMIT, unique_keys=True)


def jsonl_records(path: str | os.PathLike, what: str) -> list[tuple[str, dict]]:
    """``(path:line, object)`` of each non-blank line of a JSON Lines file; a line that is not a
    JSON object is refused, and so is a file with none."""
    out = []
    for lineno, doc in read_jsonl(path, what, unique_keys=True):
        where = f"{path}:{lineno}"
        if not isinstance(doc, dict):
            raise BadInput(f"{where}: {what}: expected a JSON object, got {_kind(doc)}")
        out.append((where, doc))
    if not out:
        raise BadInput(f"{path}: {what}: the file has no records")
    return out


def csv_rows(path: str | os.PathLike, what: str, columns: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    """``(path:line, {column: value})`` of each row of a CSV file with a header naming at least
    ``columns`` (others are kept and ignored). Refused: an empty file, a missing or repeated
    column, a row whose field count differs from the header's (cut or garbled), a quoted field
    left open at the end of the file, a file with no rows."""
    src = text(path, what)
    reader = csv.reader(io.StringIO(src, newline=""), strict=True)
    rows: list[tuple[str, dict[str, str]]] = []
    try:
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise BadInput(f"{path}: {what}: the file is empty (no header row)")
        missing = [c for c in columns if c not in header]
        if missing:
            raise BadInput(f"{path}: {what}: missing columns {missing} (the header has {header[:24]})")
        repeated = sorted({h for h in header if header.count(h) > 1})
        if repeated:
            raise BadInput(f"{path}: {what}: the header names columns more than once: {repeated[:8]}")
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise BadInput(f"{path}:{reader.line_num}: {what}: {len(fields)} fields where the header has "
                               f"{len(header)} (a cut or garbled row)")
            rows.append((f"{path}:{reader.line_num}", dict(zip(header, fields, strict=True))))
    except csv.Error as e:
        raise BadInput(f"{path}:{reader.line_num}: {what}: not valid CSV: {e}") from None
    if not rows:
        raise BadInput(f"{path}: {what}: no rows under the header")
    return rows


# ---------------------------------------------------------------------------------------------
# fields: ``where`` is ``path:line`` (or ``path: item N``), ``field`` the column or key


def fields(record: dict, where: str, what: str, keys: Iterable[str]) -> dict:
    """``record`` if it holds every one of ``keys``; else bad input naming the missing ones."""
    missing = [k for k in keys if k not in record]
    if missing:
        raise BadInput(f"{where}: {what}: no {', '.join(map(repr, missing))}")
    return record


def whole(value: Any, where: str, field: str, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer field: a JSON integer or a CSV string of digits. A bool, a fraction, NaN, an
    empty cell or text is refused, never rounded or guessed; so is a value outside [lo, hi]."""
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        number = int(value.strip())
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise BadInput(f"{where}: {field} must be a whole number, got {_show(value)}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        bounds = f"{lo}..{hi}" if lo is not None and hi is not None else f">= {lo}" if lo is not None else f"<= {hi}"
        raise BadInput(f"{where}: {field} must be in {bounds}, got {number}")
    return number


def fraction(value: Any, where: str, field: str) -> float:
    """A share in [0, 1]: NaN, infinity and text are refused."""
    try:
        number = float(value.strip() if isinstance(value, str) else value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise BadInput(f"{where}: {field} must be a number in [0, 1], got {_show(value)}")
    return number


def string(value: Any, where: str, field: str, *, empty: bool = False) -> str:
    """A text field: a string (not null, not a number or a list), non-blank unless ``empty``."""
    if not isinstance(value, str):
        raise BadInput(f"{where}: {field} must be text, got {_show(value)}")
    if not empty and not value.strip():
        raise BadInput(f"{where}: {field} is empty")
    return value


def choice(value: Any, where: str, field: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``, exactly."""
    if not isinstance(value, str) or value not in allowed:
        raise BadInput(f"{where}: {field} must be one of {list(allowed)}, got {_show(value)}")
    return value


def strings(value: Any, where: str, field: str) -> tuple[str, ...]:
    """A JSON list of strings (a bare string is refused, not split into its characters)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadInput(f"{where}: {field} must be a list of strings, got {_show(value)}")
    return tuple(value)


def unique(keyed: Iterable[tuple[str, Hashable]], what: str) -> None:
    """Refuse a key seen twice, naming both places: a repeated id makes two records one (and two
    evaluation items with one id break resume)."""
    first: dict[Hashable, str] = {}
    for where, key in keyed:
        if key in first:
            raise BadInput(f"{where}: {what} {key!r} repeats the one at {first[key]}")
        first[key] = where


def some(records: list, where: str, what: str) -> list:
    """``records`` unless empty: a dataset with nothing in it is refused, never evaluated."""
    if not records:
        raise BadInput(f"{where}: no {what}")
    return records


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
