"""Test oracles for the policy library's C passes (``assay.policy._native``): the same meaning
written plainly in numpy or Python, used only by the tests to check the C code. The C passes
are what the library runs (the extension is required); these are not fallbacks.

- ``resolve_oracle``: the per-candidate rule walk (``slate.resolve``);
- ``ordinals_oracle``: a cap's group ordinals (``slate.cap_ordinals``);
- ``clean_strings_oracle``, ``clean_str_objects_oracle``, ``one_type_oracle``,
  ``string_lists_oracle``: column typing (``batch.unusable_strings``, ``clean_str_objects``,
  ``one_type``, ``string_lists``).
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from assay.policy import slate
from assay.policy.actions import Act
from assay.policy.batch import ListValues
from assay.policy.model import Outcome

_TRUE, _MISSING = int(Outcome.TRUE), int(Outcome.MISSING)


def resolve_oracle(plan: slate.RulePlan, outcomes: np.ndarray, live: np.ndarray, pre_dropped: np.ndarray) -> slate.Resolution:
    """``assay.policy.slate.resolve`` (the C walk down each candidate's rules) written as
    whole-matrix numpy operations from docs/policy.md's rules: the first matching hard rule
    decides, a fail-closed miss drops there, soft rules matching before it stack."""
    n_rules, n = outcomes.shape
    if n_rules == 0:
        return slate.Resolution(np.zeros(n, np.int32), np.zeros(n, bool), pre_dropped.copy(),
                                np.where(pre_dropped, np.int8(Act.DROP), np.int8(Act.ALLOW)).astype(np.int8),
                                np.ones(n), np.zeros((0, n), bool), outcomes, plan.fail_closed, live, pre_dropped)
    missing = outcomes == _MISSING
    matched = ((outcomes == _TRUE) | (missing & plan.fail_closed[:, None])) & ~pre_dropped
    acts = matched & live[:, None]
    hard_kind = (plan.kinds == Act.DROP) | (plan.kinds == Act.ALLOW)
    hard = acts & (hard_kind[:, None] | missing)  # a fail-closed miss acts as a hard drop
    any_hard = hard.any(axis=0)
    first = np.where(any_hard, hard.argmax(axis=0), n_rules).astype(np.int32)
    soft = acts & (np.arange(n_rules)[:, None] < first)
    safe = np.minimum(first, n_rules - 1)
    cols = np.arange(n)
    failed = any_hard & missing[safe, cols]
    dropped = pre_dropped | (any_hard & (failed | (plan.kinds[safe] == Act.DROP)))
    demoting = soft & (plan.kinds == Act.DEMOTE)[:, None]
    factor = np.ones(n)
    for r in np.flatnonzero(demoting.any(axis=1)):  # in rule order, as the C walk multiplies
        factor = np.where(demoting[r], factor * plan.factors[r], factor)
    action = np.full(n, Act.ALLOW, dtype=np.int8)
    action[(soft & (plan.kinds == Act.LABEL)[:, None]).any(axis=0)] = Act.LABEL
    action[demoting.any(axis=0)] = Act.DEMOTE
    action[dropped] = Act.DROP
    return slate.Resolution(first, failed, dropped, action, factor, soft, outcomes, plan.fail_closed, live, pre_dropped)


def ordinals_oracle(values: list[Any]) -> list[int]:
    """For values in rank order, how many earlier values are equal (absent values, None and NaN,
    are one group)."""
    seen: dict[Any, int] = {}
    out = []
    for v in values:
        key = ("absent",) if v is None or (isinstance(v, float) and v != v) else ("value", v)
        out.append(seen.get(key, 0))
        seen[key] = seen.get(key, 0) + 1
    return out


def clean_strings_oracle(array: np.ndarray) -> bool:
    """A fixed-width string array holds no interior NUL and no lone surrogate."""
    n = len(array)
    if not n or not array.dtype.itemsize:
        return True
    codes = array.view(np.uint32).reshape(n, -1)
    if bool(((codes >= 0xD800) & (codes <= 0xDFFF)).any()):
        return False
    # str_len counts up to the last non-NUL code point (the rest is padding): an interior NUL
    # exactly when fewer code points than that are non-zero
    return np.count_nonzero(codes) == int(np.strings.str_len(array).sum())


def clean_str_objects_oracle(values: list) -> bool:
    """Every value is exactly a ``str`` with no NUL and no lone surrogate."""
    if set(map(type, values)) - {str}:
        return False
    joined = "".join(values)
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return "\x00" not in joined


def one_type_oracle(values: list) -> type | None:
    kinds = set(map(type, values))
    return next(iter(kinds)) if len(kinds) == 1 else None


def string_lists_oracle(rows: list) -> tuple[ListValues, np.ndarray | None] | None:
    """Rows of clean ``str`` lists (None = missing) as flat values + offsets and a missing mask;
    None when any row is something else."""
    n = len(rows)
    if not set(map(type, rows)) <= {list, tuple, type(None)}:
        return None
    nulls = np.fromiter((r is None for r in rows), dtype=bool, count=n)
    rows = [() if r is None else r for r in rows]
    flat = list(chain.from_iterable(rows))
    if not clean_str_objects_oracle(flat):
        return None
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=n), out=offsets[1:])
    values = np.empty(len(flat), dtype=object)
    values[:] = flat
    return ListValues(values, offsets, clean=True), (nulls if nulls.any() else None)
