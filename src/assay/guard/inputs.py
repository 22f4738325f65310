"""A request's inputs as the policy batch takes them: the labels read from the label store
within the deadline (a store that is down, slow or returns garbage gives MISSING labels and a
breaker failure, never an exception), the candidates' columns and nested fields, and the
request attributes the rules read. The policy batch then types every input (one typing path).
``Guard`` takes these methods from :class:`Inputs`. Split out of ``core.py`` (issue 22).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from assay.guard.candidates import Candidates
from assay.guard.compiled import CompiledSurface
from assay.policy.types import MISSING, lookup


def _nested(columns: dict[str, Any], path: str) -> np.ndarray | None:
    """``item.a.b`` where no column is named ``a.b``: key ``b`` of the objects in column ``a``
    (absent where a row has no such key), the way a bundle test's nested input reads."""
    head, _, rest = path.partition(".")
    while head not in columns and "." in rest:
        step, _, rest = rest.partition(".")
        head = f"{head}.{step}"
    col = columns.get(head)
    if col is None or not isinstance(col, np.ndarray) or col.dtype != object:
        return None
    parts = tuple(rest.split("."))
    out = np.empty(len(col), dtype=object)
    out[:] = [_value(v, parts) for v in col.tolist()]
    return out


def _value(root: Any, parts: tuple[str, ...]) -> Any:
    """``lookup`` with its MISSING as None, what a typed column marks missing."""
    value = lookup(root, parts)
    return None if value is MISSING else value


class Inputs:
    """Reading a request's labels and building its policy batch (mixed into ``Guard``)."""

    # -- the decision itself -------------------------------------------------------------------
    def _read_labels(self, surface: CompiledSurface, cands: Candidates, deadline: float, use_store: bool):
        """Label columns for the surface's rules: caller-supplied ``labels.X`` first, the store
        for the rest. Returns (values, present, outcome kind, duration, complete): complete when
        the store vouched that every label is present for every candidate."""
        n = cands.n
        values: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        columns = cands.columns
        wanted: Any = surface.label_names  # the usual case: the caller gives no labels
        if any(map(columns.__contains__, surface.label_columns)):
            wanted = []
            for name, key in zip(surface.label_names, surface.label_columns, strict=True):
                given = columns.get(key)
                if given is not None:
                    values[name] = given
                    present[name] = ~np.isnan(given)
                else:
                    wanted.append(name)
        kind, duration, complete = "drop_rate", 0.0, False
        if wanted:
            store_ok = False
            if use_store and self.labels is not None and n:
                t0 = time.perf_counter()
                try:
                    remaining = max(deadline - t0, 0.0)
                    got = self.labels.get(cands.ids.tolist(), wanted, timeout_s=remaining)
                    duration = time.perf_counter() - t0
                    if len(got.item_ids) != n:
                        raise ValueError(f"label store answered {len(got.item_ids)} items for {n}")
                    if getattr(got, "columns_checked", False) is True:
                        # the in-memory store's own batch: float64/bool arrays of n values, by construction
                        values.update(got.values)
                        present.update(got.present)
                    else:  # any other store's answer is converted and its shapes checked
                        for name in wanted:
                            v = np.asarray(got.values[name], dtype=np.float64)
                            p = np.asarray(got.present[name], dtype=bool)
                            if v.shape != (n,) or p.shape != (n,):
                                raise ValueError(f"label {name!r}: store returned shape {v.shape}/{p.shape} for {n} items")
                            values[name], present[name] = v, p
                    self.counters["garbage_labels"] += int(getattr(got, "garbage", 0))
                    store_ok = True
                    complete = len(wanted) == len(surface.label_names) and getattr(got, "complete", False) is True
                except Exception as e:  # down, slow, garbage: fail closed, count, never raise
                    duration = time.perf_counter() - t0
                    timed_out = bool(getattr(e, "timeout", False)) or isinstance(e, TimeoutError)
                    kind = "label_store_timeout" if timed_out else "label_store_error"
                    self.counters["label_store_timeouts" if timed_out else "label_store_errors"] += 1
            if not store_ok:
                for name in wanted:
                    values[name] = np.full(n, np.nan)
                    present[name] = np.zeros(n, dtype=bool)
        return values, present, kind, duration, complete

    def _batch(self, surface: CompiledSurface, request: dict, cands: Candidates, values, present, complete: bool = False):
        """The policy batch for this request: label columns with their presence, the candidates'
        columns as given (the policy batch types them against the declared attributes, the one
        place inputs are typed), the request's values. A candidate field nobody gave is left out:
        the batch then treats it as absent for every candidate."""
        from assay.policy import Batch

        columns: dict[str, Any] = {attr: values[name] for attr, name in surface.label_attrs}
        # all present (complete): no masks to build, invert and check
        missing: dict[str, Any] = {} if complete else {attr: ~present[name] for attr, name in surface.label_attrs}
        given, given_missing = cands.columns, cands.missing
        nested: dict[str, Any] = {}  # fields read from inside an object column, as the batch got them
        for attr, path in surface.field_attrs:
            col = cands.ids if path == "id" else cands.scores if path == "score" else given.get(path)
            if col is None and "." in path:
                col = nested[path] = _nested(given, path)
            if col is None:
                continue
            columns[attr] = col
            mask = given_missing.get(path)
            if mask is not None:
                missing[attr] = mask
        scalars = {}
        for attr, parts in surface.request_paths:
            value = lookup(request, parts)
            if value is not MISSING:
                scalars[attr] = value
        batch = Batch.from_columns(cands.n, columns=columns, missing=missing, scalars=scalars)
        batch.nested_fields = nested
        return batch
