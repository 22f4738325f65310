"""The records that cross part boundaries (see docs/architecture.md).

Engines talk through these, never through each other's internals. They are plain frozen
dataclasses so every part can build and read them without importing another engine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


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
    action: str  # a registered guard action: allow | drop | demote | label | cap | ... (assay.policy.actions)
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


# -- benchmark results ---------------------------------------------------------------------------
# What every ``assay bench NAME`` returns (``assay/<part>/bench.py``: ``run(quick) -> BenchResult``).
# It lives here, not in ``assay.cli``, so the engines' bench modules can build it without
# importing the CLI (the layering rule); ``assay.cli.bench`` re-exports it and prints it.

Number = int | float


@dataclass(frozen=True)
class Target:
    """A figure's target as a number: ``figure >= value`` or ``figure <= value``."""

    op: Literal[">=", "<="]
    value: float
    when: str = ""  # the condition it holds under, e.g. "at 1000 requests/s offered"

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"a target's op is '>=' or '<=', not {self.op!r}")
        if not isinstance(self.value, Number) or isinstance(self.value, bool) or not math.isfinite(self.value):
            raise ValueError(f"a target's value must be a finite number, not {self.value!r}")

    def met(self, figure: Number | None) -> bool | None:
        if figure is None:
            return None
        return figure >= self.value if self.op == ">=" else figure <= self.value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "value": self.value}
        if self.when:
            out["when"] = self.when
        return out


def at_least(value: Number, when: str = "") -> Target:
    return Target(">=", value, when)


def at_most(value: Number, when: str = "") -> Target:
    return Target("<=", value, when)


def _check_numbers(kind: str, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, Number):
            raise ValueError(f"{kind} {key!r} must be a number or None, not {type(value).__name__} {value!r}")


@dataclass
class BenchResult:
    """What every ``assay bench`` returns, so a reader (or CI) can compare any figure with its
    target without knowing the bench::

        return BenchResult(
            figures={"drift_ms_per_feature_1m": 41.2, "drift_speedup_vs_scipy": 3.1},
            units={"drift_ms_per_feature_1m": "ms", "drift_speedup_vs_scipy": "x",
                   "drift_ms_per_feature_1m_scipy": "ms"},
            baseline={"drift_ms_per_feature_1m_scipy": 128.0},
            targets={"drift_ms_per_feature_1m": at_most(100)},
            measures={"drift_ms_per_feature_1m": "all five drift tests of one feature, 1M values"},
            detail={"repeats": 5},
        )

    - ``figures``: the issue's figures, numbers only (``None`` for one that could not be
      measured in this run, with the reason in ``detail``); a count or a 0/1 outcome is a number
      too (``disagreements: 0``, ``harmful_ci95_disjoint: 1``);
    - ``baseline``: the peer or naive version measured in the same process and run (numbers or
      ``None``), never a number remembered from elsewhere;
    - ``units``: one unit for every figure and every baseline (``ms``, ``items/s``, ``x`` for a
      ratio of two rates, ``count``, ...): construction fails when one is missing;
    - ``targets``: a :class:`Target` (``at_least(x)`` / ``at_most(x)``) per figure that has one,
      numbers only, with an optional ``when`` naming the condition it holds under; ``met`` is
      computed from the figure (``None`` when the figure was not measured);
    - ``measures``: one line per figure saying what was timed (say it where a name could be
      read two ways);
    - ``detail``: everything else worth keeping, JSON-serialisable (setup, per-run values,
      checks, names such as the worst source, intervals as lists, the load average).

    ``to_dict`` gives the JSON form: ``figures``, ``baseline``, ``units``, ``targets``
    (``{"op", "value", "when"}``), ``met`` (figure -> bool or null), ``measures``, ``detail``.
    """

    figures: dict[str, Number | None]
    units: dict[str, str]
    baseline: dict[str, Number | None] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)
    measures: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_numbers("figure", self.figures)
        _check_numbers("baseline", self.baseline)
        clash = set(self.figures) & set(self.baseline)
        if clash:
            raise ValueError(f"a name is either a figure or a baseline, not both: {sorted(clash)}")
        missing = [k for k in (*self.figures, *self.baseline) if not self.units.get(k)]
        if missing:
            raise ValueError(f"no unit for {missing}")
        unknown = [k for k in self.targets if k not in self.figures]
        if unknown:
            raise ValueError(f"targets for figures that are not reported: {unknown}")
        for key, target in self.targets.items():
            if not isinstance(target, Target):
                raise ValueError(f"target for {key!r} must be a Target (at_least/at_most), not {target!r}")

    @property
    def met(self) -> dict[str, bool | None]:
        return {key: target.met(self.figures.get(key)) for key, target in self.targets.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "figures": dict(self.figures),
            "baseline": dict(self.baseline),
            "units": dict(self.units),
            "targets": {k: t.to_dict() for k, t in self.targets.items()},
            "met": self.met,
            "measures": dict(self.measures),
            "detail": dict(self.detail),
        }
