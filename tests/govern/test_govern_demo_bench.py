"""The demo step runs (twice: it must be re-runnable) and the benchmark's quick run has its figures."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from assay.govern.bom import validate_bom


def test_demo_step_is_rerunnable(assay_home, data_dir, models_dir):
    from assay.cli.demo import DemoContext
    from assay.config import settings
    from assay.govern import demo

    models_dir(settings().home / "govern" / "models")  # trained once per session

    for _ in range(2):
        console = Console(record=True, width=200)
        ctx = DemoContext(console=console, settings=settings(), quick=True)
        demo.step(ctx)  # stage 1: register, train, lineage verdict
        demo.deploy(ctx)  # stage 4: the denied deployment with its path, gates and approvals
        text = console.export_text()
        assert "that dataset allows only ['safety_classification']" in text
        assert "DENY by" in text and "lineage path" in text and "dataset:davidson-tweets@" in text
        assert "with approvals from alice and bob: ALLOW" in text
        assert ctx.state["govern"]["deployment"].startswith("deployment:movielens-ranker-for_you@")


def test_bench_quick_has_finite_figures(typed_bench):
    result = typed_bench("lineage")
    for key in ("propagation_s", "gate_check_ms"):
        assert math.isfinite(result["figures"][key]) and result["figures"][key] > 0
    assert result["detail"]["checks"]["vectorised_equals_naive_on_sample"] and result["detail"]["checks"]["naive_agrees"]
    assert result["baseline"]["naive_propagation_s"] > 0 and set(result["met"]) == {"propagation_s", "gate_check_ms"}


def test_bom_validator_rejects_a_broken_document():
    with pytest.raises(Exception, match="CycloneDX"):
        validate_bom({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                      "metadata": {"component": {"type": "machine-learning-model"}}})  # a component needs a name
