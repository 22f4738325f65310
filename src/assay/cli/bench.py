"""``assay bench NAME --json``: benchmarks that print their figures beside the baseline measured
in the same run.

Each benchmark lives in its part as ``assay/<part>/bench.py`` with a function
``run(quick: bool) -> BenchResult``. :class:`~assay.records.BenchResult` (figures, baseline,
units, numeric targets, ``met`` per target, measures, detail) is the one shape every benchmark
returns; it is a foundation record (``assay.records``) so engines build it without importing the
CLI, and it is re-exported here with :class:`Target`, :func:`at_least` and :func:`at_most`.

``run_benchmark`` refuses anything else (a bench that returns a plain dict is a bug) and adds
``benchmark``, ``quick``, ``wall_s`` and ``machine`` to the JSON form."""

from __future__ import annotations

import importlib
import json
import platform
import time
from typing import Any

import typer

from assay.errors import BadInput
from assay.records import BenchResult, Number, Target, at_least, at_most

__all__ = ["BENCHMARKS", "BenchResult", "Number", "Target", "at_least", "at_most", "register", "run_benchmark"]

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
