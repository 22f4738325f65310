"""What the store can hold and read back, on SQLite and PostgreSQL alike.

Both stores must accept exactly the same values and give them back unchanged, so the limits are
the intersection of what the two can round-trip (and what the API can serialise again):

- text: valid Unicode (no lone surrogates: PostgreSQL and orjson refuse them), no NUL (PostgreSQL
  text and JSONB cannot hold it), at most the column's length (PostgreSQL enforces ``VARCHAR(n)``,
  SQLite does not);
- numbers: finite (PostgreSQL JSONB refuses NaN, SQLite stores it and then cannot read it back),
  integers within 64 bits (orjson reads larger ones back as lossy floats);
- JSON documents: objects with string keys, nested at most ``MAX_DEPTH`` deep (pydantic refuses to
  serialise very deep documents, so a deeper one would be stored and then unreadable) and at most
  ``MAX_NODES`` values. What people send is held to ``INPUT_DEPTH``, so the records the registry
  wraps around it (an asset's ``spec``, a verdict's ``detail``) still fit.

``check_text``/``check_json`` are the checks; the API's schema layer (``assay.govern.schemas``)
calls them per field so an error names the field, and ``guard_session`` runs them on every row a
session flushes, so nothing that escaped a field check can reach the database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from assay.errors import BadInput

MAX_DEPTH = 64  # what the store holds (a document sent in may nest INPUT_DEPTH deep, then be wrapped)
INPUT_DEPTH = 32
MAX_NODES = 200_000
MAX_INT = 2**63 - 1
_CONTROL_OK = "\t\n\r"


class Unstorable(BadInput):
    """A value the store could not hold or give back unchanged (HTTP 400, exit 2)."""


def text_problem(value: str, *, single_line: bool = False) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"contains an invalid character at position {e.start} (a lone UTF-16 surrogate)"
    if single_line and any(ord(c) < 32 or c == "\x7f" for c in value):
        return "contains a control character"
    return None


def check_text(value: str, where: str, *, max_length: int | None = None, single_line: bool = False) -> str:
    """``value`` if it is storable text of at most ``max_length`` characters, else ``Unstorable``."""
    if not isinstance(value, str):
        raise Unstorable(f"{where}: must be a string, not {type(value).__name__}")
    problem = text_problem(value, single_line=single_line)
    if problem:
        raise Unstorable(f"{where}: {problem}")
    if max_length is not None and len(value) > max_length:
        raise Unstorable(f"{where}: longer than {max_length} characters ({len(value)})")
    return value


def check_number(value: Any, where: str) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise Unstorable(f"{where}: integer {str(value)[:24]}… does not fit in 64 bits")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise Unstorable(f"{where}: {value} is not a finite number")
    return value


def check_json(value: Any, where: str, *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES,
               strings: bool = True) -> Any:
    """``value`` if it is a JSON document both stores round-trip, else ``Unstorable`` naming the path.
    With ``strings=False`` only its shape and numbers are checked (for a document whose text is
    mapped to storable names before anything is written, as OpenLineage names are).

    Iterative (an explicit stack), so a hostile document cannot exhaust the Python stack here.
    """
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise Unstorable(f"{where}: more than {max_nodes} values")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, (int, float)):
            check_number(item, path)
        elif isinstance(item, str):
            if strings:
                check_text(item, path)
        elif isinstance(item, Mapping):
            if depth >= max_depth:
                raise Unstorable(f"{_short(path)}: nested deeper than {max_depth} levels")
            for key, child in item.items():
                if not isinstance(key, str):
                    raise Unstorable(f"{path}: object keys must be strings, not {type(key).__name__}")
                if strings:
                    check_text(key, f"{path}: key {key[:40]!r}")
                stack.append((child, f"{path}.{key[:40]}", depth + 1))
        elif isinstance(item, (list, tuple)):
            if depth >= max_depth:
                raise Unstorable(f"{_short(path)}: nested deeper than {max_depth} levels")
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            raise Unstorable(f"{path}: {type(item).__name__} is not a JSON value")
    return value


def _short(path: str) -> str:
    return path if len(path) <= 80 else f"{path[:40]}…{path[-30:]}"


def check_row(obj: Any) -> None:
    """Every column value of an ORM object against the limits above (and the column's length)."""
    table = obj.__table__
    for column in table.columns:
        value = getattr(obj, column.key, None)
        if value is None:
            continue
        where = f"{table.name}.{column.name}"
        if isinstance(value, str):
            check_text(value, where, max_length=getattr(column.type, "length", None))
        elif isinstance(value, (int, float)):
            check_number(value, where)
            if isinstance(column.type, sa.Integer) and not isinstance(column.type, sa.BigInteger) \
                    and not isinstance(value, bool) and abs(value) > 2**31 - 1:
                raise Unstorable(f"{where}: {value} does not fit in a 32-bit integer")
        elif isinstance(value, (dict, list, tuple)):
            check_json(value, where)


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.new, *session.dirty):
        if hasattr(obj, "__table__"):
            check_row(obj)


def guard_session(factory: Any) -> None:
    """Check every row a session of ``factory`` flushes (see the module docstring)."""
    sa.event.listen(factory, "before_flush", _before_flush)
