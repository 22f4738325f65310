"""The benchmark's quick run reports finite figures; the demo step runs twice (re-runnable)."""

from __future__ import annotations

import math

from rich.console import Console

from assay.cli.demo import DemoContext
from assay.config import settings
from assay.trace import demo


def test_bench_quick_smoke(typed_bench) -> None:
    result = typed_bench("trace")
    for key in ("append_per_s", "verify_per_s", "why_query_ms"):
        assert math.isfinite(result["figures"][key]) and result["figures"][key] > 0
    assert set(result["targets"]) == {"append_per_s", "verify_per_s", "why_query_ms"}
    assert result["baseline"]["postgres_copy_per_s"] > 0 and result["figures"]["append_vs_postgres_copy"] > 0  # COPY, the fastest PostgreSQL ingest


def test_demo_step_is_rerunnable() -> None:
    console = Console(record=True, width=200)
    for _ in range(2):
        ctx = DemoContext(console=console, settings=settings(), quick=True)
        demo.step(ctx)
    text = console.export_text()
    assert "verify: OK" in text and "one flipped bit in a copy: verify FAILED" in text
    assert "included: record" in text and ctx.state["trace"]["verifier_key"]


def test_demo_asks_why_about_a_decision_a_rule_made_for_a_minor():
    from assay.records import Decision, Event
    from assay.trace.demo import _interesting

    def d(item, action, rules=()):
        return Decision("r", 0.0, "for_you", "u", item, 0, 0 if action != "drop" else -1, action, rule_ids=rules)

    records = [Event(kind="breaker", ts=0.0, subject="surface:for_you"), d("a", "allow"), d("b", "demote", ("toxic-demote",)),
               d("c", "drop", ("teen-mature-drop",))]
    assert _interesting(records).item_id == "c"
    assert _interesting(records[:3]).item_id == "b"  # no minor: any rule that acted
    assert _interesting(records[:2]).item_id == "a"  # nothing acted: the first decision
