"""``assay bench NAME --json``: benchmarks that print their figures beside the baseline measured
in the same run.

Each benchmark lives in its part as ``assay/<part>/bench.py`` with a function
``run(quick: bool) -> BenchResult``. :class:`BenchResult` is the one shape every benchmark
returns, so a reader (or CI) can compare any figure with its target without knowing the bench:

    return BenchResult(
        figures={"drift_ms_per_feature_1m": 41.2, "drift_speedup_vs_scipy": 3.1},
        units={"drift_ms_per_feature_1m": "ms", "drift_speedup_vs_scipy": "x",
               "drift_ms_per_feature_1m_scipy": "ms"},
        baseline={"drift_ms_per_feature_1m_scipy": 128.0},
        targets={"drift_ms_per_feature_1m": at_most(100)},
        measures={"drift_ms_per_feature_1m": "all five drift tests of one feature, 1M values"},
        detail={"repeats": 5},
    )

- ``figures``: the issue's figures (numbers; ``None`` for one that could not be measured in this
  run, with the reason in ``detail``);
- ``baseline``: the peer or naive version measured in the same process and run (numbers or
  ``None``), never a number remembered from elsewhere;
- ``units``: one unit for every figure and every baseline (``ms``, ``items/s``, ``x`` for a
  ratio of two rates, ...): construction fails when one is missing;
- ``targets``: :class:`Target` (``at_least(x)`` / ``at_most(x)``) per figure, numbers only, with an
  optional ``when`` naming the condition the target holds under; ``met`` is computed from the
  figure (``None`` when the figure was not measured);
- ``measures``: one line per figure saying what was timed (optional, but say it where a name
  could be read two ways);
- ``detail``: anything else worth keeping (setup, per-run values, the load average).

The JSON form (``to_dict``) has the keys ``figures``, ``baseline``, ``units``, ``targets``
(``{"op", "value", "when"}``), ``met`` (figure → bool or null), ``measures`` and ``detail``;
``run_benchmark`` adds ``benchmark``, ``quick``, ``wall_s`` and ``machine``. A benchmark not yet
converted may still return a plain dict; it is printed as it is.
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import typer

from assay.errors import BadInput

BENCHMARKS = {
    "policy": "assay.policy.bench",
    "govern": "assay.server.bench",  # the lineage figures plus the control plane's attack figures
    "lineage": "assay.govern.bench",  # the lineage figures alone (the name it had first)
    "guard": "assay.guard.bench",
    "stream": "assay.guard.stream_bench",
    "trace": "assay.trace.bench",
    "classify": "assay.classify.bench",
    "judges": "assay.judges.bench",
    "eval": "assay.evaluate.bench",
    "monitor": "assay.monitor.bench",
    "explain": "assay.explain.bench",
    "mitigate": "assay.mitigate.bench",
    "recsys": "assay.evaluate.recsys_bench",
}

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
    """What every ``assay bench`` returns (see the module docstring)."""

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


def run_benchmark(name: str, quick: bool = False) -> dict:
    if name not in BENCHMARKS:
        raise BadInput(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    try:
        module = importlib.import_module(BENCHMARKS[name])
    except ModuleNotFoundError as e:
        raise BadInput(f"benchmark {name!r} is not available in this build ({e.name} missing)") from e
    started = time.time()
    result = module.run(quick=quick)
    if isinstance(result, BenchResult):
        result = result.to_dict()
    result.setdefault("benchmark", name)
    result.setdefault("quick", quick)
    result.setdefault("wall_s", round(time.time() - started, 3))
    result.setdefault("machine", {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()})
    return result


def _target_text(target: Any) -> str:
    if isinstance(target, dict) and "op" in target:
        return f"{target['op']} {target['value']}" + (f" ({target['when']})" if target.get("when") else "")
    return "" if target is None else str(target)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        name: str = typer.Argument(..., help=f"One of: {', '.join(BENCHMARKS)}."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (figures, baseline, units, targets, met)."),
        quick: bool = typer.Option(False, "--quick", help="A smaller run for smoke tests; figures are not comparable."),
    ) -> None:
        """Run a benchmark and print its figures beside the baseline measured in the same run."""
        result = run_benchmark(name, quick=quick)
        if as_json:
            typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        units = result.get("units", {})
        targets = result.get("targets", {})
        met = result.get("met", {})
        table = Table(title=f"assay bench {name}")
        for column in ("figure", "value", "unit", "target", "met"):
            table.add_column(column, justify="right" if column == "value" else "left")
        for key, value in result.get("figures", {}).items():
            ok = met.get(key)
            table.add_row(key, f"{value}", units.get(key, ""), _target_text(targets.get(key)), "" if ok is None else ("yes" if ok else "NO"))
        for key, value in result.get("baseline", {}).items():
            table.add_row(f"baseline: {key}", f"{value}", units.get(key, ""), "", "")
        Console().print(table)
