"""A whole-slate reference guard, written from docs/policy.md and docs/guard.md alone.

This is a test oracle, and the reason it exists beside the guard: the guard (``Guard.apply``
through ``assay.policy.slate``) decides a slate with columns, C programs and matrix walks; this
decides the same slate one candidate at a time in plain Python, with the CEL library for every
condition, from what the two documents say. It shares no code with the serving path (it does not
use the policy batch, the vectorised evaluator, the policy library's value typing or its
resolution): only the bundle loader, to read the rules. The benchmark's
``independent_slate_disagreements``, the differential fuzzer (``assay.guard.fuzz``) and the
tests compare the guard with it.

Inputs are what a caller gave the guard, as Python values: the request (nested dicts), the
candidates as records (``{"id", "score", field: value, ...}``; a field that is absent is simply
not there), and the labels the label store holds (``{item_id: {label: score}}``). Facts of a live
system are inputs too: whether the deadline ran out, which sources' breakers are open, and a
surface breaker's fallback.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_LIST = re.compile(r"^list\((\w+)\)$")
_MAP = re.compile(r"^map\(string,\s*(\w+)\)$")
FALSE, TRUE, MISSING = 0, 1, 2


# -- values, as docs/policy.md types them ---------------------------------------------------------
def _scalar(value: Any, kind: str) -> tuple[bool, Any]:
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "bool":
        return (True, value) if isinstance(value, bool) else (False, None)
    if isinstance(value, bool):
        return False, None  # a bool is not a number
    if kind == "int":
        return (True, value) if isinstance(value, int) and -(2**63) <= value < 2**63 else (False, None)
    if kind == "double":
        return (True, float(value)) if isinstance(value, (int, float)) else (False, None)
    if kind == "string":
        if not isinstance(value, str) or "\x00" in value:
            return False, None
        try:
            value.encode("utf-8")  # a lone surrogate cannot be encoded
        except UnicodeEncodeError:
            return False, None
        return True, str(value)
    return False, None


def typed(value: Any, declared: str) -> tuple[bool, Any]:
    """``(present, value)`` of a value for an attribute of the declared type: absent (None) and
    ill-typed values are not present, and a condition that needs them is MISSING."""
    if value is None:
        return False, None
    if m := _LIST.match(declared):
        if not isinstance(value, (list, tuple)):
            return False, None
        out = []
        for v in value:
            ok, tv = _scalar(v, m.group(1))
            if not ok:
                return False, None
            out.append(tv)
        return True, out
    if m := _MAP.match(declared):
        if not isinstance(value, dict):
            return False, None
        out_map = {}
        for k, v in value.items():
            ok, tv = _scalar(v, m.group(1))
            if not isinstance(k, str) or not ok:
                return False, None
            out_map[k] = tv
        return True, out_map
    return _scalar(value, declared)


def _path(root: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(root, dict) or part not in root:
            return None
        root = root[part]
    return root


def label_present(value: Any) -> bool:
    """A label the store holds for an item: a number in [0, 1] (the store keeps nothing else)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0.0 <= value <= 1.0


# -- the slate ----------------------------------------------------------------------------------
@dataclass
class CandidateResult:
    action: str  # allow | drop | demote | label | cap
    rule_ids: tuple[str, ...]  # what acted: the rules (and guard:/breaker: reasons) the decision names
    rank: int  # position in the served slate, -1 when not served
    score_after: float
    shadow_rule_ids: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # interstitials, for a served candidate


@dataclass
class ReferenceSlate:
    item_ids: list[str]
    scores: list[float]
    item_labels: dict[str, tuple[str, ...]]
    candidates: list[CandidateResult] = field(default_factory=list)
    fallback_ids: list[str] = field(default_factory=list)


@dataclass
class _Walk:
    hard: int | None = None  # the deciding rule
    failed_closed: bool = False
    factor: float = 1.0
    soft: list[int] = field(default_factory=list)  # demote, label and cap rules acting before it
    shadow: list[int] = field(default_factory=list)


class ReferenceGuard:
    """``decide(surface, request, candidates, labels, ...) -> ReferenceSlate``."""

    def __init__(self, bundle: Any, *, surface_modes: dict[str, str] | None = None, default_mode: str = "fail_closed"):
        from cel_expr_python import cel

        self.bundle = bundle
        self.surface_modes = dict(surface_modes or {})
        self.default_mode = default_mode
        self.decls = {name: t.signature for name, t in bundle.attributes.get("rules", {}).items()}
        env = cel.NewEnv(variables={name: t.cel() for name, t in bundle.attributes.get("rules", {}).items()})
        self.programs = {r.id: env.compile(r.when) for r in bundle.rules}
        # the attributes each condition reads, as the CEL library's checker resolved them
        self.reads = {r.id: list(bundle.compiled("rules", r.id).attributes) for r in bundle.rules}

    def rules(self, surface: str) -> list[Any]:
        return [r for r in self.bundle.rules if not r.surfaces or surface in r.surfaces]

    # -- one condition, one candidate -----------------------------------------------------------
    def value(self, name: str, request: dict[str, Any], item: dict[str, Any], labels: dict[str, Any]) -> tuple[bool, Any]:
        parts = name.split(".")
        if parts[0] == "request":
            raw = _path(request, parts[1:])
        elif parts[:2] == ["item", "labels"] and len(parts) == 3:
            raw = labels.get(parts[2])
            if not label_present(raw):
                return False, None
        elif parts[0] == "item":
            # a field named by the whole path, else the path into nested objects
            flat = ".".join(parts[1:])
            raw = item[flat] if flat in item else _path(item, parts[1:])
        else:
            return False, None
        return typed(raw, self.decls[name])

    def activation(self, request: dict[str, Any], item: dict[str, Any], labels: dict[str, Any]) -> dict[str, Any]:
        """Every declared attribute that is present and well typed, for the CEL library."""
        data = {}
        for name in self.decls:
            ok, v = self.value(name, request, item, labels)
            if ok:
                data[name] = v
        return data

    def outcome(self, rule: Any, data: dict[str, Any]) -> int:
        try:  # only what the condition reads crosses into the library
            result = self.programs[rule.id].eval(data={a: data[a] for a in self.reads[rule.id] if a in data})
        except Exception:
            return MISSING
        if result.type().name().lower() == "bool":
            return TRUE if result.value() else FALSE
        return MISSING

    def outcomes(self, surface: str, request: dict[str, Any], item: dict[str, Any], labels: dict[str, Any]) -> list[int]:
        data = self.activation(request, item, labels)
        return [self.outcome(r, data) for r in self.rules(surface)]

    # -- the rule walk ---------------------------------------------------------------------------
    @staticmethod
    def in_rollout(rule_id: str, subject_id: str, percent: float) -> bool:
        if percent >= 100:
            return True
        if percent <= 0:
            return False
        return zlib.crc32(f"{rule_id}\x00{subject_id}".encode()) % 10000 < percent * 100

    def walk(self, rules: list[Any], outcomes: list[int], subject_id: str) -> _Walk:
        w = _Walk()
        for i, (rule, out) in enumerate(zip(rules, outcomes, strict=True)):
            matched = out == TRUE or (out == MISSING and rule.on_missing == "fail_closed")
            if not matched:
                continue
            if rule.shadow or not self.in_rollout(rule.id, subject_id, rule.rollout):
                w.shadow.append(i)  # recorded, never acts (also after the deciding rule)
                continue
            if w.hard is not None:
                continue
            if out == MISSING:  # fail closed: a drop at this rule, whatever its action
                w.hard, w.failed_closed = i, True
            elif rule.action.kind in ("drop", "allow"):
                w.hard = i
            else:
                w.soft.append(i)
                if rule.action.kind == "demote":
                    w.factor *= rule.action.factor
        return w

    # -- a whole slate -----------------------------------------------------------------------------
    def decide(self, surface: str, request: dict[str, Any], candidates: list[dict[str, Any]],
               labels: dict[str, dict[str, Any]], *, deadline_exhausted: bool = False,
               open_scopes: set[str] | None = None, fallback: dict[str, Any] | None = None,
               use_labels: bool = True) -> ReferenceSlate:
        """``open_scopes``: the ``source:<name>`` and ``creator:<name>`` scopes whose breaker is open;
        ``fallback``: a surface (or model) breaker is open: ``{"scope", "kind": cached_slate |
        drop | stricter_rules | safe_source, "items": [(id, score)], "surface", "candidates"}``."""
        user = request.get("user") if isinstance(request.get("user"), dict) else {}
        subject_id = str(request.get("subject_id") or user.get("id") or "")
        if fallback is not None:
            return self._fallback(surface, request, candidates, labels, fallback)
        rules = self.rules(surface)
        label_names = sorted({a.split(".")[2] for r in rules for a in self.reads[r.id] if a.startswith("item.labels.")})
        mode = self.surface_modes.get(surface, self.default_mode)
        open_scopes = open_scopes or set()
        results: list[dict[str, Any]] = []
        for pos, item in enumerate(candidates):
            item_labels = labels.get(item["id"], {}) if use_labels else {}
            res: dict[str, Any] = {"pos": pos, "score": float(item["score"]), "walk": None, "why": None}
            present = [n for n in label_names if label_present(item_labels.get(n))]
            blocked = [f"{k}:{item[k]}" for k in ("source", "creator") if isinstance(item.get(k), str) and item[k]
                       and f"{k}:{item[k]}" in open_scopes]
            if mode == "fail_closed" and label_names and not present:
                res["why"] = "guard:unlabeled"
            elif blocked:
                res["why"] = f"breaker:{blocked[0]}"
            elif deadline_exhausted:
                res["why"] = "guard:deadline"
            else:
                res["walk"] = self.walk(rules, self.outcomes(surface, request, item, item_labels), subject_id)
            results.append(res)
        # what the rules decided, then ranking by demoted score (ties: the ranker's order), then caps
        for res in results:
            w = res["walk"]
            res["after"] = res["score"] * (w.factor if w is not None else 1.0)
            res["dropped"] = w is None or (w.hard is not None and (w.failed_closed or rules[w.hard].action.kind == "drop"))
            res["capped_by"] = None
        ranked = sorted((r for r in results if not r["dropped"]), key=lambda r: (-r["after"], r["pos"]))
        for i, rule in enumerate(rules):
            if rule.action.kind != "cap":
                continue
            seen: dict[Any, int] = {}
            kept = []
            for res in ranked:
                if i in res["walk"].soft:
                    key = _group_key(candidates[res["pos"]], rule.action.key, candidates)
                    seen[key] = seen.get(key, 0) + 1
                    if seen[key] > rule.action.limit:
                        res["capped_by"] = i
                        continue
                kept.append(res)
            ranked = kept
        rank = {res["pos"]: k for k, res in enumerate(ranked)}
        out = ReferenceSlate([], [], {})
        for res in results:
            w: _Walk | None = res["walk"]
            pos = res["pos"]
            if w is None:
                out.candidates.append(CandidateResult("drop", (res["why"],), -1, res["after"]))
                continue
            kinds = [rules[i].action.kind for i in w.soft]
            named = [i for i in w.soft if rules[i].action.kind != "cap"]  # a cap is named where it removed the item
            if w.hard is not None:
                named.append(w.hard)
            if res["capped_by"] is not None:
                named.append(res["capped_by"])
                action = "cap"
            elif res["dropped"]:
                action = "drop"
            elif "demote" in kinds:
                action = "demote"
            elif "label" in kinds:
                action = "label"
            else:
                action = "allow"
            texts = tuple(rules[i].action.text for i in w.soft if rules[i].action.kind == "label")
            out.candidates.append(CandidateResult(action, tuple(rules[i].id for i in sorted(named)), rank.get(pos, -1), res["after"],
                                                  tuple(rules[i].id for i in w.shadow), texts if pos in rank else ()))
        for res in ranked:
            item_id = candidates[res["pos"]]["id"]
            out.item_ids.append(item_id)
            out.scores.append(res["after"])
            texts = out.candidates[res["pos"]].labels
            if texts:
                out.item_labels[item_id] = texts
        return out

    def _fallback(self, surface: str, request: dict[str, Any], candidates: list[dict[str, Any]],
                  labels: dict[str, dict[str, Any]], fallback: dict[str, Any]) -> ReferenceSlate:
        kind, scope = fallback["kind"], fallback["scope"]
        if kind == "stricter_rules":  # the same request decided by another surface's rules
            return self.decide(fallback["surface"], request, candidates, labels)
        dropped = [CandidateResult("drop", (f"breaker:{scope}",), -1, float(c["score"])) for c in candidates]
        if kind == "safe_source":  # the vetted candidates, with the labels they carry, decided instead
            safe = fallback["candidates"]
            inner = self.decide(surface, request, [{k: v for k, v in c.items() if k != "labels"} for c in safe],
                                {c["id"]: dict(c.get("labels") or {}) for c in safe})
            return ReferenceSlate(inner.item_ids, inner.scores, inner.item_labels, dropped, list(inner.item_ids))
        items = list(fallback.get("items") or []) if kind == "cached_slate" else []
        return ReferenceSlate([i for i, _ in items], [float(s) for _, s in items], {}, dropped, [i for i, _ in items])


_ABSENT = object()


def _group_key(item: dict[str, Any], key: str, candidates: list[dict[str, Any]]) -> Any:
    """The value a cap groups a candidate by: its field ``key``; absent (null, NaN) values are one
    group, and so is the whole batch when no candidate has the field at all."""
    if not any(key in c for c in candidates):
        return _ABSENT
    v = item.get(key)
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return _ABSENT
    if isinstance(v, (list, tuple)):
        return tuple(v)
    if isinstance(v, dict):
        return tuple(sorted(v.items()))
    return v
