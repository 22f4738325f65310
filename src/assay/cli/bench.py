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
import platform
import time
from typing import Any

import typer

from assay.errors import BadInput
from assay.files import dumps_json
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


def run_benchmark(name: str, quick: bool = False) -> dict[str, Any]:
    """Run one benchmark and return the JSON form of its :class:`BenchResult` with ``benchmark``,
    ``quick``, ``wall_s`` and ``machine`` added. A bench that returns anything else is refused
    (``TypeError``): its figures could not be read against their targets."""
    if name not in BENCHMARKS:
        raise BadInput(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")
    try:
        module = importlib.import_module(BENCHMARKS[name])
    except ModuleNotFoundError as e:
        raise BadInput(f"benchmark {name!r} is not available in this build ({e.name} missing)") from e
    started = time.time()
    result = module.run(quick=quick)
    if not isinstance(result, BenchResult):
        raise TypeError(f"benchmark {name!r} ({BENCHMARKS[name]}.run) returned a {type(result).__name__}, not a "
                        "BenchResult (assay.records): every bench returns figures, units and numeric targets in that shape")
    return {
        **result.to_dict(),
        "benchmark": name,
        "quick": quick,
        "wall_s": round(time.time() - started, 3),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
    }


def _target_text(target: dict[str, Any] | None) -> str:
    if target is None:
        return ""
    return f"{target['op']} {target['value']}" + (f" ({target['when']})" if target.get("when") else "")


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
            typer.echo(dumps_json(result, indent=2, sort_keys=True, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        units, targets, met = result["units"], result["targets"], result["met"]
        table = Table(title=f"assay bench {name}")
        for column in ("figure", "value", "unit", "target", "met"):
            table.add_column(column, justify="right" if column == "value" else "left")
        for key, value in result["figures"].items():
            ok = met.get(key)
            table.add_row(key, f"{value}", units[key], _target_text(targets.get(key)), "" if ok is None else ("yes" if ok else "NO"))
        for key, value in result["baseline"].items():
            table.add_row(f"baseline: {key}", f"{value}", units[key], "", "")
        Console().print(table)
