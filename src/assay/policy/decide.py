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


def resolve(rules: list[Rule], outcomes: np.ndarray, active: np.ndarray | None = None) -> Resolution:
    """``outcomes``: (rules, n) from ``CompiledRules.evaluate``; ``active``: (rules, n) bool,
    False where a rule is outside its rollout for that subject (default: all active)."""
    n_rules, n = outcomes.shape
    if n_rules == 0:
        z = np.zeros(n, np.int8)
        empty = np.zeros((0, n), bool)
        return Resolution(rules, z, np.full(n, -1), np.zeros(n, bool), np.ones(n), empty, empty)
    fail_closed_rule = np.array([r.on_missing == "fail_closed" for r in rules])[:, None]
    missing = outcomes == Outcome.MISSING
    matched = (outcomes == Outcome.TRUE) | (missing & fail_closed_rule)
    shadow_rule = np.array([r.shadow for r in rules])[:, None]
    live = ~shadow_rule if active is None else (~shadow_rule & active)
    acts = matched & live
    shadow = matched & ~live
    # a fail-closed miss acts as a hard drop whatever the rule's action
    hard_rule = np.array([r.action.hard for r in rules])[:, None]
    hard = acts & (hard_rule | missing)
    any_hard = hard.any(axis=0)
    first = np.where(any_hard, hard.argmax(axis=0), n_rules)
    before = np.arange(n_rules)[:, None] < first[None, :]
    at = np.arange(n_rules)[:, None] == first[None, :]
    acting = acts & (before | at)

    cols = np.arange(n)
    deciding = np.where(any_hard, first, -1)
    safe_first = np.minimum(first, n_rules - 1)
    first_missing = any_hard & missing[safe_first, cols]
    first_is_drop = any_hard & (first_missing | np.array([r.action.kind == "drop" for r in rules])[safe_first])

    factors = np.array([r.action.factor if r.action.kind == "demote" else 1.0 for r in rules])[:, None]
    soft_demote = acting & before & np.array([r.action.kind == "demote" for r in rules])[:, None]
    factor = np.prod(np.where(soft_demote, factors, 1.0), axis=0)
    soft_label = (acting & before & np.array([r.action.kind == "label" for r in rules])[:, None]).any(axis=0)

    action = np.full(n, ALLOW, np.int8)
    action[soft_label] = LABEL
    action[soft_demote.any(axis=0)] = DEMOTE
    action[first_is_drop] = DROP
    return Resolution(rules, action, deciding, first_missing, factor, acting, shadow)
