"""The policy benchmark runs and reports its figures beside the reference evaluator."""

import math

from assay.policy.bench import run


def test_bench_quick_reports_figures_and_zero_disagreements():
    result = run(quick=True)
    figures = result["figures"]
    for key in ("vectorised_p99_ms", "speedup_vs_reference", "disagreements"):
        assert key in figures and math.isfinite(figures[key])
    assert figures["disagreements"] == 0
    assert result["setup"]["outcomes_compared"] == 25_000
    assert figures["speedup_vs_reference"] > 1  # the ratio itself is a benchmark figure, not a test
