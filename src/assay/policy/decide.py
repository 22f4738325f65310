"""What a surface's rules decide per candidate, vectorised over the batch.

Semantics (docs/policy.md): rules are walked in order; the first matching *hard* rule (drop,
allow) ends the walk; *soft* rules (demote, label) matched before it stack (factors multiply,
labels accumulate); cap rules matched before it are returned for the slate-level cap. A rule
whose condition is MISSING matches when ``on_missing: fail_closed`` and then drops the candidate
(fail closed), whatever its action; with ``skip`` it does not match. Shadow rules and rules
outside their rollout are recorded as matched but never act.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from assay.policy.model import CandidateDecision, Outcome, Rule

ALLOW, DROP, DEMOTE, LABEL = 0, 1, 2, 3
ACTION_NAMES = ("allow", "drop", "demote", "label")


@dataclass
class Resolution:
    rules: list[Rule]
    action: np.ndarray  # (n,) int8 of ALLOW/DROP/DEMOTE/LABEL
    deciding: np.ndarray  # (n,) int index of the hard rule that ended the walk, -1 if none
    fail_closed: np.ndarray  # (n,) bool: dropped because a fail-closed rule could not be evaluated
    factor: np.ndarray  # (n,) float demote factor (1.0 = none)
    acting: np.ndarray  # (rules, n) bool: matched, in rollout, not shadow, before the deciding rule
    shadow: np.ndarray  # (rules, n) bool: matched in shadow mode or outside rollout

    def candidate(self, j: int) -> CandidateDecision:
        rules = self.rules
        acted = [i for i in np.flatnonzero(self.acting[:, j])]
        ids = [rules[i].id for i in acted]
        reasons = [("fail-closed: " if (self.fail_closed[j] and i == self.deciding[j]) else "") + rules[i].reason for i in acted]
        labels = [rules[i].action.text for i in acted if rules[i].action.kind == "label" and i != self.deciding[j]]
        caps = [rules[i].id for i in acted if rules[i].action.kind == "cap"]
        return CandidateDecision(
            action=ACTION_NAMES[int(self.action[j])],
            rule_ids=ids,
            reasons=reasons,
            factor=float(self.factor[j]),
            labels=[t for t in labels if t],
            caps=caps,
            shadow_rule_ids=[rules[i].id for i in np.flatnonzero(self.shadow[:, j])],
            fail_closed=bool(self.fail_closed[j]),
        )


@dataclass(frozen=True)
class _RulePlan:
    """Per-rule facts resolve() needs, as arrays, computed once per rule list (not per request)."""

    fail_closed: np.ndarray  # (rules, 1) bool
    shadow: np.ndarray  # (rules, 1) bool
    hard: np.ndarray  # (rules, 1) bool
    is_drop: np.ndarray  # (rules,) bool
    order: np.ndarray  # (rules, 1) int
    demote_rows: np.ndarray  # indices of demote rules
    demote_factors: np.ndarray  # (len(demote_rows), 1)
    label_rows: np.ndarray  # indices of label rules


_PLANS: dict[int, tuple[list[Rule], _RulePlan]] = {}


def _plan(rules: list[Rule]) -> _RulePlan:
    hit = _PLANS.get(id(rules))
    if hit is not None and hit[0] is rules:
        return hit[1]
    kinds = [r.action.kind for r in rules]
    demote_rows = np.array([i for i, k in enumerate(kinds) if k == "demote"], dtype=np.intp)
    plan = _RulePlan(
        fail_closed=np.array([r.on_missing == "fail_closed" for r in rules], bool)[:, None],
        shadow=np.array([r.shadow for r in rules], bool)[:, None],
        hard=np.array([r.action.hard for r in rules], bool)[:, None],
        is_drop=np.array([k == "drop" for k in kinds], bool),
        order=np.arange(len(rules))[:, None],
        demote_rows=demote_rows,
        demote_factors=np.array([rules[i].action.factor for i in demote_rows], dtype=np.float64)[:, None],
        label_rows=np.array([i for i, k in enumerate(kinds) if k == "label"], dtype=np.intp),
    )
    if len(_PLANS) > 256:  # rule lists live as long as their bundle; keep the cache bounded
        _PLANS.clear()
    _PLANS[id(rules)] = (rules, plan)  # holding the list keeps its id from being reused
    return plan


def resolve(rules: list[Rule], outcomes: np.ndarray, active: np.ndarray | None = None) -> Resolution:
    """``outcomes``: (rules, n) from ``CompiledRules.evaluate``; ``active``: (rules, n) bool,
    False where a rule is outside its rollout for that subject (default: all active)."""
    n_rules, n = outcomes.shape
    if n_rules == 0:
        z = np.zeros(n, np.int8)
        empty = np.zeros((0, n), bool)
        return Resolution(rules, z, np.full(n, -1), np.zeros(n, bool), np.ones(n), empty, empty)
    plan = _plan(rules)
    missing = outcomes == Outcome.MISSING
    matched = (outcomes == Outcome.TRUE) | (missing & plan.fail_closed)
    live = ~plan.shadow if active is None else (~plan.shadow & active)
    acts = matched & live
    shadow = matched & ~live
    # a fail-closed miss acts as a hard drop whatever the rule's action
    hard = acts & (plan.hard | missing)
    any_hard = hard.any(axis=0)
    first = np.where(any_hard, hard.argmax(axis=0), n_rules)
    before = plan.order < first
    acting = acts & (plan.order <= first)

    deciding = np.where(any_hard, first, -1)
    safe_first = np.minimum(first, n_rules - 1)
    first_missing = any_hard & missing[safe_first, np.arange(n)]
    first_is_drop = any_hard & (first_missing | plan.is_drop[safe_first])

    soft = acts & before
    if plan.demote_rows.size:
        soft_demote = soft[plan.demote_rows]
        factor = np.prod(np.where(soft_demote, plan.demote_factors, 1.0), axis=0)
        demoted = soft_demote.any(axis=0)
    else:
        factor, demoted = np.ones(n), np.zeros(n, bool)
    labelled = soft[plan.label_rows].any(axis=0) if plan.label_rows.size else np.zeros(n, bool)

    action = np.full(n, ALLOW, np.int8)
    action[labelled] = LABEL
    action[demoted] = DEMOTE
    action[first_is_drop] = DROP
    return Resolution(rules, action, deciding, first_missing, factor, acting, shadow)
