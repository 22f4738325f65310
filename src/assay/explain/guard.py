"""Why the guard acted on a candidate: the rule that fired, its condition with the actual values,
and a counterfactual — the smallest change to one label that would have changed the action.

Every decision here is made by the one slate function (``assay.policy.slate.decide_slate``), the
same that served: an explanation can never disagree with the policy's semantics. Two entry points:

- :func:`explain_guard`: one candidate given as a bundle test's input (``{"request", "item"}``);
  rollout follows the request's subject, the unlabeled pre-drop and caps apply as they would.
- :func:`explain_traced`: a decision read back from the trace, re-decided from the inputs
  recorded with its request (``assay.policy.record``); the explanation says whether the re-decision
  reproduces the served action, rules and rank, and :func:`check_trace` does that for every
  decision of a log.

Conditions are read from the CEL library's checked AST: the attributes a rule reads are the
checker's resolved references, and the constants a counterfactual snaps to are the checked
literals (no regular expressions over CEL text).

The counterfactual search is written here because no library searches a CEL rule set: for each
label the fired rules read, it evaluates a grid over [0, 1] (plus every numeric constant of the
conditions and a hair either side of it) in one batch, takes the grid value nearest to the actual
one whose action differs, and bisects between it and the nearest grid value that keeps the
action, to ``tolerance``. Labels are independent here: it reports single-label changes, smallest
first, for the candidate alone (caps, which depend on the rest of a slate, are not varied).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.policy.types import MISSING, lookup

LABEL_PREFIX = "item.labels."


@dataclass
class Counterfactual:
    label: str  # full attribute name, e.g. item.labels.mature
    current: float | None  # None when the label was missing
    value: float  # the nearest value that changes the action
    action: str  # the action at that value
    rule_ids: list[str]
    boundary: float | None = None  # the condition's constant the change crosses, when there is one
    strict: bool = False  # True: the value must go strictly past ``boundary``

    @property
    def delta(self) -> float | None:
        return None if self.current is None else self.value - self.current

    def sentence(self, current_action: str) -> str:
        name = self.label.removeprefix(LABEL_PREFIX)
        if self.current is None:
            return f"with {name} present at {self.value:.6g} the action would be {self.action} instead of {current_action}"
        direction = "below" if self.value < self.current else "above"
        if self.boundary is not None and self.strict:
            where = f"{direction} {self.boundary:.6g} (e.g. {self.value:.7g})"
        else:
            where = f"{self.value:.6g}"
        return f"if {name} were {where} instead of the actual {self.current:.6g} (a change of {self.delta:+.6g}) the action would be {self.action} instead of {current_action}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "current": self.current,
            "value": self.value,
            "delta": self.delta,
            "action": self.action,
            "rule_ids": self.rule_ids,
            "boundary": self.boundary,
            "strict": self.strict,
        }


@dataclass
class GuardExplanation:
    surface: str
    action: str
    rule_ids: list[str]
    reasons: list[str]
    conditions: list[dict[str, Any]]  # per fired rule: id, when, values {attr: value|None}
    fail_closed: bool
    counterfactuals: list[Counterfactual] = field(default_factory=list)
    bundle_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "surface": self.surface, "action": self.action, "rule_ids": self.rule_ids, "reasons": self.reasons,
            "conditions": self.conditions, "fail_closed": self.fail_closed, "bundle_hash": self.bundle_hash,
            "counterfactuals": [c.to_dict() for c in self.counterfactuals],
        }  # fmt: skip

    def text(self) -> str:
        if not self.rule_ids:
            lines = [f"action: {self.action} (no rule on surface {self.surface!r} matched)"]
        else:
            lines = [
                f"action: {self.action}"
                + (" (fail-closed: a label the rule reads is missing)" if self.fail_closed else "")
            ]
        for cond in self.conditions:
            values = ", ".join(
                f"{k} = {'missing' if v is None else v}" for k, v in cond["values"].items()
            )
            lines.append(f"rule {cond['id']}: when {cond['when']}  [{values}]")
        for c in self.counterfactuals:
            lines.append("counterfactual: " + c.sentence(self.action))
        return "\n".join(lines)


def _get(root: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    value = lookup(root, dotted)
    return (False, None) if value is MISSING else (True, value)


def _with_value(item: dict[str, Any], label: str, value: float) -> dict[str, Any]:
    name = label.removeprefix(LABEL_PREFIX)
    labels = dict(item.get("labels") or {})
    labels[name] = float(value)
    return {**item, "labels": labels}


def reads(bundle: Any, rule_id: str) -> list[str]:
    """The declared attributes a rule's condition reads, as the CEL checker resolved them."""
    return list(bundle.compiled("rules", rule_id).attributes)


def constants(bundle: Any, rule_id: str) -> list[float]:
    """The numeric literals of a rule's checked condition (ints and doubles)."""
    from assay.policy.checked_ast import decode_checked

    out: list[float] = []

    def walk(node: Any) -> None:
        if node is None:
            return
        if node.kind == "const" and node.const_type in ("int", "double", "uint") and not isinstance(node.value, bool):
            out.append(float(node.value))
        walk(node.target)
        for a in node.args:
            walk(a)

    walk(decode_checked(bundle.compiled("rules", rule_id).program.serialize()).root)
    return out


class _Decider:
    """Decides variations of one candidate with the slate function, as the guard would serve it:
    all variations in one batch, each in a cap group of its own (as if it were decided alone)."""

    def __init__(self, bundle: Any, surface: str, context: dict[str, Any]):
        from assay.policy import Batch
        from assay.policy.slate import RulePlan, decide_slate

        self.Batch, self.decide_slate = Batch, decide_slate
        self.compiled = bundle.compile_rules(surface)
        self.plan = RulePlan.of(self.compiled)
        self.context = context
        request = context.get("request") if isinstance(context.get("request"), dict) else {}
        user = request.get("user") if isinstance(request.get("user"), dict) else {}
        self.subject_id = str(request.get("subject_id") or user.get("id") or "")

    def decide(self, items: list[dict[str, Any]]):
        n = len(items)
        own = np.arange(n).astype(object)
        keys = {self.plan.rules[r].action.key: own for r in self.plan.cap_rows.tolist()}
        return self.decide_slate(self.compiled, self.Batch.from_records(self.context, items), scores=np.ones(n),
                                 subject_id=self.subject_id, keys=keys)


def explain_guard(
    bundle: Any,
    surface: str,
    candidate: dict[str, Any],
    *,
    tolerance: float = 1e-6,
    grid: int = 201,
) -> GuardExplanation:
    """Explain the guard's decision for one candidate.

    ``candidate`` is the nested input a bundle test uses: ``{"request": {...}, "item": {"labels":
    {...}, ...}}``; rules on a partial rollout act as they would for ``request.user.id``.
    """
    if not isinstance(candidate, dict) or not isinstance(candidate.get("item", {}), dict):
        raise BadInput(
            "the candidate must be a mapping with an 'item' mapping, e.g. {'request': {...}, 'item': {'labels': {...}}}"
        )
    if surface not in bundle.surfaces() and bundle.surfaces():
        raise BadInput(
            f"surface {surface!r} is not named by bundle {bundle.name!r}; its surfaces: {', '.join(sorted(bundle.surfaces()))}"
        )
    context = {k: v for k, v in candidate.items() if k != "item"}
    item = dict(candidate.get("item") or {})
    decider = _Decider(bundle, surface, context)
    decision = decider.decide([item]).candidate(0)
    rules = {r.id: r for r in decider.compiled.rules}
    conditions = [
        {"id": rid, "when": rules[rid].when.strip(), "action": str(rules[rid].action),
         "values": {a: _get(candidate, a)[1] for a in reads(bundle, rid)}}
        for rid in decision.rule_ids if rid in rules
    ]

    # labels to vary: those the fired rules read; with no rule fired, those any rule reads
    watched = [rid for rid in decision.rule_ids if rid in rules] or [r.id for r in decider.compiled.rules]
    labels = []
    for rid in watched:
        for a in reads(bundle, rid):
            if a.startswith(LABEL_PREFIX) and a not in labels:
                labels.append(a)
    bounds = sorted({c for rid in watched for c in constants(bundle, rid) if 0.0 <= c <= 1.0})
    counterfactuals = [
        cf
        for label in labels
        if (cf := _search(decider, candidate, item, label, decision, bounds, tolerance, grid))
    ]
    counterfactuals.sort(key=lambda c: abs(c.delta) if c.delta is not None else 2.0)
    return GuardExplanation(
        surface,
        decision.action,
        decision.rule_ids,
        decision.reasons,
        conditions,
        decision.fail_closed,
        counterfactuals,
        getattr(bundle, "hash", ""),
    )


def _signature(decision: Any) -> tuple[str, tuple[str, ...]]:
    return decision.action, tuple(decision.rule_ids)


def _search(
    decider: _Decider,
    candidate: dict[str, Any],
    item: dict[str, Any],
    label: str,
    decision: Any,
    constants: list[float],
    tolerance: float,
    grid: int,
) -> Counterfactual | None:
    present, raw = _get(candidate, label)
    current = float(raw) if present and isinstance(raw, int | float) else None
    points = set(np.linspace(0.0, 1.0, grid).round(9).tolist())
    for c in constants:
        points.update(v for v in (c, c - tolerance, c + tolerance) if 0.0 <= v <= 1.0)
    values = np.array(sorted(points))
    res = decider.decide([_with_value(item, label, v) for v in values])
    actions = [res.candidate(j).action for j in range(values.size)]
    differs = np.array([a != decision.action for a in actions])
    if not differs.any():
        return None
    if current is None:  # missing label: report the value nearest 0 that changes the action
        j = int(np.flatnonzero(differs)[0])
        d = res.candidate(j)
        return Counterfactual(label, None, float(values[j]), d.action, d.rule_ids)
    distance = np.where(differs, np.abs(values - current), np.inf)
    j = int(np.argmin(distance))
    flip = float(values[j])
    # bisection between the actual value (same action) and the flip point
    lo, hi = current, flip
    for _ in range(60):
        if abs(hi - lo) <= tolerance:
            break
        mid = (lo + hi) / 2
        d = decider.decide([_with_value(item, label, mid)]).candidate(0)
        if d.action != decision.action:
            hi = mid
        else:
            lo = mid
    d = decider.decide([_with_value(item, label, hi)]).candidate(0)
    if (
        d.action == decision.action
    ):  # the grid point flips but the bisection end does not: keep the grid point
        hi, d = flip, res.candidate(j)
    # snap to a constant of the condition when the boundary is one: either the constant itself
    # flips the action (report it exactly) or the value must go strictly past it
    for c in constants:
        if abs(hi - c) <= 4 * tolerance:
            at_c = decider.decide([_with_value(item, label, c)]).candidate(0)
            if at_c.action != decision.action:
                return Counterfactual(
                    label, current, c, at_c.action, at_c.rule_ids, boundary=c, strict=False
                )
            return Counterfactual(
                label, current, round(float(hi), 9), d.action, d.rule_ids, boundary=c, strict=True
            )
    return Counterfactual(label, current, round(float(hi), 9), d.action, d.rule_ids)


# -- traced decisions, decided again ------------------------------------------------------------------
@dataclass
class TracedExplanation:
    """A traced decision, re-decided from its request's recorded inputs."""

    request_id: str
    item_id: str
    recorded: dict[str, Any]  # action, rule_ids, rank as the trace holds them
    redecided: dict[str, Any]  # the same, decided again
    conditions: list[dict[str, Any]]  # per rule named: id, when, values {attr: value|None}
    explanation: GuardExplanation | None  # counterfactuals for the candidate alone

    @property
    def reproduced(self) -> bool:
        return all(self.recorded[k] == self.redecided[k] for k in ("action", "rule_ids", "rank"))

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "item_id": self.item_id, "reproduced": self.reproduced,
                "recorded": self.recorded, "redecided": self.redecided, "conditions": self.conditions,
                "counterfactuals": [c.to_dict() for c in self.explanation.counterfactuals] if self.explanation else []}

    def text(self) -> str:
        r = self.redecided
        lines = [f"request {self.request_id}, item {self.item_id}: {r['action']} (rank {r['rank']})"
                 + (f" by {', '.join(r['rule_ids'])}" if r["rule_ids"] else ""),
                 "re-decided from the recorded inputs: " + ("reproduces the served decision" if self.reproduced else
                                                            f"DIFFERS from the served decision {self.recorded}")]
        for cond in self.conditions:
            values = ", ".join(f"{k} = {'missing' if v is None else v}" for k, v in cond["values"].items())
            lines.append(f"rule {cond['id']}: when {cond['when']}  [{values}]")
        if self.explanation is not None:
            lines += ["counterfactual: " + c.sentence(r["action"]) for c in self.explanation.counterfactuals]
        return "\n".join(lines)


def read_trace(log: Any, request_id: str | None = None) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """The decisions (by request id, in the order written) and the recorded slate inputs (by
    request id) of a trace log, or of one request."""
    import json

    import pyarrow.compute as pc

    from assay.policy.record import KIND

    table = log.table(["type", "request_id", "item_id", "action", "rule_ids", "rank_before", "rank_after", "bundle_hash", "kind",
                       "event_subject", "payload"])
    if request_id is not None:
        keep = pc.or_kleene(pc.equal(table.column("request_id"), request_id), pc.equal(table.column("event_subject"), request_id))
        table = table.filter(pc.fill_null(keep, False))
    decisions: dict[str, list[dict[str, Any]]] = {}
    inputs: dict[str, dict[str, Any]] = {}
    for row in table.to_pylist():
        if row["type"] == "decision":
            decisions.setdefault(row["request_id"], []).append(row)
        elif row["kind"] == KIND:
            inputs[row["event_subject"]] = json.loads(row["payload"])
    return decisions, inputs


def explain_traced(bundle: Any, payload: dict[str, Any], decision: dict[str, Any], *, counterfactuals: bool = True,
                   redecision: Any = None) -> TracedExplanation:
    """Explain one traced decision (a row of the trace: request_id, item_id, action, rule_ids,
    rank_after) by deciding its request again from ``payload`` (its recorded inputs)."""
    from assay.policy.record import redecide

    again = redecision or redecide(bundle, payload)
    item_id = decision["item_id"]
    got = again.candidate(item_id, decision.get("rank_before"))
    recorded = {"action": decision["action"], "rule_ids": list(decision["rule_ids"] or []), "rank": decision["rank_after"]}
    redecided = {"action": got["action"], "rule_ids": got["rule_ids"], "rank": got["rank"], "reasons": got["reasons"],
                 "shadow_rule_ids": got["shadow_rule_ids"], "fail_closed": got["fail_closed"]}
    conditions, explanation = [], None
    if got["position"] >= 0:
        j = got["position"]
        decls = bundle.attributes["rules"]
        rules = {r.id: r for r in again.compiled.rules}
        for rid in got["rule_ids"]:
            if rid in rules:
                values = {}
                for a in reads(bundle, rid):
                    ok, v = again.batch.row_value(a, decls[a], j)
                    values[a] = v if ok else None
                conditions.append({"id": rid, "when": rules[rid].when.strip(), "action": str(rules[rid].action), "values": values})
        if counterfactuals and again.fallback is None and not str(got["rule_ids"][-1:] or [""])[0].startswith(("guard:", "breaker:")):
            explanation = explain_guard(bundle, payload["decided_by"], _candidate_input(again, payload, j))
    return TracedExplanation(decision["request_id"], item_id, recorded, redecided, conditions, explanation)


def _candidate_input(again: Any, payload: dict[str, Any], j: int) -> dict[str, Any]:
    """One recorded candidate in the nested form of a bundle test's input."""
    from assay.policy.record import decode

    request: dict[str, Any] = {}
    for attr, value in payload["request"].items():
        node = request
        parts = attr.split(".")[1:]
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = decode(value)
    item: dict[str, Any] = {name: decode(values[j]) for name, values in payload["fields"].items() if values[j] is not None}
    item["labels"] = {name: decode(values[j]) for name, values in payload["labels"].items() if values[j] is not None}
    item["id"], item["score"] = again.ids[j], float(again.decision.scores_before[j])
    return {"request": request, "item": item}


def check_trace(log: Any, bundles: Any) -> dict[str, Any]:
    """Re-decide every traced request that has recorded inputs and compare every decision's
    action, rules and rank. ``bundles``: a bundle, or {bundle hash: bundle}. Requests decided by
    a bundle not given are counted apart, never as agreeing."""
    from assay.policy.record import redecide

    by_hash = bundles if isinstance(bundles, dict) else {bundles.hash: bundles}
    decisions, inputs = read_trace(log)
    out: dict[str, Any] = {"decisions": 0, "agreed": 0, "requests": 0, "without_inputs": 0, "unknown_bundle": 0, "examples": []}
    for request_id, rows in decisions.items():
        payload = inputs.get(request_id)
        if payload is None:
            out["without_inputs"] += len(rows)
            continue
        bundle = by_hash.get(payload["bundle_hash"])
        if bundle is None:
            out["unknown_bundle"] += len(rows)
            continue
        out["requests"] += 1
        again = redecide(bundle, payload)
        for row in rows:
            out["decisions"] += 1
            exp = explain_traced(bundle, payload, row, counterfactuals=False, redecision=again)
            if exp.reproduced:
                out["agreed"] += 1
            elif len(out["examples"]) < 5:
                out["examples"].append({"request_id": request_id, "item_id": row["item_id"], "recorded": exp.recorded,
                                        "redecided": exp.redecided})
    out["agreement"] = out["agreed"] / out["decisions"] if out["decisions"] else None
    return out
