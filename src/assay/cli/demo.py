"""``assay demo``: run what the system can do, end to end, on embedded defaults.

Each part contributes a step as ``assay/<part>/demo.py`` with ``TITLE: str`` and
``step(ctx: DemoContext) -> None``. Steps run in the order below and share ``ctx.state``
(for example the registry ids the governance step created). A step whose optional extra is
missing says what to install and the demo continues with the rest.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console

from assay.config import Settings, settings
from assay.errors import AssayError, Unavailable

DEMO_STEPS = [
    "assay.policy.demo",
    "assay.govern.demo",
    "assay.recsys.demo",
    "assay.classify.demo",
    "assay.evaluate.demo",
    "assay.redteam.demo",
    "assay.guard.demo",
    "assay.monitor.demo",
    "assay.trace.demo",
    "assay.explain.demo",
    "assay.mitigate.demo",
    "assay.server.demo",
]


@dataclass
class DemoContext:
    console: Console
    settings: Settings
    quick: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    def say(self, text: str) -> None:
        """Narrate one thing the demo is doing or found."""
        self.console.print(f"  {text}", highlight=False)


def run_demo(quick: bool = False, only: list[str] | None = None, console: Console | None = None) -> DemoContext:
    console = console or Console()
    ctx = DemoContext(console=console, settings=settings(), quick=quick)
    ctx.settings.home.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]assay demo")
    console.print(f"state in {ctx.settings.home}; data from {ctx.settings.data_dir}")
    n = 0
    for name in DEMO_STEPS:
        part = name.split(".")[1]
        if only and part not in only:
            continue
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            console.print(f"[yellow]skipping {part}[/]: missing {e.name}; install with pip install 'assay[all]'")
            continue
        n += 1
        console.rule(f"[bold cyan]{n}. {module.TITLE}")
        started = time.perf_counter()
        try:
            module.step(ctx)
        except Unavailable as e:
            console.print(f"[yellow]skipped[/]: {e.render()}")
            continue
        except AssayError as e:
            console.print(f"[red]failed[/]: {e.render()}")
            raise
        console.print(f"[dim]{part} done in {time.perf_counter() - started:.1f}s[/]")
    console.rule("[bold green]demo complete")
    return ctx


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        quick: bool = typer.Option(False, "--quick", help="Smaller slices everywhere (used by the tests)."),
        only: list[str] = typer.Option(None, "--only", help="Run only these parts (repeatable), e.g. --only policy."),
    ) -> None:
        """Run the main job end to end on embedded defaults, narrating each step."""
        run_demo(quick=quick, only=only or None)
