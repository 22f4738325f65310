"""Demo step: load the feed's policy bundle, run its own tests through both evaluators, and
show one candidate batch decided by the vectorised evaluator."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

TITLE = "Policy: one bundle of CEL rules, gates, purposes and alerts"
FEED = Path(__file__).parent / "examples" / "feed.yaml"


def step(ctx) -> None:
    from assay.policy import Batch, decide_slate, load_bundle
    from assay.policy.actions import ACTION_NAMES, Act
    from assay.policy.bench import make_batches
    from assay.policy.testing import run_tests

    bundle = load_bundle(FEED)
    ctx.state["bundle_path"] = str(FEED)
    ctx.state["bundle_hash"] = bundle.hash
    ctx.say(f"loaded [bold]{bundle.name}[/] {bundle.version}: {len(bundle.rules)} serving rules, {len(bundle.gates)} release gates, "
            f"{len(bundle.purposes)} purpose checks, {len(bundle.alerts)} alerts; hash {bundle.short_hash}")
    results = run_tests(bundle)
    ctx.say(f"bundle tests: {sum(r.passed for r in results)}/{len(results)} pass (rule cases run through both evaluators)")
    compiled = bundle.compile_rules("for_you")
    cols, missing, scalars = make_batches(1, 1000, seed=11)[0]
    scalars["request.user.age"] = 15
    start = time.perf_counter()
    res = decide_slate(compiled, Batch.from_columns(1000, cols, missing, scalars), scores=np.linspace(1.0, 0.0, 1000, endpoint=False),
                       keys={name[len("item."):]: col for name, col in cols.items() if name.startswith("item.")})
    elapsed = (time.perf_counter() - start) * 1e3
    counts = {name: int((res.action == code).sum()) for code, name in enumerate(ACTION_NAMES)}
    ctx.say(f"1,000 candidates for a 15-year-old on for_you decided in {elapsed:.2f} ms (vectorised rules, then the slate): {counts}")
    j = int(np.flatnonzero(res.action == Act.DROP)[0]) if counts["drop"] else 0
    d = res.candidate(j)
    ctx.say(f"e.g. candidate {j}: {d.action} by {d.rule_ids[-1] if d.rule_ids else '-'}: {d.reasons[-1] if d.reasons else ''}")
