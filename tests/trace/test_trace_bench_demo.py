"""The benchmark's quick run reports finite figures; the demo step runs twice (re-runnable)."""

from __future__ import annotations

import math

from rich.console import Console

from assay.cli.demo import DemoContext
from assay.config import settings
from assay.trace import bench, demo


def test_bench_quick_smoke() -> None:
    result = bench.run(quick=True)
    for key in ("append_per_s", "verify_per_s", "why_query_ms"):
        assert math.isfinite(result["figures"][key]) and result["figures"][key] > 0
    assert set(result["targets"]) == {"append_per_s", "verify_per_s", "why_query_ms"}
    assert "postgres_insert_per_s" in result["baseline"]


def test_demo_step_is_rerunnable() -> None:
    console = Console(record=True, width=200)
    for _ in range(2):
        ctx = DemoContext(console=console, settings=settings(), quick=True)
        demo.step(ctx)
    text = console.export_text()
    assert "verify: OK" in text and "one flipped bit in a copy: verify FAILED" in text
    assert "included: record" in text and ctx.state["trace"]["verifier_key"]
