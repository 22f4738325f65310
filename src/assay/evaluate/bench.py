"""``assay bench eval``: the engine's throughput against the server's capacity, side by side.

One llama.cpp server on the bundled SmolLM2 serves a fixed set of 200 prompts (the first 200
TruthfulQA questions: benign, public, fixed). In the same run:

1. a plain concurrent load generator (httpx + a fixed-size semaphore, no retries, no scoring)
   is swept over concurrency levels; its best requests/second is the server's capacity;
2. the evaluation engine runs the same prompts as a suite (adaptive concurrency, retries,
   streaming to disk, refusal scoring, no cache) and its items/second is measured;
3. when garak is installed in a separate virtual environment (``ASSAY_GARAK_PYTHON`` or
   ``/tmp/garak-venv``), garak sends the same prompts to the same server and is timed.

Capacity and engine runs alternate (repeated in the full run) and medians are reported, so
load from other processes hits both alike. ``capacity_ratio`` = engine / capacity (target
>= 0.9); ``garak_speedup`` = engine items/s / garak prompts/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

N_PROMPTS = 200
MAX_TOKENS = 8


def fixed_prompts(n: int) -> list[str]:
    from assay.data import truthfulqa

    questions = [q.question for q in truthfulqa.load_mc("mc1")]
    return [f"Answer briefly: {q}" for q in questions[:n]]


async def _load_generator(base_url: str, prompts: list[str], concurrency: int) -> float:
    """Requests per second of a plain fixed-concurrency client (every request must succeed)."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 2)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(prompt: str) -> None:
            async with sem:
                r = await client.post(
                    f"{base_url}/chat/completions",
                    json={"model": "smollm2", "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "temperature": 0},
                )
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return len(prompts) / (time.perf_counter() - started)


def _engine_rate(base_url: str, prompts: list[str], workdir: Path, tag: str) -> tuple[float, dict[str, Any]]:
    from assay.evaluate.engine import run_suite
    from assay.evaluate.suite import parse_suite

    data = workdir / f"prompts-{tag}.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    spec = {
        "suite": f"bench-{tag}",
        "dataset": {"path": str(data)},
        "target": {"kind": "openai", "base_url": base_url, "model": "smollm2", "params": {"max_tokens": MAX_TOKENS, "temperature": 0},
                   "initial_concurrency": 4, "max_concurrency": 32},
        "scorers": ["refusal"],
        "metrics": [{"name": "refusal_rate", "mean": "refused"}],
        "run": {"cache": False, "resamples": 200},
    }  # fmt: skip
    suite = parse_suite(json.dumps(spec), "bench.yaml", workdir)
    outcome = run_suite(suite, use_cache=False)
    if outcome.report["counts"]["ok"] != len(prompts):
        raise RuntimeError(f"engine bench run had errors: {outcome.report['counts']}")
    return len(prompts) / outcome.stats["wall_s"], outcome.stats


GARAK_PROBE = '''
"""assay bench: a fixed list of prompts, nothing else."""
import json
import os

from garak.probes.base import Probe


class FixedPrompts(Probe):
    """Sends the prompts listed in ASSAY_BENCH_PROMPTS (a JSON file), once each."""

    bcp47 = "*"
    lang = "*"
    active = False
    goal = "benchmark throughput"
    doc_uri = ""
    tags = []
    primary_detector = "always.Pass"
    recommended_detector = ["always.Pass"]
    prompts = json.load(open(os.environ["ASSAY_BENCH_PROMPTS"])) if "ASSAY_BENCH_PROMPTS" in os.environ else []
'''


def _garak_python() -> str | None:
    candidates = [os.environ.get("ASSAY_GARAK_PYTHON"), "/tmp/garak-venv/bin/python"]
    for c in candidates:
        if c and Path(c).is_file():
            ok = subprocess.run([c, "-c", "import garak"], capture_output=True, timeout=120)
            if ok.returncode == 0:
                return c
    return None


def _garak_once(python: str, base_url: str, prompts: list[str], workdir: Path, parallel: int, tag: str) -> tuple[float | None, str]:
    prompts_file = workdir / f"garak_prompts_{tag}.json"
    prompts_file.write_text(json.dumps(prompts))
    options = {
        "openai": {
            "OpenAICompatible": {
                "uri": base_url,
                "model": "smollm2",
                "api_key": "none",
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "suppressed_params": ["n", "frequency_penalty", "presence_penalty", "stop"],
            }
        }
    }
    opts_file = workdir / "garak_options.json"
    opts_file.write_text(json.dumps(options))
    env = dict(os.environ, ASSAY_BENCH_PROMPTS=str(prompts_file), OPENAICOMPATIBLE_API_KEY="none", HF_HUB_OFFLINE="1")
    cmd = [
        python, "-m", "garak", "--model_type", "openai.OpenAICompatible", "--model_name", "smollm2",
        "--generator_option_file", str(opts_file), "--probes", "assaybench.FixedPrompts",
        "--detectors", "always.Pass", "--generations", "1", "--parallel_attempts", str(parallel),
        "--report_prefix", f"garak_{tag}",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=workdir)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout)[-800:]
    return elapsed, ""


def _garak_rate(python: str, base_url: str, prompts: list[str], workdir: Path, parallel: int) -> tuple[float | None, str]:
    """garak's prompts/second on the same server: a run with all prompts minus a run with one
    prompt, so garak's own start-up (imports, plugin loading) is not charged to it."""
    site = subprocess.run([python, "-c", "import garak, os; print(os.path.dirname(garak.__file__))"], capture_output=True, text=True, timeout=300)
    (Path(site.stdout.strip()) / "probes" / "assaybench.py").write_text(GARAK_PROBE)
    one, err = _garak_once(python, base_url, prompts[:1], workdir, parallel, "one")
    if one is None:
        return None, err
    full, err = _garak_once(python, base_url, prompts, workdir, parallel, "all")
    if full is None:
        return None, err
    return (len(prompts) - 1) / max(full - one, 1e-9), ""


def run(quick: bool = False) -> dict[str, Any]:
    from assay.evaluate.serve import ModelServer

    n = 10 if quick else N_PROMPTS
    prompts = fixed_prompts(n)
    levels = [2, 4] if quick else [1, 2, 4, 8]
    repeats = 1 if quick else int(os.environ.get("ASSAY_BENCH_EVAL_REPEATS", "2"))
    old_home = os.environ.get("ASSAY_HOME")
    with tempfile.TemporaryDirectory(prefix="assay-bench-eval-") as tmp, ModelServer("smollm2", n_ctx=1024) as server:
        workdir = Path(tmp)
        os.environ["ASSAY_HOME"] = str(workdir / "home")
        try:
            # warm the server (first requests load caches)
            asyncio.run(_load_generator(server.base_url, prompts[:2], 1))
            sweep_prompts = prompts[: max(6, n // 5)]
            sweep = {c: asyncio.run(_load_generator(server.base_url, sweep_prompts, c)) for c in levels}
            best = max(sweep, key=sweep.get)
            capacity, engine, stats = [], [], {}
            for r in range(repeats):
                capacity.append(asyncio.run(_load_generator(server.base_url, prompts, best)))
                rate, stats = _engine_rate(server.base_url, prompts, workdir, f"r{r}")
                engine.append(rate)
            capacity_rps = statistics.median(capacity)
            engine_rps = statistics.median(engine)
            figures: dict[str, Any] = {"capacity_ratio": round(engine_rps / capacity_rps, 4)}
            baseline: dict[str, Any] = {
                "capacity_rps": round(capacity_rps, 3),
                "best_concurrency": best,
                "concurrency_sweep_rps": {str(k): round(v, 3) for k, v in sweep.items()},
                "capacity_runs_rps": [round(x, 3) for x in capacity],
            }
            extra: dict[str, Any] = {
                "engine_rps": round(engine_rps, 3),
                "engine_runs_rps": [round(x, 3) for x in engine],
                "engine_peak_concurrency": stats.get("peak_concurrency"),
                "prompts": n,
                "max_tokens": MAX_TOKENS,
            }
            garak = _garak_python()
            if garak is None:
                extra["garak"] = "not installed (set ASSAY_GARAK_PYTHON to a venv with garak)"
            else:
                garak_rps, err = _garak_rate(garak, server.base_url, prompts, workdir, parallel=max(best, 1))
                if garak_rps is None:
                    extra["garak"] = f"failed: {err}"
                else:
                    baseline["garak_rps"] = round(garak_rps, 3)
                    figures["garak_speedup"] = round(engine_rps / garak_rps, 4)
        finally:
            if old_home is None:
                os.environ.pop("ASSAY_HOME", None)
            else:
                os.environ["ASSAY_HOME"] = old_home
    return {"figures": figures, "baseline": baseline, "targets": {"capacity_ratio": ">= 0.9", "garak_speedup": "> 1 (reported)"}, "details": extra}
