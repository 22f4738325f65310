"""The records that cross part boundaries (see docs/architecture.md).

Engines talk through these, never through each other's internals. They are plain frozen
dataclasses so every part can build and read them without importing another engine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Decision:
    """What the guard did to one candidate in one request. Immutable once written."""

    request_id: str
    ts: float  # unix seconds
    surface: str
    subject_id: str  # pseudonymised by the trace before it is written
    item_id: str
    rank_before: int
    rank_after: int  # -1 when dropped
    action: str  # allow | drop | demote | label | cap
    rule_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    shadow_rule_ids: tuple[str, ...] = ()  # rules that matched in shadow mode (recorded, not acted on)
    bundle_hash: str = ""
    bundle_version: str = ""
    model_versions: tuple[str, ...] = ()
    breaker_state: str = "closed"
    score_before: float | None = None
    score_after: float | None = None
    attribution: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Event:
    """Any other traced event: a deploy verdict, a breaker transition, an alert, a mitigation,
    an erasure. ``kind`` names it; ``payload`` is JSON-serialisable."""

    kind: str
    ts: float
    subject: str  # what it is about: a deployment id, a breaker scope, an alert id
    payload: dict[str, Any] = field(default_factory=dict)
    bundle_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """One evaluation run: what ran on what, the aggregates with intervals, the gate verdicts."""

    run_id: str
    suite: str
    target: str
    metrics: dict[str, float]  # aggregate name -> value
    intervals: dict[str, tuple[float, float]]  # aggregate name -> 95% interval
    n: dict[str, int]  # aggregate name -> number of items behind it
    gate_verdicts: dict[str, bool]  # gate id -> passed
    dataset_hashes: dict[str, str]  # dataset name -> sha256 of its manifest
    model_hashes: dict[str, str]  # weights file -> sha256
    report_path: str = ""
    gate_outcomes: dict[str, str] = field(default_factory=dict)  # gate id -> pass | fail | inconclusive
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)  # judged metric -> {judge: name@version, validated}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
