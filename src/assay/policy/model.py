"""The typed contents of a policy bundle: rules (rule -> action -> reason, as small separate
types, the way visibility filtering libraries shape it), gates, purposes, alerts and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from assay.errors import Location
from assay.policy.actions import Action, Allow  # each action is its own type (assay.policy.actions)

SECTIONS = ("rules", "gates", "purposes", "alerts")
ALLOW = Allow()  # a rule's action when none is given (frozen: one shared value)
ON_MISSING = ("fail_closed", "skip")
# What an unevaluable condition means when the author does not say: serving rules, release
# gates and purpose checks fail closed; alerts do not fire on missing statistics.
DEFAULT_ON_MISSING = {"rules": "fail_closed", "gates": "fail_closed", "purposes": "fail_closed", "alerts": "skip"}


class Outcome(IntEnum):
    """The value of one condition for one candidate or context."""

    FALSE = 0
    TRUE = 1
    MISSING = 2  # an attribute it reads is absent or of the wrong type, or evaluation errored


@dataclass(frozen=True)
class Condition:
    """Something with a CEL ``when`` in one section of a bundle."""

    id: str
    when: str
    section: str
    reason: str
    on_missing: str
    location: Location


@dataclass(frozen=True)
class Rule(Condition):
    action: Action = ALLOW
    surfaces: tuple[str, ...] = ()  # empty: every surface
    rollout: float = 100.0  # percent of subjects the rule acts on
    shadow: bool = False  # decide and record, do not act
    evaluator: str = "vectorised"  # vectorised | reference

    def applies_to(self, surface: str) -> bool:
        return not self.surfaces or surface in self.surfaces


GATE_DECIDE = ("interval", "point")
DEFAULT_MIN_N = 30  # fewer items behind a metric than this: the gate is inconclusive, never a pass


@dataclass(frozen=True)
class Gate(Condition):
    """A release gate. ``decide: interval`` (default) passes only when the condition holds over
    the whole 95% interval of every metric it reads, fails when it holds nowhere in it, and is
    inconclusive otherwise; ``decide: point`` decides on the point estimates (visibly, in the
    verdict). Either way a metric with fewer than ``min_n`` items makes the gate inconclusive."""

    decide: str = "interval"
    min_n: int = DEFAULT_MIN_N


@dataclass(frozen=True)
class Purpose(Condition):
    effect: str = "deny"  # deny | allow


@dataclass(frozen=True)
class MitigationCall:
    name: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}({', '.join(repr(a) for a in self.args)})"


@dataclass(frozen=True)
class Alert(Condition):
    severity: str = "warn"  # info | warn | page
    then: tuple[MitigationCall, ...] = ()


@dataclass(frozen=True)
class TestCase:
    name: str
    section: str
    params: dict[str, Any]
    input: dict[str, Any]
    expect: dict[str, Any]
    location: Location


GATE_VERDICTS = ("pass", "fail", "inconclusive")


@dataclass
class GateVerdict:
    """One gate's verdict: ``pass``, ``fail`` or ``inconclusive`` (``passed`` only on pass).
    ``outcome`` is the condition on the point estimates; ``missing`` names the evidence that
    would be needed to decide (more items, an interval); ``notes`` says what else a reader must
    know (an unvalidated judge behind a metric, a point-estimate decision)."""

    id: str
    passed: bool
    outcome: Outcome
    reason: str
    verdict: str = ""
    decide: str = "interval"
    evidence: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.verdict:
            self.verdict = "pass" if self.passed else "fail"
        self.passed = self.verdict == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "verdict": self.verdict, "passed": self.passed,
                "outcome": str(getattr(self.outcome, "name", self.outcome)), "reason": self.reason,
                "decide": self.decide, "evidence": self.evidence, "missing": self.missing, "notes": self.notes}


@dataclass
class GateReport:
    passed: bool
    verdicts: list[GateVerdict] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """Every gate that did not pass (failed or inconclusive): what blocks a release."""
        return [v.id for v in self.verdicts if not v.passed]

    @property
    def inconclusive(self) -> list[str]:
        return [v.id for v in self.verdicts if v.verdict == "inconclusive"]


@dataclass
class PurposeVerdict:
    """Deny by default; a matching deny beats any allow; names every rule that decided."""

    allowed: bool
    deciding: list[str]
    matched_allow: list[str]
    matched_deny: list[str]
    reasons: list[str]


@dataclass
class CandidateDecision:
    """What the rules decide for one candidate of a slate (``SlateDecision.candidate``)."""

    action: str  # a registered action's name: allow | drop | demote | label | cap | ...
    rule_ids: list[str]
    reasons: list[str]
    factor: float = 1.0
    labels: list[str] = field(default_factory=list)
    caps: list[str] = field(default_factory=list)  # ids of cap rules that matched
    shadow_rule_ids: list[str] = field(default_factory=list)
    fail_closed: bool = False
    rank: int = -1  # position in the served slate, -1 when not served
