"""The demo's story and the context each step is given, shared by the orchestrator
(``assay.cli.demo``, the ``assay demo`` command) and the parts' steps (``assay/<part>/demo.py``).

It sits beside ``records`` and ``errors``, not in ``cli``: a part's demo step and the assurance
report (``assay.server.demo``) need the story's order and the step contract, but no part may
import the command that drives them all. The stages name their steps as strings, so this
module imports no part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from assay.config import Settings

__all__ = ["DEMO_STEPS", "STAGES", "DemoContext", "Stage"]


@dataclass(frozen=True)
class Stage:
    number: int
    title: str
    steps: tuple[str, ...]


# The story, in the order issue 11 tells it. Parts whose module is absent are left out.
STAGES: tuple[Stage, ...] = (
    Stage(1, "Register datasets and models with purposes and restrictions; a lineage verdict",
          ("assay.policy.demo", "assay.govern.demo")),
    Stage(2, "Train the reference recommender; accuracy, fairness, robustness to shilling",
          ("assay.recsys.demo", "assay.redteam.demo")),
    Stage(3, "Evaluate SmolLM2 on slices of the safety, injection and bias suites",
          ("assay.classify.demo", "assay.evaluate.demo")),
    Stage(4, "Release gates, approvals, deployment through the purpose gate",
          ("assay.mitigate.demo", "assay.govern.demo:deploy")),
    Stage(5, "Replay MovieLens sessions through the guard: surge, outage, alert, trip, fallback, recovery",
          ("assay.guard.demo", "assay.cli.demo:replay", "assay.monitor.demo")),
    Stage(6, "Verify the decision trace; why was this shown?",
          ("assay.trace.demo", "assay.explain.demo")),
    Stage(7, "One HTML assurance report; the dashboard",
          ("assay.server.demo",)),
)  # fmt: skip
DEMO_STEPS = [entry for stage in STAGES for entry in stage.steps]


@dataclass
class DemoContext:
    console: Console
    settings: Settings
    quick: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)  # the last run's record (last-run.json)
    narration: dict[str, list[str]] = field(
        default_factory=dict
    )  # step entry -> what it said (plain text)
    current: str = ""
    planned: tuple[str, ...] = ()  # the step entries this run will execute, in order
    # Ctrl-C was pressed: kept beside the KeyboardInterrupt, which Python drops when the signal
    # lands while a finalizer or a weakref callback runs (a SQLAlchemy one has swallowed it)
    interrupted: bool = False

    def will_run(self, entry: str) -> bool:
        """Whether this run executes ``entry`` (so a step can leave a story to it, not tell it twice)."""
        return entry in self.planned

    def say(self, text: str) -> None:
        """Narrate one thing the demo is doing or found (also kept for the assurance report)."""
        self.console.print(f"  {text}", highlight=False)
        if self.current:
            from rich.text import Text

            try:
                plain = Text.from_markup(text).plain
            except Exception:  # not valid markup: keep it as written
                plain = text
            self.narration.setdefault(self.current, []).append(plain)
