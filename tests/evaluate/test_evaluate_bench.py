"""``assay bench eval`` on a small capacity server: assay, Inspect AI and a plain client get the
same answers to the same prompts, the figures are finite, and the server's capacity is what it
is built to be (a plain client cannot beat the computed ideal)."""

from __future__ import annotations

import asyncio
import math

import pytest

from assay.evaluate import bench
from assay.evaluate.capacity_server import answer, ideal_rate


def test_the_ideal_rate_is_the_fifo_schedule_of_the_service_times():
    prompts = [f"p{i}" for i in range(64)]
    one_slot = ideal_rate(prompts, 1, 100.0, 0.0)  # sigma 0: every request takes the median
    assert one_slot["makespan_s"] == pytest.approx(6.4) and one_slot["ideal_items_per_s"] == pytest.approx(10.0)
    assert ideal_rate(prompts, 64, 100.0, 0.0)["ideal_items_per_s"] == pytest.approx(640.0)
    spread = ideal_rate(prompts, 8, 100.0, 0.5)
    assert spread["ideal_items_per_s"] <= spread["steady_state_rps"]  # the tail costs something


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inspect-ai's own use of tenacity
def test_assay_and_inspect_on_the_same_capacity_server(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSAY_HOME", str(tmp_path / "home"))
    out = bench.compare_on_capacity_server(120, 8, 40.0, 0.3, 1, tmp_path)
    assert out["same_answers"] is True  # both got exactly the server's answer for every prompt
    for key in ("engine_items_per_s", "inspect_items_per_s", "loadgen_items_per_s", "engine_cpu_ms_per_item"):
        assert math.isfinite(out[key]) and out[key] > 0
    assert out["loadgen_items_per_s"] <= out["ideal"]["ideal_items_per_s"] * 1.02  # capacity is a real ceiling


def test_the_server_answers_what_it_promises():
    with bench.CapacityServer(2, 10.0, 0.0) as server:
        rate = asyncio.run(bench._load_generator(server.base_url, ["a", "b", "c", "d"], 4))
    assert rate > 0 and answer("a") == answer("a") and answer("a") != answer("b")


def test_hostile_requests_are_4xx_not_500():
    """A probe: JSON nested 100,000 deep (RecursionError) and a lone surrogate in the prompt
    (UnicodeEncodeError when hashed) were 500s, and the body was read without a bound."""
    import httpx

    from assay.evaluate.capacity_server import MAX_BODY_BYTES, build_app

    async def probe() -> list[int]:
        transport = httpx.ASGITransport(app=build_app(2, 1.0, 0.0), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            bodies = [b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b'{"messages": [{"content": "\\ud800"}]}',
                      b" " * (MAX_BODY_BYTES + 1), b'{"messages": [{"content": "hello"}]}']
            return [(await client.post("/v1/chat/completions", content=b)).status_code for b in bodies]

    assert asyncio.run(probe()) == [400, 400, 413, 200]


@pytest.mark.llm
@pytest.mark.slow  # starts llama.cpp and Inspect, 2 x 2,000 prompts on a 64-slot server: minutes
def test_bench_eval_full_result_is_typed():
    result = bench.run(quick=False).to_dict()
    assert result["detail"]["same_answers"] is True
    assert set(result["met"]) == {"capacity_ratio", "vs_inspect"}
    assert result["units"]["capacity_ratio"] == "x" and result["figures"]["llamacpp_engine_items_per_s"] > 0
