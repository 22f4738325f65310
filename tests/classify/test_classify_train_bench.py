"""``assay classify train`` reproduces a head from a tiny real slice (same seed, same version),
the benchmark's quick run reports its figures, and the demo step runs."""

from __future__ import annotations

import json
import math

import numpy as np

from assay.classify.model import load_head_classifier


def test_train_on_a_tiny_slice_is_reproducible(tmp_path):
    from assay.cli.main import main

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert main(["classify", "train", "refusal", "--limit", "24", "--out-dir", str(out_a)]) == 0
    assert main(["classify", "train", "refusal", "--limit", "24", "--out-dir", str(out_b)]) == 0
    a = json.loads((out_a / "refusal.metrics.json").read_text())
    b = json.loads((out_b / "refusal.metrics.json").read_text())
    assert a["version"] == b["version"]
    assert a["split"]["test"]["n"] > 0 and "refusal-prefix" in a["test"]
    clf = load_head_classifier("refusal", out_a)
    assert clf.version == a["version"]
    scores = clf.score(["I'm sorry, but I cannot help with that.", "Here is the recipe you asked for."])
    assert np.all((scores >= 0) & (scores <= 1))
    assert (out_a / "refusal.md").read_text().startswith("# Model card: `refusal`")
    from assay.runlog import read_runlog

    log = read_runlog(out_a / "refusal.runlog.jsonl")  # the training run's record, beside the head
    assert (log.kind, log.header.model.name) == ("classifier-training", a["version"])
    f1 = log.summary.metrics["f1"]
    assert f1.n == a["split"]["test"]["n"] and f1.value == a["test"]["model"]["f1"]["value"] and f1.method == "bootstrap"
    assert log.summary.metrics["recall"].n == a["split"]["test"]["positives"] and "f1[refusal-prefix]" in log.summary.metrics


def test_train_unknown_name_is_bad_input(tmp_path):
    from assay.cli.main import main

    assert main(["classify", "train", "sarcasm", "--out-dir", str(tmp_path)]) == 2


def test_bench_quick_reports_finite_figures(typed_bench):
    result = typed_bench("classify")
    figures = result["figures"]
    assert "min_texts_per_s_batch128" in figures
    for name in ("toxicity", "hate", "offensive", "harmful_response", "refusal", "prompt_injection"):
        for batch in (1, 128):
            value = figures[f"{name}_texts_per_s_batch{batch}"]
            assert math.isfinite(value) and value > 0
    assert math.isfinite(result["baseline"]["alt_profanity_check_texts_per_s_batch128"])
    assert result["targets"]["min_texts_per_s_batch128"] == {"op": ">=", "value": 300.0, "when": "every classifier, batch 128, this machine"}


def test_demo_step_runs_and_is_rerunnable():
    from rich.console import Console

    from assay.cli.demo import run_demo

    console = Console(record=True, width=160)
    ctx = run_demo(quick=True, only=["classify"], console=console)
    assert ctx.state["classify_label_store"].endswith(".parquet")
    first = console.export_text()
    assert "prompt_injection with normalisation" in first
    console2 = Console(record=True, width=160)
    run_demo(quick=True, only=["classify"], console=console2)
    assert "already labelled" in console2.export_text()
