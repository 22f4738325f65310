"""``assay bench eval``: the evaluation engine against a server of known capacity, beside Inspect
AI on the same prompts and server, and beside a plain client; then the bundled llama.cpp server.

**Known capacity.** :mod:`assay.evaluate.capacity_server` runs in its own process with 64
parallel slots (16 in ``--quick``) and a log-normal service time per request (median 1 s, sigma
0.3: a short LLM generation; 100 ms in ``--quick``), fixed by the prompt. The best any client can do on the prompt list is computed from
those service times (every request queued at once, first-come-first-served, tail included):
``ideal_items_per_s``. The prompts are the TruthfulQA questions (public, benign), repeated with a
variant number up to 2,000 (400 in ``--quick``).

In the same run, after an untimed warm-up of each client on a few prompts, alternating (two
rounds; one in ``--quick``), each on the same prompts:

- **assay** runs them as a suite (``run_suite``, asyncio engine), configured as a user who knows
  the server's slot count would (``initial_concurrency`` = the slots, ``max_concurrency`` = twice
  the slots; Inspect gets the same window from the start): per item an HTTP call (aiohttp) through
  the AIMD limiter with retries, the refusal
  scorer, one line appended to ``results.jsonl``, and at the end the run log (every item, the
  metrics with their intervals) and report.html. ``capacity_ratio`` = assay items/s ÷ ``ideal_items_per_s`` (target >= 0.95);
  ``engine_cpu_ms_per_item`` = the bench process's CPU time during the run ÷ items (the server
  is another process).
- **Inspect AI** (``inspect_ai.eval``) runs a task with the same prompts as samples: per sample
  its ``openai-api`` provider (the OpenAI SDK) with the same number of connections,
  ``generate()``, an ``includes("sorry")`` scorer (the same string check as a refusal), and its
  eval log (``.eval`` file, samples included). ``vs_inspect`` = assay items/s ÷ Inspect samples/s
  (target >= 1.0); ``inspect_cpu_ms_per_item`` beside it. The answers of both are compared item by
  item (``same_answers``).
- **a plain client** (aiohttp, a fixed window of twice the slots, no retries, no scoring, nothing
  written): ``loadgen_items_per_s``, what a bare Python client reaches on this machine.

**llama.cpp** (full run only): the bundled SmolLM2 on llama.cpp, which serves one request at a
time on this CPU, 40 TruthfulQA prompts with ``max_tokens`` 8: ``llamacpp_engine_items_per_s``
beside the best plain-client rate over concurrency 1/2/4/8 (``llamacpp_loadgen_best_rps``). It
says how the engine does on a real model server whose capacity is not known in advance; it is
not ``capacity_ratio``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from assay.evaluate.capacity_server import answer, ideal_rate
from assay.evaluate.serve import free_port
from assay.records import BenchResult, at_least

SLOTS, MEDIAN_MS, SIGMA, N_PROMPTS = 64, 1000.0, 0.3, 2000
QUICK = {"slots": 16, "median_ms": 100.0, "sigma": 0.3, "n": 400}
LLAMA_PROMPTS, LLAMA_MAX_TOKENS = 40, 8


def fixed_prompts(n: int) -> list[str]:
    """The TruthfulQA questions, then the same questions with a variant number, up to ``n``."""
    from assay.data import truthfulqa

    questions = [q.question for q in truthfulqa.load_mc("mc1")]
    return [f"Answer briefly: {questions[i % len(questions)]}" + (f" (variant {i // len(questions)})" if i >= len(questions) else "")
            for i in range(n)]


class CapacityServer:
    """The capacity server in its own process, for the length of a ``with`` block."""

    def __init__(self, slots: int, median_ms: float, sigma: float):
        self.slots, self.median_ms, self.sigma = slots, median_ms, sigma
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> CapacityServer:
        import httpx

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assay.evaluate.capacity_server", "--port", str(self.port), "--slots", str(self.slots),
             "--median-ms", str(self.median_ms), "--sigma", str(self.sigma)], stdin=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the capacity server did not start")
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


async def _load_generator(base_url: str, prompts: list[str], concurrency: int, max_tokens: int | None = None,
                          model: str = "bench") -> float:
    """Requests per second of a plain fixed-window client (aiohttp, as the engine; every request
    must succeed; no retries, no scoring, nothing written)."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    params = {"max_tokens": max_tokens, "temperature": 0} if max_tokens else {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 2),
                                     timeout=aiohttp.ClientTimeout(total=300)) as client:

        async def one(prompt: str) -> None:
            async with sem:
                body = {"model": model, "messages": [{"role": "user", "content": prompt}], **params}
                async with client.post(f"{base_url}/chat/completions", json=body) as r:
                    r.raise_for_status()
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        return len(prompts) / (time.perf_counter() - started)


def _engine_run(base_url: str, prompts: list[str], workdir: Path, tag: str, *, model: str = "bench", initial_concurrency: int = 8,
                max_concurrency: int, params: dict[str, Any] | None = None, engine: str = "local") -> dict[str, Any]:
    """One suite run; items/s over the whole ``run_suite`` call (report included) and its CPU."""
    from assay.evaluate.engine import read_results, run_suite
    from assay.evaluate.suite import parse_suite

    data = workdir / f"prompts-{tag}.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    spec = {
        "suite": f"bench-{tag}",
        "dataset": {"path": str(data)},
        "target": {"kind": "openai", "base_url": base_url, "model": model, "params": params or {},
                   "initial_concurrency": min(initial_concurrency, max_concurrency), "max_concurrency": max_concurrency},
        "scorers": ["refusal"],
        "metrics": [{"name": "refusal_rate", "mean": "refused"}],
        "run": {"cache": False, "resamples": 200},
    }  # fmt: skip
    suite = parse_suite(json.dumps(spec), "bench.yaml", workdir)
    cpu, wall = time.process_time(), time.perf_counter()
    outcome = run_suite(suite, use_cache=False, engine=engine)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if outcome.report["counts"]["ok"] != len(prompts):
        raise RuntimeError(f"engine bench run had errors: {outcome.report['counts']}")
    texts = {r["id"]: r["output"]["text"] for r in read_results(outcome.path / "results.jsonl")}
    return {"items_per_s": len(prompts) / wall, "cpu_s": cpu, "wall_s": wall, "texts": texts,
            "peak_concurrency": outcome.stats.get("peak_concurrency")}


def _inspect_run(base_url: str, prompts: list[str], workdir: Path, tag: str, connections: int) -> dict[str, Any]:
    """The same prompts as an Inspect AI task on the same server; samples/s over the ``eval`` call."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    os.environ.setdefault("BENCH_API_KEY", "none")  # the openai-api provider named "bench" reads BENCH_API_KEY
    task = Task(dataset=[Sample(input=p, target="sorry", id=f"q{i}") for i, p in enumerate(prompts)],
                solver=generate(), scorer=includes(), name=f"bench-{tag}")
    cpu, wall = time.process_time(), time.perf_counter()
    (log,) = inspect_eval(task, model="openai-api/bench/bench", model_base_url=base_url, max_connections=connections,
                          max_samples=connections, log_dir=str(workdir / f"inspect-{tag}"), display="none",
                          max_retries=4, timeout=120)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if log.status != "success" or not log.samples or len(log.samples) != len(prompts):
        raise RuntimeError(f"Inspect run did not succeed: {log.status} {log.error}")
    texts = {str(s.id): s.output.completion for s in log.samples}
    return {"items_per_s": len(prompts) / wall, "cpu_s": cpu, "wall_s": wall, "texts": texts}


def compare_on_capacity_server(n: int, slots: int, median_ms: float, sigma: float, rounds: int, workdir: Path) -> dict[str, Any]:
    """assay, Inspect AI and a plain client on one capacity server, alternating ``rounds`` times."""
    prompts = fixed_prompts(n)
    ideal = ideal_rate(prompts, slots, median_ms, sigma)
    window = 2 * slots  # twice the slots keeps a queue at the server, so no slot idles between requests
    engine, inspect, loadgen = [], [], []
    with CapacityServer(slots, median_ms, sigma) as server:
        # warm the server and both clients (imports, first connections) on a few prompts, untimed
        asyncio.run(_load_generator(server.base_url, prompts[: 2 * slots], window))
        _engine_run(server.base_url, prompts[: 2 * slots], workdir, "warm-engine", initial_concurrency=slots, max_concurrency=window)
        _inspect_run(server.base_url, prompts[: 2 * slots], workdir, "warm-inspect", window)
        for r in range(rounds):
            engine.append(_engine_run(server.base_url, prompts, workdir, f"engine-{r}", initial_concurrency=slots, max_concurrency=window))
            inspect.append(_inspect_run(server.base_url, prompts, workdir, f"inspect-{r}", window))
            loadgen.append(asyncio.run(_load_generator(server.base_url, prompts, window)))
    expected = {f"q{i}": answer(p) for i, p in enumerate(prompts)}
    same = all(run["texts"] == expected for run in (*engine, *inspect))
    median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    return {
        "ideal": ideal, "prompts": n, "slots": slots, "window": window, "same_answers": same,
        "engine_items_per_s": median(engine, "items_per_s"), "inspect_items_per_s": median(inspect, "items_per_s"),
        "loadgen_items_per_s": statistics.median(loadgen),
        "engine_cpu_ms_per_item": 1000 * median(engine, "cpu_s") / n, "inspect_cpu_ms_per_item": 1000 * median(inspect, "cpu_s") / n,
        "engine_runs": [round(r["items_per_s"], 2) for r in engine], "inspect_runs": [round(r["items_per_s"], 2) for r in inspect],
        "loadgen_runs": [round(x, 2) for x in loadgen], "engine_peak_concurrency": engine[-1]["peak_concurrency"],
    }


def llamacpp_figures(workdir: Path) -> dict[str, Any]:
    """The engine and a plain client on the bundled SmolLM2 served by llama.cpp."""
    from assay.evaluate.serve import ModelServer

    prompts = fixed_prompts(LLAMA_PROMPTS)
    params = {"max_tokens": LLAMA_MAX_TOKENS, "temperature": 0}
    with ModelServer("smollm2", n_ctx=1024) as server:
        asyncio.run(_load_generator(server.base_url, prompts[:2], 1, LLAMA_MAX_TOKENS, "smollm2"))  # warm
        sweep = {c: asyncio.run(_load_generator(server.base_url, prompts[:8], c, LLAMA_MAX_TOKENS, "smollm2")) for c in (1, 2, 4, 8)}
        best = max(sweep, key=sweep.get)
        loadgen = asyncio.run(_load_generator(server.base_url, prompts, best, LLAMA_MAX_TOKENS, "smollm2"))
        run = _engine_run(server.base_url, prompts, workdir, "llamacpp", model="smollm2", max_concurrency=32, params=params)
    return {"llamacpp_engine_items_per_s": run["items_per_s"], "llamacpp_loadgen_best_rps": loadgen,
            "llamacpp_best_concurrency": best, "llamacpp_sweep_rps": {str(k): round(v, 3) for k, v in sweep.items()}}


def run(quick: bool = False) -> BenchResult:
    cfg = QUICK if quick else {"slots": SLOTS, "median_ms": MEDIAN_MS, "sigma": SIGMA, "n": N_PROMPTS}
    old_home = os.environ.get("ASSAY_HOME")
    with tempfile.TemporaryDirectory(prefix="assay-bench-eval-") as tmp:
        workdir = Path(tmp)
        os.environ["ASSAY_HOME"] = str(workdir / "home")
        try:
            cap = compare_on_capacity_server(cfg["n"], cfg["slots"], cfg["median_ms"], cfg["sigma"], 1 if quick else 2, workdir)
            llama = {} if quick else llamacpp_figures(workdir)
        finally:
            if old_home is None:
                os.environ.pop("ASSAY_HOME", None)
            else:
                os.environ["ASSAY_HOME"] = old_home
    ideal = cap["ideal"]["ideal_items_per_s"]
    figures: dict[str, float | None] = {
        "capacity_ratio": round(cap["engine_items_per_s"] / ideal, 4),
        "vs_inspect": round(cap["engine_items_per_s"] / cap["inspect_items_per_s"], 3),
        "engine_items_per_s": round(cap["engine_items_per_s"], 2),
        "engine_cpu_ms_per_item": round(cap["engine_cpu_ms_per_item"], 3),
    }
    baseline: dict[str, float | None] = {
        "ideal_items_per_s": round(ideal, 2),
        "inspect_items_per_s": round(cap["inspect_items_per_s"], 2),
        "inspect_cpu_ms_per_item": round(cap["inspect_cpu_ms_per_item"], 3),
        "loadgen_items_per_s": round(cap["loadgen_items_per_s"], 2),
    }
    units = {"capacity_ratio": "x", "vs_inspect": "x", "engine_items_per_s": "items/s", "engine_cpu_ms_per_item": "ms CPU",
             "ideal_items_per_s": "items/s", "inspect_items_per_s": "items/s", "inspect_cpu_ms_per_item": "ms CPU",
             "loadgen_items_per_s": "items/s"}
    if llama:
        figures["llamacpp_engine_items_per_s"] = round(llama["llamacpp_engine_items_per_s"], 3)
        figures["llamacpp_engine_vs_loadgen"] = round(llama["llamacpp_engine_items_per_s"] / llama["llamacpp_loadgen_best_rps"], 3)
        baseline["llamacpp_loadgen_best_rps"] = round(llama["llamacpp_loadgen_best_rps"], 3)
        units.update(llamacpp_engine_items_per_s="items/s", llamacpp_engine_vs_loadgen="x", llamacpp_loadgen_best_rps="requests/s")
    return BenchResult(
        figures=figures, baseline=baseline, units=units,
        targets={"capacity_ratio": at_least(0.95, when=f"{cfg['slots']} slots"), "vs_inspect": at_least(1.0)},
        measures={
            "capacity_ratio": "assay suite items/s (whole run_suite: calls, refusal scoring, results file, report) ÷ the "
                              "computed best rate of the capacity server on the same prompts",
            "vs_inspect": "assay items/s ÷ Inspect AI samples/s (generate + includes scorer + eval log), same prompts and server",
            "engine_cpu_ms_per_item": "CPU time of the bench process during the assay run ÷ items (the server is another process)",
            "llamacpp_engine_vs_loadgen": "assay items/s ÷ the best plain-client rate on the llama.cpp SmolLM2 server "
                                          "(a server of unknown capacity that serves one request at a time here)",
        },
        detail={"prompts": cap["prompts"], "slots": cap["slots"], "client_window": cap["window"],
                "service_time": {"distribution": "lognormal", "median_ms": cfg["median_ms"], "sigma": cfg["sigma"],
                                 "mean_ms": round(cap["ideal"]["mean_service_ms"], 2)},
                "steady_state_rps": round(cap["ideal"]["steady_state_rps"], 2), "ideal_makespan_s": round(cap["ideal"]["makespan_s"], 3),
                "same_answers": cap["same_answers"], "engine_runs_items_per_s": cap["engine_runs"],
                "inspect_runs_items_per_s": cap["inspect_runs"], "loadgen_runs_items_per_s": cap["loadgen_runs"],
                "engine_peak_concurrency": cap["engine_peak_concurrency"],
                **({k: v for k, v in llama.items() if k in ("llamacpp_best_concurrency", "llamacpp_sweep_rps")}),
                "llamacpp": "full run only" if quick else {"prompts": LLAMA_PROMPTS, "max_tokens": LLAMA_MAX_TOKENS},
                "load_average_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
    )
