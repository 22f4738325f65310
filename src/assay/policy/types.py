"""Attribute types a bundle declares, in CEL's type syntax: ``int``, ``double``, ``string``,
``bool``, ``list(T)`` and ``map(string, T)`` with T one of the four scalars."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SCALARS = ("int", "double", "string", "bool")
_LIST = re.compile(r"^list\(\s*(\w+)\s*\)$")
_MAP = re.compile(r"^map\(\s*(\w+)\s*,\s*(\w+)\s*\)$")


@dataclass(frozen=True)
class AttrType:
    kind: str  # int | double | string | bool | list | map
    elem: str | None = None  # element type of a list, value type of a map

    @property
    def signature(self) -> str:
        if self.kind == "list":
            return f"list({self.elem})"
        if self.kind == "map":
            return f"map(string, {self.elem})"
        return self.kind

    def cel(self):
        from cel_expr_python import cel

        scalar = {"int": cel.Type.INT, "double": cel.Type.DOUBLE, "string": cel.Type.STRING, "bool": cel.Type.BOOL}
        if self.kind == "list":
            return cel.Type.List(scalar[self.elem])
        if self.kind == "map":
            return cel.Type.Map(cel.Type.STRING, scalar[self.elem])
        return scalar[self.kind]


def parse_type(text: str) -> AttrType:
    """Parse a declared type; raise ``ValueError`` with a message naming what is allowed."""
    t = str(text).strip()
    if t in SCALARS:
        return AttrType(t)
    if (m := _LIST.match(t)) and m.group(1) in SCALARS:
        return AttrType("list", m.group(1))
    if (m := _MAP.match(t)) and m.group(1) == "string" and m.group(2) in SCALARS:
        return AttrType("map", m.group(2))
    raise ValueError(
        f"unsupported attribute type {t!r}; use int, double, string, bool, list(T) or map(string, T) with T a scalar"
    )


def coerce(value, t: AttrType):
    """Validate one attribute value against its declared type, the same way for both
    evaluators. Returns ``(ok, value)``; a value of the wrong type counts as missing."""
    if value is None:
        return False, None
    k = t.kind
    if k in SCALARS:
        return _coerce_scalar(value, k)
    if k == "list":
        if not isinstance(value, (list, tuple)):
            return False, None
        out = []
        for v in value:
            ok, cv = _coerce_scalar(v, t.elem)
            if not ok:
                return False, None
            out.append(cv)
        return True, out
    if not isinstance(value, dict):
        return False, None
    out_map = {}
    for key, v in value.items():
        ok, cv = _coerce_scalar(v, t.elem)
        if not isinstance(key, str) or not ok:
            return False, None
        out_map[key] = cv
    return True, out_map


def _coerce_scalar(value, kind: str):
    if kind == "bool":
        return (True, bool(value)) if isinstance(value, bool) or type(value).__name__ == "bool_" else (False, None)
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False, None
    if kind == "int":
        if isinstance(value, int) or type(value).__name__.startswith("int"):
            iv = int(value)
            return (True, iv) if -(2**63) <= iv < 2**63 else (False, None)
        return False, None
    if kind == "double":
        if isinstance(value, (int, float)) or type(value).__name__.startswith(("float", "int")):
            return True, float(value)
        return False, None
    if kind == "string":
        if isinstance(value, str):
            # Lone surrogates cannot cross into CEL, and the CEL library's Python binding cuts
            # strings at the first NUL; such strings are refused as ill-typed by both evaluators.
            if "\x00" in value:
                return False, None
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False, None
            return True, value
        return False, None
    return False, None


class _Missing:
    """The one "no value here" of a dotted-path lookup (a sentinel: None is data to JSON)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


def lookup(root: Any, path: str | Sequence[str]) -> Any:
    """The value at a dotted path (``"request.user.age"``, or its parts) in nested maps, or
    :data:`MISSING` where a step is not a map, lacks the key, or holds ``None``.

    This is the one dotted-path lookup of the system (the reference evaluator, the policy batch,
    the guard's request and nested candidate fields, the guard explanations), with one meaning of
    ``None``: a JSON null is a missing attribute, as :func:`coerce` reads it, so a rule over it is
    MISSING and a fail-closed rule drops. (``assay.guard.oracle`` keeps its own reading on
    purpose: it is the independent reference written from the docs.)"""
    node = root
    for part in path.split(".") if isinstance(path, str) else path:
        if not isinstance(node, dict):
            return MISSING
        node = node.get(part)
        if node is None:
            return MISSING
    return node
