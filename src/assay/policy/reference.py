"""The reference evaluator: the CEL library itself, one candidate or context at a time.

It is the oracle the vectorised evaluator is tested against, and the evaluator for gates,
purposes and alerts, where there is one context per decision. A missing or ill-typed attribute
is left unbound, which CEL turns into an error value with its standard semantics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from assay.policy.model import Outcome
from assay.policy.types import MISSING, AttrType, coerce, lookup

_MISSING = object()


def evaluate_one(compiled, decls: dict[str, AttrType], value_of: Callable[[str, AttrType], tuple[bool, Any]]) -> int:
    data = {}
    for name in compiled.attributes:
        ok, value = value_of(name, decls[name])
        if ok:
            data[name] = value
    try:
        result = compiled.program.eval(data=data)
    except Exception:  # the library reports some failures by raising; they are errors too
        return int(Outcome.MISSING)
    if result.type().name().lower() == "bool":
        return int(Outcome.TRUE if result.value() else Outcome.FALSE)
    return int(Outcome.MISSING)


def context_value(context: dict[str, Any]) -> Callable[[str, AttrType], tuple[bool, Any]]:
    """Read dotted attributes from nested dicts, coerced to their declared types."""

    def value_of(name: str, t: AttrType) -> tuple[bool, Any]:
        node = lookup(context, name)
        return (False, None) if node is MISSING else coerce(node, t)

    return value_of


def evaluate_context(bundle, section: str, cond_id: str, context: dict[str, Any]) -> Outcome:
    compiled = bundle.compiled(section, cond_id)
    return Outcome(evaluate_one(compiled, bundle.attributes[section], context_value(context)))
