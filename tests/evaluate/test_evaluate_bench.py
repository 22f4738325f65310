"""Smoke test of ``assay bench eval``: the quick run produces finite figures."""

from __future__ import annotations

import math

import pytest

from assay.evaluate import bench


@pytest.mark.llm
@pytest.mark.slow  # starts its own llama.cpp server and sweeps it: minutes on a loaded 2-core box
def test_bench_eval_quick_figures_are_finite():
    result = bench.run(quick=True)
    assert set(result) >= {"figures", "baseline", "targets"}
    assert math.isfinite(result["figures"]["capacity_ratio"]) and result["figures"]["capacity_ratio"] > 0
    assert result["baseline"]["capacity_rps"] > 0
    if "garak_speedup" in result["figures"]:
        assert math.isfinite(result["figures"]["garak_speedup"])
