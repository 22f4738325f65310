"""Why the guard acted on a candidate: the rule that fired, its condition with the actual values,
and a counterfactual — the smallest change to one label that would have changed the action.

Everything is decided by the policy's own reference evaluator (``CompiledRules.evaluate_reference``
+ ``assay.policy.resolve``), so an explanation can never disagree with the policy's semantics.

The counterfactual search is written here because no library searches a CEL rule set: for each
label the fired rules read, it evaluates a grid over [0, 1] (plus every numeric constant of the
conditions and a hair either side of it) in one batch, takes the grid value nearest to the actual
one whose action differs, and bisects between it and the nearest grid value that keeps the
action, to ``tolerance``. Labels are independent here: it reports single-label changes, smallest
first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import BadInput

LABEL_PREFIX = "item.labels."
_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+)(?![\w.])")


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
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node or node[part] is None:
            return False, None
        node = node[part]
    return True, node


def _with_value(item: dict[str, Any], label: str, value: float) -> dict[str, Any]:
    name = label.removeprefix(LABEL_PREFIX)
    labels = dict(item.get("labels") or {})
    labels[name] = float(value)
    return {**item, "labels": labels}


def reads(bundle: Any, when: str) -> list[str]:
    """Declared rule attributes that appear in a condition, in declaration order."""
    names = list(bundle.attributes.get("rules", {}))
    return [a for a in names if re.search(rf"(?<![\w.]){re.escape(a)}(?![\w])", when)]


class _Decider:
    """Decides actions for variations of one candidate with the policy's reference evaluator."""

    def __init__(
        self, bundle: Any, surface: str, context: dict[str, Any], active: dict[str, bool] | None
    ):
        from assay.policy import Batch, resolve

        self.Batch, self.resolve = Batch, resolve
        self.compiled = bundle.compile_rules(surface)
        self.context = context
        self.active = None
        if active:
            self.active_rows = np.array(
                [active.get(r.id, True) for r in self.compiled.rules], bool
            )[:, None]
        else:
            self.active_rows = None

    def decide(self, items: list[dict[str, Any]]):
        batch = self.Batch.from_records(self.context, items)
        outcomes = self.compiled.evaluate_reference(batch)
        active = (
            None if self.active_rows is None else np.repeat(self.active_rows, len(items), axis=1)
        )
        return self.resolve(self.compiled.rules, outcomes, active)


def explain_guard(
    bundle: Any,
    surface: str,
    candidate: dict[str, Any],
    *,
    active: dict[str, bool] | None = None,
    tolerance: float = 1e-6,
    grid: int = 201,
) -> GuardExplanation:
    """Explain the guard's decision for one candidate.

    ``candidate`` is the nested input a bundle test uses: ``{"request": {...}, "item": {"labels":
    {...}, ...}}``. ``active`` maps rule id -> False for rules outside their rollout for this
    subject (default: every rule active).
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
    decider = _Decider(bundle, surface, context, active)
    decision = decider.decide([item]).candidate(0)
    rules = {r.id: r for r in decider.compiled.rules}
    conditions = []
    for rid in decision.rule_ids:
        rule = rules[rid]
        conditions.append(
            {
                "id": rid,
                "when": rule.when.strip(),
                "action": str(rule.action),
                "values": {a: _get(candidate, a)[1] for a in reads(bundle, rule.when)},
            }
        )

    # labels to vary: those the fired rules read; with no rule fired, those any rule reads
    watched = decision.rule_ids or [r.id for r in decider.compiled.rules]
    labels = []
    for rid in watched:
        for a in reads(bundle, rules[rid].when):
            if a.startswith(LABEL_PREFIX) and a not in labels:
                labels.append(a)
    constants = sorted(
        {
            float(x)
            for rid in watched
            for x in _NUMBER.findall(rules[rid].when)
            if 0.0 <= float(x) <= 1.0
        }
    )
    counterfactuals = [
        cf
        for label in labels
        if (cf := _search(decider, candidate, item, label, decision, constants, tolerance, grid))
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
