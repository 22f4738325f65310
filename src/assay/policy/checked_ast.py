"""Read the type-checked AST that the CEL library (cel-expr-python, the official cel-cpp
bindings) produces, so the vectorised compiler works from the checker's own resolution of names,
overloads and types rather than re-deriving them.

``Expression.serialize()`` returns a ``google.protobuf.Any`` holding a ``cel.expr.CheckedExpr``.
The CEL spec's protobuf definitions are not published as a Python package, so this module decodes
the protobuf wire format directly for the handful of messages it needs (field numbers from
cel-spec ``syntax.proto`` / ``checked.proto``). That is the only hand-written part here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, list[Any]]:
    """Split one message into ``{field_number: [raw values]}`` (ints for varints, bytes for
    length-delimited, floats for fixed64 doubles)."""
    out: dict[int, list[Any]] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<d", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<f", buf, pos)[0]
            pos += 4
        else:  # groups are not used by CEL's protos
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _str(fields: dict[int, list[Any]], n: int) -> str:
    return fields[n][0].decode() if n in fields else ""


@dataclass
class Node:
    """One AST node. ``kind`` is const | ident | select | call | list | struct | comprehension."""

    id: int
    kind: str
    value: Any = None  # const: the Python value; ident: name; select: field name; call: function name
    const_type: str = ""  # const: null | bool | int | uint | double | string | bytes
    target: Node | None = None  # select operand or method-call receiver
    args: list[Node] = field(default_factory=list)  # call args or list elements
    test_only: bool = False  # select produced by has()


@dataclass
class CheckedAst:
    root: Node
    references: dict[int, tuple[str, tuple[str, ...]]]  # expr id -> (resolved name, overload ids)
    types: dict[int, str]  # expr id -> type signature, e.g. "int", "list(string)"
    positions: dict[int, int]  # expr id -> code point offset in the source


def _const(buf: bytes) -> tuple[Any, str]:
    f = _fields(buf)
    if 1 in f:
        return None, "null"
    if 2 in f:
        return bool(f[2][0]), "bool"
    if 3 in f:
        return _signed64(f[3][0]), "int"
    if 4 in f:
        return f[4][0], "uint"
    if 5 in f:
        return f[5][0], "double"
    if 6 in f:
        return f[6][0].decode(), "string"
    if 7 in f:
        return bytes(f[7][0]), "bytes"
    # proto3 omits default values: an empty Constant message cannot occur for a literal,
    # but a zero int64/false/"" may be encoded as a present field with zero length.
    return None, "null"


def _expr(buf: bytes) -> Node:
    f = _fields(buf)
    node_id = f.get(2, [0])[0]
    if 3 in f:
        value, ctype = _const(f[3][0])
        return Node(node_id, "const", value=value, const_type=ctype)
    if 4 in f:
        return Node(node_id, "ident", value=_str(_fields(f[4][0]), 1))
    if 5 in f:
        s = _fields(f[5][0])
        return Node(node_id, "select", value=_str(s, 2), target=_expr(s[1][0]) if 1 in s else None, test_only=bool(s.get(3, [0])[0]))
    if 6 in f:
        c = _fields(f[6][0])
        return Node(
            node_id,
            "call",
            value=_str(c, 2),
            target=_expr(c[1][0]) if 1 in c else None,
            args=[_expr(a) for a in c.get(3, [])],
        )
    if 7 in f:
        lst = _fields(f[7][0])
        return Node(node_id, "list", args=[_expr(e) for e in lst.get(1, [])])
    if 8 in f:
        return Node(node_id, "struct")
    if 9 in f:
        return Node(node_id, "comprehension")
    raise ValueError("empty CEL expression node")


def _type_signature(buf: bytes) -> str:
    f = _fields(buf)
    primitives = {1: "bool", 2: "int", 3: "uint", 4: "double", 5: "string", 6: "bytes"}
    if 1 in f:
        return "dyn"
    if 2 in f:
        return "null"
    if 3 in f:
        return primitives.get(f[3][0], "unknown")
    if 4 in f:
        return "wrapper(" + primitives.get(f[4][0], "unknown") + ")"
    if 6 in f:
        inner = _fields(f[6][0])
        return "list(" + (_type_signature(inner[1][0]) if 1 in inner else "dyn") + ")"
    if 7 in f:
        inner = _fields(f[7][0])
        key = _type_signature(inner[1][0]) if 1 in inner else "dyn"
        val = _type_signature(inner[2][0]) if 2 in inner else "dyn"
        return f"map({key}, {val})"
    if 9 in f:
        return f[9][0].decode()
    if 12 in f:
        return "error"
    return "unknown"


def _map_entries(entries: list[bytes]) -> list[tuple[int, bytes | int]]:
    out = []
    for entry in entries:
        e = _fields(entry)
        key = _signed64(e.get(1, [0])[0])
        out.append((key, e.get(2, [b""])[0]))
    return out


def decode_checked(serialized: bytes) -> CheckedAst:
    """Decode ``Expression.serialize()`` output into a :class:`CheckedAst`."""
    any_msg = _fields(serialized)
    type_url = _str(any_msg, 1)
    if not type_url.endswith("CheckedExpr"):
        raise ValueError(f"expected a CheckedExpr, got {type_url!r}")
    checked = _fields(any_msg[2][0])
    references: dict[int, tuple[str, tuple[str, ...]]] = {}
    for key, raw in _map_entries(checked.get(2, [])):
        r = _fields(raw)
        references[key] = (_str(r, 1), tuple(o.decode() for o in r.get(3, [])))
    types = {key: _type_signature(raw) for key, raw in _map_entries(checked.get(3, []))}
    positions: dict[int, int] = {}
    if 5 in checked:
        source = _fields(checked[5][0])
        for entry in source.get(4, []):
            e = _fields(entry)
            positions[_signed64(e.get(1, [0])[0])] = e.get(2, [0])[0]
    return CheckedAst(root=_expr(checked[4][0]), references=references, types=types, positions=positions)
