"""Smoke test of ``assay bench mitigate``: the quick run yields every figure, finite. It loads
SmolLM2, generates before and after, trains two steps and needs the committed classifiers;
on this shared CPU that is minutes, so it is kept out of the default run."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_bench_quick_smoke(typed_bench):
    import math

    result = typed_bench("mitigate")
    for key in ("harmful_rate_before", "harmful_rate_after", "benign_helpful_before", "benign_helpful_after", "train_step_s"):
        assert math.isfinite(result["figures"][key]), key
    assert set(result["met"]) == {"harmful_rate_reduction_low", "benign_helpful_drop_high"}
    assert set(result["detail"]["gates"]) == {"mitigation-harmful-rate-falls", "mitigation-benign-helpful-holds"}
