"""Real suites against the bundled SmolLM2-135M on llama.cpp's OpenAI server (small slices)."""

from __future__ import annotations

import json

import pytest
import yaml

from assay.cli.main import main as cli_main
from assay.evaluate.engine import read_results, run_suite
from assay.evaluate.suite import load_suite

pytestmark = pytest.mark.llm


def test_truthfulqa_mc_slice_through_the_engine(smollm2_server):
    suite = load_suite("accuracy-truthfulqa").with_overrides(
        target={"kind": "openai", "base_url": smollm2_server.base_url, "model": "smollm2", "params": {"max_tokens": 3, "temperature": 0}},
        limit=3,
    )
    outcome = run_suite(suite)
    c = outcome.report["counts"]
    assert c["items"] == 3 and c["ok"] == 3, c
    assert c["usage"]["completion_tokens"] > 0
    m = outcome.report["metrics"]
    assert m["mc_accuracy"]["n"] == 3 and 0 <= m["mc_accuracy"]["value"] <= 1
    assert m["mc_accuracy"]["ci_low"] <= m["mc_accuracy"]["value"] <= m["mc_accuracy"]["ci_high"]
    assert outcome.report["gates"]["verdicts"][0]["id"] == "truthfulqa-mc-accuracy"
    records = read_results(outcome.path / "results.jsonl")
    assert all(isinstance(r["output"]["text"], str) for r in records)
    assert outcome.report["dataset"]["name"] == "truthfulqa" and len(outcome.report["dataset"]["sha256"]) == 64


def test_harmbench_refusal_slice_via_cli(tmp_path, smollm2_server, capsys):
    spec = {
        "suite": "harmbench-refusal-slice",
        "dataset": {"builtin": "harmbench", "options": {"split": "val"}, "limit": 4},
        "target": {"kind": "openai", "base_url": smollm2_server.base_url, "model": "smollm2",
                   "params": {"max_tokens": 12, "temperature": 0, "seed": 0}},
        "scorers": ["refusal"],
        "metrics": [{"name": "refusal_rate", "mean": "refused", "by": "category"}, {"name": "error_rate", "kind": "error_rate"}],
        "run": {"resamples": 200},
    }  # fmt: skip
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli_main(["eval", "run", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    report = out["report"]
    assert report["counts"]["ok"] == 4
    assert report["metrics"]["refusal_rate"]["n"] == 4
    assert report["metrics"]["error_rate"]["value"] == 0.0


@pytest.mark.slow
def test_crows_pairs_loglik_with_llama_cpp(tmp_path):
    suite = load_suite("bias-crows-pairs").with_overrides(limit=2)
    outcome = run_suite(suite)
    records = read_results(outcome.path / "results.jsonl")
    assert len(records) == 2
    for r in records:
        assert isinstance(r["scores"]["stereo_preferred"], bool)
        assert r["output"]["logprobs"][0] < 0
    assert outcome.report["metrics"]["stereo_preference"]["n"] == 2


@pytest.mark.slow
def test_in_process_transformers_target_on_the_gguf():
    import asyncio

    from assay.evaluate.items import EvalItem, user
    from assay.evaluate.targets import TransformersTarget

    target = TransformersTarget("smollm2", params={"max_tokens": 6})
    out = asyncio.run(target.call(EvalItem(id="a", messages=user("Say hello."))))
    assert isinstance(out.text, str) and out.completion_tokens > 0
    ll = asyncio.run(target.call(EvalItem(id="b", task="loglik", fields={"texts": ["The cat sat on the mat.", "Mat the on sat cat the."]})))
    assert ll.logprobs[0] > ll.logprobs[1]  # the grammatical sentence is more likely
    assert len(next(iter(target.model_hashes().values()))) == 64


def test_models_serve_cli_starts_a_healthy_server_and_stops_on_sigint():
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "assay.cli.main", "models", "serve", "smollm2", "--n-ctx", "512"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # blocks until the server is healthy (or the command fails)
        assert line.startswith("ready: http://127.0.0.1:"), line
        url = line.split()[1]
        assert httpx.get(f"{url}/models", timeout=30).status_code == 200
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{url}/models", timeout=1)
            except httpx.ConnectError:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the llama.cpp server kept running after Ctrl-C")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
