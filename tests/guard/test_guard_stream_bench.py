"""``assay bench stream --quick``: the Kafka (local Tansu) and Redis Streams figures come from
slates that all arrived, once, with the producer running."""

from __future__ import annotations

import math

import pytest


@pytest.mark.redis
def test_bench_stream_quick_is_typed_and_complete(monkeypatch, redis_url, typed_bench):
    monkeypatch.setenv("ASSAY_BENCH_REDIS_URL", redis_url)
    out = typed_bench("stream")
    for key in ("kafka_batches_per_s", "kafka_e2e_p99_ms", "redis_batches_per_s", "redis_e2e_p99_ms"):
        assert math.isfinite(out["figures"][key]) and out["figures"][key] > 0, key
        assert out["units"][key]
    for transport in ("kafka", "redis"):
        assert out["detail"][transport]["duplicates"] == 0 and out["detail"][transport]["errors"] == 0
    assert out["baseline"]["inprocess_batches_per_s"] > 0
