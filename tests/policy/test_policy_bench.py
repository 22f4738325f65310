"""The policy benchmark runs and reports its figures beside the reference evaluator."""

import math


def test_bench_quick_reports_figures_and_zero_disagreements(typed_bench):
    result = typed_bench("policy")
    figures = result["figures"]
    for key in ("vectorised_p99_ms", "speedup_vs_reference", "disagreements"):
        assert key in figures and math.isfinite(figures[key])
    assert figures["disagreements"] == 0
    # one batch in full, the C and the numpy evaluator each against the reference (2 x 25,000), and
    # 20 sampled candidates of each of the other 19 distinct batches (19 x 20 x 25)
    assert result["detail"]["outcomes_compared"] == 50_000 + 19 * 20 * 25
    assert result["detail"]["rules_in_c"] == 25
    assert result["baseline"]["numpy_evaluator_median_ms"] > 0 and result["met"]["disagreements"] is True
    assert figures["speedup_vs_reference"] > 1  # the ratio itself is a benchmark figure, not a test
