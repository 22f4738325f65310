"""The policy benchmark runs and reports its figures beside the reference evaluator."""

import math

from assay.policy.bench import run


def test_bench_quick_reports_figures_and_zero_disagreements():
    result = run(quick=True)
    figures = result["figures"]
    for key in ("vectorised_p99_ms", "speedup_vs_reference", "disagreements"):
        assert key in figures and math.isfinite(figures[key])
    assert figures["disagreements"] == 0
    assert result["setup"]["outcomes_compared"] == 50_000  # the C and the numpy evaluator, each against the reference
    assert result["detail"]["rules_in_c"] == 25 and result["detail"]["c_evaluator_built"] is True
    assert result["detail"]["numpy_evaluator_median_ms"] > 0
    assert figures["speedup_vs_reference"] > 1  # the ratio itself is a benchmark figure, not a test
