"""What a slate was decided from, recorded beside its decisions so that it can be decided again.

(It lives in the policy foundation, beside the slate function it feeds: the guard writes it, and
``assay explain`` reads it, without either engine importing the other.)

``assay explain guard`` re-decides a traced request from this record with the one slate function
(:func:`assay.policy.slate.decide_slate`) and checks that it reproduces the served action, rules
and rank of every decision. The record holds exactly what the decision depends on:

- the bundle (hash and version) and the surface whose rules decided (a ``stricter_rules``
  fallback decides with another surface's);
- the request attributes the rules read, and for each partial-rollout rule whether this subject
  was inside it (the subject id itself is not repeated here: the decisions carry it, pseudonymised
  by the trace);
- per candidate: id, score, the fields the rules read and the caps group by, and every label the
  rules read as the store answered (absent is null);
- the live facts: whether the surface dropped unlabeled candidates, whether the deadline ran out,
  which candidates an open source breaker removed, and a whole-request breaker's fallback with
  the items it served.

It is a JSON object (``Event(kind="guard.slate_inputs", subject=request_id)`` in the trace). A few
values JSON cannot carry exactly are tagged: non-finite floats and -0.0 (``{"$float": "nan"}``),
integers beyond 2^53 (``{"$int": "..."}``), strings that are not valid Unicode scalars
(``{"$str": [code points]}``), maps with keys that are not strings, and anything else by its repr
(``{"$repr": ...}``, which no declared type accepts, so it decides as it did: ill-typed).

The record is built from references the slate keeps (the request and the candidate columns as
the caller gave them): the JSON is made when the decision sink asks, off the serving path. A
caller must not change those objects in place after ``apply`` until the sink has written them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import BadInput

KIND = "guard.slate_inputs"
_SAFE_INT = 2**53


# -- values JSON cannot carry exactly -------------------------------------------------------------
def encode(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v if -_SAFE_INT <= v <= _SAFE_INT else {"$int": str(v)}
    if isinstance(v, float):
        if math.isfinite(v) and not (v == 0.0 and math.copysign(1.0, v) < 0):
            return v
        return {"$float": repr(v)}
    if isinstance(v, str):
        try:
            v.encode("utf-8")
            return v
        except UnicodeEncodeError:
            return {"$str": [ord(c) for c in v]}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [encode(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, dict):
        if all(isinstance(k, str) and not k.startswith("$") and _utf8(k) for k in v):
            return {k: encode(x) for k, x in v.items()}
        return {"$map": [[encode(k), encode(x)] for k, x in v.items()]}
    return {"$repr": repr(v)}


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class Opaque:
    """A value recorded by its repr: of no declared type, as the original was not."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Opaque({self.text})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.text == self.text

    def __hash__(self) -> int:
        return hash(("opaque", self.text))


def decode(v: Any) -> Any:
    if isinstance(v, list):
        return [decode(x) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            (tag, body), = v.items()
            if tag == "$int":
                return int(body)
            if tag == "$float":
                return float(body)
            if tag == "$str":
                return "".join(map(chr, body))
            if tag == "$map":
                out = {}
                for k, x in body:
                    k = decode(k)
                    out[k if isinstance(k, (str, int, float, bool, type(None))) else repr(k)] = decode(x)
                return out
            if tag == "$repr":
                return Opaque(body)
        return {k: decode(x) for k, x in v.items()}
    return v


def _values(col: Any, mask: np.ndarray | None) -> list[Any]:
    """A candidate column as Python values, None where absent."""
    if hasattr(col, "to_pylist"):
        values = col.to_pylist()
    elif isinstance(col, np.ndarray):
        values = col.tolist()
    else:
        values = list(col)
    if mask is not None:
        for i in np.flatnonzero(mask).tolist():
            values[i] = None
    return values


# -- what the guard keeps, cheaply, on the serving path ------------------------------------------------
@dataclass
class SlateInputs:
    """References to what a slate was decided from; :meth:`to_payload` makes the JSON."""

    surface: str
    decided_by: str
    bundle_hash: str
    bundle_version: str
    request: dict[str, Any]  # attribute -> value, as the batch's scalars
    rollout: dict[str, bool]
    unlabeled_drop: bool
    deadline_exhausted: bool
    ids: np.ndarray
    scores: np.ndarray
    columns: dict[str, Any]  # candidate field -> column as given
    missing: dict[str, np.ndarray]
    labels: dict[str, tuple[np.ndarray, np.ndarray]]  # label -> (values, present)
    blocked: dict[int, str]
    fallback: dict[str, Any] | None = None

    def to_payload(self) -> dict[str, Any]:
        fields = {}
        for name, col in self.columns.items():
            fields[name] = [encode(v) for v in _values(col, self.missing.get(name))]
        labels = {}
        for name, (values, present) in self.labels.items():
            labels[name] = [encode(float(v)) if p else None for v, p in zip(values.tolist(), present.tolist(), strict=True)]
        return {
            "v": 1, "surface": self.surface, "decided_by": self.decided_by, "bundle_hash": self.bundle_hash,
            "bundle_version": self.bundle_version, "request": {k: encode(v) for k, v in self.request.items()},
            "rollout": dict(self.rollout), "unlabeled_drop": self.unlabeled_drop, "deadline_exhausted": self.deadline_exhausted,
            "ids": [encode(i) for i in self.ids.tolist()], "scores": [encode(float(s)) for s in self.scores.tolist()],
            "fields": fields, "labels": labels, "blocked": {str(k): v for k, v in self.blocked.items()},
            "fallback": None if self.fallback is None else {**self.fallback, "items": [[encode(i), encode(float(s))] for i, s in self.fallback.get("items", [])]},
        }

    def to_event(self, request_id: str, ts: float):
        from assay.records import Event

        return Event(kind=KIND, ts=ts, subject=request_id, payload=self.to_payload(), bundle_hash=self.bundle_hash)


# -- deciding again --------------------------------------------------------------------------------
@dataclass
class Redecision:
    """A traced request decided again: per candidate (in the order recorded) the action, the rule
    ids and the rank; and the fallback items served, if any."""

    decision: Any  # assay.policy.slate.SlateDecision
    ids: list[str]
    fallback_items: list[tuple[str, float]]
    fallback: str | None
    compiled: Any
    batch: Any

    def candidate(self, item_id: str, rank_before: int | None = None) -> dict[str, Any]:
        """The re-decision for ``item_id``: the candidate at ``rank_before`` (its position in the
        request), or with ``rank_before=-1`` the item served from the fallback (an item can be
        both: a cached slate may hold a candidate the breaker dropped)."""
        from assay.policy.actions import ACTION_NAMES

        if rank_before is not None and rank_before >= 0 and (rank_before >= len(self.ids) or self.ids[rank_before] != item_id):
            raise BadInput(f"item {item_id!r} is not candidate {rank_before} of this request")
        if rank_before != -1 and item_id in self.ids:
            j = rank_before if rank_before is not None else self.ids.index(item_id)
            d = self.decision
            rule_ids, reasons = d.rule_ids(j)
            return {"position": j, "action": ACTION_NAMES[int(d.action[j])], "rule_ids": rule_ids, "reasons": reasons,
                    "rank": int(d.rank_after[j]), "shadow_rule_ids": d.shadow_ids(j), "fail_closed": bool(d.failed_closed[j]),
                    "score_before": float(d.scores_before[j]), "score_after": float(d.scores_after[j])}
        served = [i for i, _ in self.fallback_items]
        if item_id in served:
            k = served.index(item_id)
            return {"position": -1, "action": "allow", "rule_ids": [f"fallback:{self.fallback}"], "reasons": [],
                    "rank": k, "shadow_rule_ids": [], "fail_closed": False, "score_before": None,
                    "score_after": self.fallback_items[k][1]}
        raise BadInput(f"item {item_id!r} is not in this request (neither a candidate nor served from a fallback)")


def redecide(bundle: Any, payload: dict[str, Any]) -> Redecision:
    """Decide a recorded request again with ``bundle`` (which must be the one that decided it)."""
    from assay.policy import Batch
    from assay.policy.slate import RulePlan, breaker_slate, decide_slate

    if payload.get("v") != 1:
        raise BadInput(f"unknown slate-inputs record version {payload.get('v')!r}")
    if payload["bundle_hash"] != bundle.hash:
        raise BadInput(f"the request was decided by bundle {payload['bundle_hash'][:12]} (version {payload['bundle_version']}), "
                       f"not by {bundle.short_hash} ({bundle.version}): give that bundle")
    compiled = bundle.compile_rules(payload["decided_by"])
    plan = RulePlan.of(compiled)
    ids = [decode(i) for i in payload["ids"]]
    scores = np.array([decode(s) for s in payload["scores"]], dtype=np.float64)
    n = len(ids)
    fallback = payload.get("fallback")
    items = [(decode(i), decode(s)) for i, s in fallback.get("items", [])] if fallback else []
    decls = bundle.attributes["rules"]
    columns: dict[str, Any] = {}
    missing: dict[str, np.ndarray] = {}
    keys: dict[str, Any] = {}
    for name, values in payload["fields"].items():
        col = np.empty(n, dtype=object)
        col[:] = [decode(v) for v in values]
        keys[name] = col
        if f"item.{name}" in decls:
            columns[f"item.{name}"] = col
    id_col = np.empty(n, dtype=object)
    id_col[:] = ids
    keys["id"], keys["score"] = id_col, scores
    for attr in ("item.id", "item.score"):
        if attr in compiled.reads:
            columns[attr] = keys[attr[5:]]
    for name, values in payload["labels"].items():
        present = np.array([v is not None for v in values], dtype=bool)
        columns[f"item.labels.{name}"] = np.array([decode(v) if v is not None else math.nan for v in values], dtype=np.float64)
        missing[f"item.labels.{name}"] = ~present
    batch = Batch.from_columns(n, columns=columns, missing=missing, scalars={k: decode(v) for k, v in payload["request"].items()})
    if fallback and fallback.get("all_dropped"):  # every candidate dropped by the breaker (cached slate, drop, safe source)
        decision = breaker_slate(scores, fallback["scope"], plan, fallback["kind"])
    else:
        live = plan.static_live.copy()
        for r in plan.partial:
            live[r] = bool(payload["rollout"].get(plan.ids[r], False))
        decision = decide_slate(compiled, batch, scores=scores, live=live, unlabeled_drop=payload["unlabeled_drop"],
                                deadline_exhausted=payload["deadline_exhausted"],
                                blocked={int(k): v for k, v in payload["blocked"].items()}, keys=keys)
        if fallback:
            decision.fallback = fallback["kind"]
    return Redecision(decision, ids, items, fallback["kind"] if fallback else None, compiled, batch)
