"""Each story is told once per demo run: the guard and monitor steps leave the labeller outage and
the harmful surge to the replay on real traffic when this run includes it, and tell their own
versions when run without it (``assay demo --only guard`` / ``--only monitor``)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from assay.cli.demo import DemoContext
from assay.config import settings

REPLAY = "assay.cli.demo:replay"


def _ctx(planned: tuple[str, ...], entry: str) -> DemoContext:
    ctx = DemoContext(console=Console(file=io.StringIO(), width=200), settings=settings(), quick=True, planned=planned)
    ctx.settings.home.mkdir(parents=True, exist_ok=True)
    ctx.current = entry
    return ctx


@pytest.mark.parametrize("with_replay", [True, False])
def test_monitor_step_leaves_the_surge_to_the_replay(with_replay: bool) -> None:
    from assay.monitor import demo

    entry = "assay.monitor.demo"
    ctx = _ctx((entry, REPLAY) if with_replay else (entry,), entry)
    demo.step(ctx)
    said = "\n".join(ctx.narration[entry])
    assert "drift score" in said  # the drift check is told either way
    assert ("surge" in said) is (not with_replay), said


@pytest.mark.parametrize("with_replay", [True, False])
def test_guard_step_leaves_the_outage_to_the_replay(with_replay: bool) -> None:
    from assay.guard import demo

    entry = "assay.guard.demo"
    ctx = _ctx((entry, REPLAY) if with_replay else (entry,), entry)
    demo.step(ctx)
    said = "\n".join(ctx.narration[entry])
    assert "1,000 candidates" in said
    assert ("labeler down" in said) is (not with_replay), said
    assert ctx.state["guard"]["decisions"]
