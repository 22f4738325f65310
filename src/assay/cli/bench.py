"""``assay bench NAME --json``: benchmarks that print their figures beside the baseline measured
in the same run. Each benchmark lives in its part as ``assay/<part>/bench.py`` with a function
``run(quick: bool) -> dict`` returning ``{"figures": {...}, "baseline": {...}, "targets": {...}, ...}``.
"""

from __future__ import annotations

import importlib
import json
import platform
import time

import typer

from assay.errors import BadInput

BENCHMARKS = {
    "policy": "assay.policy.bench",
    "govern": "assay.govern.bench",
    "lineage": "assay.govern.bench",  # the name it had first
    "guard": "assay.guard.bench",
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
    result.setdefault("benchmark", name)
    result.setdefault("quick", quick)
    result.setdefault("wall_s", round(time.time() - started, 3))
    result.setdefault("machine", {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()})
    return result


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        name: str = typer.Argument(..., help=f"One of: {', '.join(BENCHMARKS)}."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (figures, baseline, targets)."),
        quick: bool = typer.Option(False, "--quick", help="A smaller run for smoke tests; figures are not comparable."),
    ) -> None:
        """Run a benchmark and print its figures beside the baseline measured in the same run."""
        result = run_benchmark(name, quick=quick)
        if as_json:
            typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"assay bench {name}")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in result.get("figures", {}).items():
            table.add_row(key, f"{value}")
        for key, value in result.get("baseline", {}).items():
            table.add_row(f"baseline: {key}", f"{value}")
        Console().print(table)
