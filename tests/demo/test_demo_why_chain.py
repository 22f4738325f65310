"""The demo's own data answers "which model, trained on which data?" (issue 27, item 3).

Stage 2 at a small scale (train the reference recommender on a few users, derive its safety
labels, register data -> model), stage 5 as the demo runs it (the replay through the guard:
surge, outage, fallback, recovery), stage 6's trace; then ``assay trace why`` for decisions
sampled across every phase must reach decision -> registered model version -> training dataset.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace

from rich.console import Console

from assay.cli.demo import DemoContext, replay
from assay.cli.main import main
from assay.config import settings


def test_every_sampled_replay_decision_reaches_the_training_data(capsys) -> None:
    from assay.recsys.governance import DATASET_NAME, register
    from assay.recsys.labels import safety_labels, write_labels
    from assay.recsys.pipeline import load_dataset, quick_config, train_and_save
    from assay.trace import TraceLog
    from assay.trace.demo import _guard_records

    rec, _split, folder = train_and_save(
        "ml-latest-small", users=40, config=replace(quick_config(), rounds=15, factors=16, als_iterations=4))
    write_labels(safety_labels(load_dataset("ml-latest-small")), settings().path("labels", "movielens.parquet"))
    ids = register(rec, folder)
    assert ids["model"].startswith("model:") and ids["dataset"].startswith(f"dataset:{DATASET_NAME}@")

    ctx = DemoContext(console=Console(file=io.StringIO(), width=200), settings=settings(), quick=True,
                      planned=("assay.cli.demo:replay",))
    ctx.current = "assay.cli.demo:replay"
    replay(ctx)
    records = _guard_records(ctx.settings.home / "guard" / "replay-decisions.jsonl", 10**6)
    decisions = [r for r in records if hasattr(r, "action")]
    root = ctx.settings.home / "trace"
    with TraceLog.open(root) as log:
        log.append(records)

    phases = {}
    for d in decisions:  # the first and last decision of every phase (calm, surge, outage, recovered)
        phase = d.request_id.split("-", 1)[0]
        phases.setdefault(phase, []).append(d)
    sampled = [d for group in phases.values() for d in (group[0], group[len(group) // 2], group[-1])]
    assert set(phases) >= {"calm", "surge", "outage", "recovered"}, set(phases)
    capsys.readouterr()
    for d in sampled:
        assert main(["trace", "why", "--item", d.item_id, "--subject", d.subject_id, "--at", str(d.ts),
                     "--path", str(root), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["request_id"] == d.request_id or answer["ts"] <= d.ts
        assert answer["models"], f"decision {d.request_id} records no model version"
        for model in answer["models"]:
            assert model["version"] == rec.version
            assert model["missing"] is None, model["missing"]
            assert model["model"] == ids["model"]
            assert model["training_data"] == [ids["dataset"]]
        assert main(["trace", "why", "--item", d.item_id, "--subject", d.subject_id, "--at", str(d.ts),
                     "--path", str(root)]) == 0
        text = capsys.readouterr().out
        assert f"= {ids['model']}, trained on {ids['dataset']}" in text and "incomplete" not in text, text
