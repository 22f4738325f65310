"""Gates, purpose checks and alerts: one context per decision, evaluated by the reference
evaluator (the CEL library)."""

from __future__ import annotations

from typing import Any

from assay.policy.model import Alert, GateReport, GateVerdict, Outcome, PurposeVerdict
from assay.policy.reference import evaluate_context


def check_gates(bundle, context: dict[str, Any], only: list[str] | None = None) -> GateReport:
    """A gate passes when its condition is true; a MISSING gate fails unless ``on_missing: skip``."""
    verdicts = []
    for gate in bundle.gates:
        if only is not None and gate.id not in only:
            continue
        outcome = evaluate_context(bundle, "gates", gate.id, context)
        passed = outcome == Outcome.TRUE or (outcome == Outcome.MISSING and gate.on_missing == "skip")
        reason = gate.reason or gate.when
        if outcome == Outcome.MISSING:
            reason = f"could not be evaluated (missing or ill-typed input): {gate.when}"
        verdicts.append(GateVerdict(gate.id, passed, outcome, reason))
    return GateReport(all(v.passed for v in verdicts), verdicts)


def check_purposes(bundle, context: dict[str, Any]) -> PurposeVerdict:
    """Deny by default; any matching deny beats every allow; the verdict names every rule that
    decided it. A deny rule that cannot be evaluated matches (fail closed) unless ``skip``."""
    allow, deny, reasons = [], [], []
    for purpose in bundle.purposes:
        outcome = evaluate_context(bundle, "purposes", purpose.id, context)
        matched = outcome == Outcome.TRUE or (
            outcome == Outcome.MISSING and purpose.on_missing == "fail_closed" and purpose.effect == "deny"
        )
        if not matched:
            continue
        (deny if purpose.effect == "deny" else allow).append(purpose.id)
        why = purpose.reason or purpose.when
        if outcome == Outcome.MISSING:
            why = f"could not be evaluated, denied (fail closed): {purpose.when}"
        reasons.append(f"{purpose.id}: {why}")
    if deny:
        return PurposeVerdict(False, deny, allow, deny, [r for r in reasons if r.split(":")[0] in deny])
    if allow:
        return PurposeVerdict(True, allow, allow, deny, reasons)
    return PurposeVerdict(False, ["default-deny"], [], [], ["no purpose rule allows this use (deny by default)"])


def check_alerts(bundle, context: dict[str, Any]) -> list[Alert]:
    fired = []
    for alert in bundle.alerts:
        outcome = evaluate_context(bundle, "alerts", alert.id, context)
        if outcome == Outcome.TRUE or (outcome == Outcome.MISSING and alert.on_missing == "fail_closed"):
            fired.append(alert)
    return fired
