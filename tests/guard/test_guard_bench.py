"""Smoke test of `assay bench guard`: the quick run produces every figure, finite, and the
compiled and reference evaluators give identical slates. (Targets are checked by the full run,
never in a test.)"""

from __future__ import annotations

import math

import pytest

FIGURES = ("inprocess_p99_ms", "speedup_vs_reference", "http_p99_ms", "http_rps", "stream_batches_per_s")


@pytest.mark.redis
def test_quick_benchmark_reports_every_figure(monkeypatch, redis_url, typed_bench):
    monkeypatch.setenv("ASSAY_BENCH_REDIS_URL", redis_url)
    result = typed_bench("guard")
    result["counts"] = result["detail"]["counts"]
    for key in FIGURES:
        value = result["figures"][key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert result["detail"]["identical_slates"] is True
    assert result["detail"]["rules"] == 25 and result["detail"]["caps"] == 2 and result["detail"]["candidates"] == 1000
    assert result["detail"]["stream_slates_written"] == result["detail"]["stream_batches"]
    assert result["detail"]["http_detail"]["closed_loop"]["errors"] == 0  # authenticated requests, all answered
    # the trust figures are exact whatever the machine: no slate differs from the reference guard,
    # every traced decision is reproduced, the fuzzer finds nothing; and memory stays flat
    figures = result["figures"]
    assert figures["independent_slate_disagreements"] == 0 and result["counts"]["independent_requests"] > 0
    assert figures["explain_agreement"] == 1.0 and result["counts"]["explain_decisions"] >= 600
    assert figures["fuzz_crashes"] == 0 and figures["fuzz_disagreements"] == 0 and result["counts"]["fuzz_cases"] == 40
    assert math.isfinite(figures["rss_growth_mb_per_100k"])
