"""``assay bench guard``: the guard in process, over HTTP, and as a Redis Streams worker.

- in process: 1,000 candidates x the example feed bundle (25 rules, 2 of them caps) per request,
  median and p99 on one core, beside the same requests decided with the reference CEL evaluator
  (one candidate at a time) in the same run; the slates must be identical. The candidates are
  numpy columns with the two list features as Arrow list arrays (columnar input); the same
  requests with the lists as rows of Python lists are timed in a second pass
  (``inprocess_python_list_rows_*``);
- HTTP: ``assay guard serve`` in its own process, 200 candidates per request from an asyncio
  load generator in a second process over loopback: the most requests/s at a fixed concurrency
  (closed loop), and p50/p99 at an offered 1,000 requests/s (open loop, latency measured from
  each request's scheduled send time so a slow server cannot hide its queueing);
- stream worker: batches of 200 candidates per second through Redis Streams, end to end (XADD by
  a producer, XREADGROUP, decide, slate XADD + XACK in one transaction), the backlog written
  before the worker drains it (produce-to-decision with the producer running is ``assay bench
  stream``);
- trust: whole slates against the reference guard, traced decisions explained again, the
  differential fuzzer, and resident memory over many requests.

Figures (``BenchResult``): ``inprocess_median_ms``, ``inprocess_p99_ms`` (ms, target <= 1),
``speedup_vs_reference`` (x, target >= 100), ``http_p99_ms`` (ms, target <= 10 at 1,000
requests/s offered), ``http_rps`` (requests/s, target >= 1,000), ``stream_batches_per_s``,
``independent_slate_disagreements`` (target <= 0), ``explain_agreement`` (share, target >= 1.0),
``fuzz_crashes`` and ``fuzz_disagreements`` (cases, target <= 0) and ``rss_growth_mb_per_100k``
(MB, target <= 5). Baseline: ``reference_median_ms``. ``detail.identical_slates`` says the
compiled and reference evaluators gave the same slates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assay.guard.tansu import free_port
from assay.records import BenchResult, at_least, at_most

LABEL_NAMES = ("mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling")
USERS = [
    {"id": "teen-1", "age": 15, "region": "EU", "country": "DE", "sensitive_opt_out": True},
    {"id": "adult-1", "age": 34, "region": "US", "country": "US", "sensitive_opt_out": False},
    {"id": "adult-2", "age": 52, "region": "UK", "country": "GB", "sensitive_opt_out": True},
    {"id": "teen-2", "age": 16, "region": "US", "country": "US", "sensitive_opt_out": False},
]


def _feed_bundle():
    from assay.guard.cli import resolve_bundle_path
    from assay.policy import load_bundle

    return load_bundle(resolve_bundle_path("builtin:feed"))


def catalog(n_items: int, seed: int = 0):
    """A synthetic catalogue: labels with the skew real classifiers produce (most items clean)."""
    from assay.store.labels import InMemoryLabelStore

    rng = np.random.default_rng(seed)
    ids = np.array([f"item-{k:07d}" for k in range(n_items)])
    store = InMemoryLabelStore()
    store.put(ids.tolist(), {name: rng.beta(0.4, 6.0, n_items) for name in LABEL_NAMES}, "bench-labeler-1")
    meta = {
        "source": rng.choice(np.array(["catalog", "ugc:creators", "ads:network", "news:wire"]), n_items, p=[0.5, 0.3, 0.1, 0.1]),
        "creator": np.array([f"creator-{k}" for k in rng.integers(0, max(n_items // 20, 10), n_items)]),
        "topic": rng.choice(np.array(["film", "music", "sport", "news", "politics", "health", "games"]), n_items),
        "age_days": rng.integers(0, 30, n_items),
    }
    return ids, store, meta


def candidate_batch(ids: np.ndarray, meta: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> dict[str, Any]:
    """What a ranker hands the guard: ids and scores plus candidate metadata, as columns."""
    rows = rng.choice(len(ids), n, replace=False)
    return {
        "id": ids[rows].astype(object),
        "score": np.sort(rng.random(n))[::-1].copy(),
        "source": meta["source"][rows],
        "creator": meta["creator"][rows],
        "topic": meta["topic"][rows],
        "age_days": meta["age_days"][rows],
        "region_blocklist": np.array([["DE", "GB"] if r % 23 == 0 else [] for r in rows] + [None], dtype=object)[:-1],
        "tags": np.array([["clickbait"] if r % 11 == 0 else (["sponsored"] if r % 17 == 0 else []) for r in rows] + [None], dtype=object)[:-1],
    }


def with_arrow_lists(batch: dict[str, Any]) -> dict[str, Any]:
    """The same batch with its list features as Arrow list arrays, the way a columnar producer
    holds lists (numpy has no list type); rows of Python lists are what JSON decodes to."""
    import pyarrow as pa

    return {**batch, **{name: pa.array(batch[name].tolist(), type=pa.list_(pa.string())) for name in ("region_blocklist", "tags")}}


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


@contextlib.contextmanager
def _one_core():
    """Pin this process to one core for the in-process figures (restored afterwards)."""
    if not hasattr(os, "sched_getaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)
    core = max(before)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, before)


def bench_inprocess(quick: bool) -> dict[str, Any]:
    from assay.guard.core import Guard, freeze_startup_heap

    bundle = _feed_bundle()
    ids, store, meta = catalog(20_000)
    guard = Guard(bundle, store)
    rng = np.random.default_rng(1)
    n_requests = 20 if quick else 600
    n_reference = 1 if quick else 4
    row_batches = [candidate_batch(ids, meta, 1000, rng) for _ in range(8)]
    batches = [with_arrow_lists(b) for b in row_batches]
    requests = [{"request_id": f"b{k}", "surface": "for_you", "user": USERS[k % len(USERS)], "deadline_ms": 10_000} for k in range(n_requests)]
    n_rules = len(guard.bundle.surface("for_you").specs)
    n_caps = len(guard.bundle.surface("for_you").plan.cap_rows)
    freeze_startup_heap()  # as the guard's server and worker do once built
    with _one_core() as core:
        for k in range(10):  # warm caches and the allocator
            guard.apply(requests[k], batches[k % len(batches)])
        times, with_records, cpu, row_times = [], [], [], []
        ref_times, ref_cpu, identical = [], [], True
        # the reference requests are spread through the timed loop, so both paths meet the same
        # neighbours on a shared machine (a ratio of two runs minutes apart measures the load too)
        ref_at = set(np.linspace(0, n_requests - 1, n_reference).astype(int).tolist())
        for k, req in enumerate(requests):
            batch = batches[k % len(batches)]
            c0 = time.thread_time()
            t0 = time.perf_counter()
            slate = guard.apply(req, batch)
            t1 = time.perf_counter()
            cpu.append(time.thread_time() - c0)
            slate.to_arrow()  # what the trace sink does with a slate, off the serving path
            t2 = time.perf_counter()
            times.append(t1 - t0)
            with_records.append(t2 - t0)
            if k in ref_at:
                c0 = time.thread_time()
                t0 = time.perf_counter()
                ref = guard.apply(req, batch, evaluator="reference")
                ref_times.append(time.perf_counter() - t0)
                ref_cpu.append(time.thread_time() - c0)
                identical &= (slate.item_ids == ref.item_ids and np.array_equal(slate.scores, ref.scores)
                              and [d.rule_ids for d in slate.decisions] == [d.rule_ids for d in ref.decisions])
                # 0.2 s of the per-candidate path leaves every cache cold, which no serving request
                # meets: one untimed request warms them again before the next timed one
                guard.apply(req, batch)
        # the same requests with the list features as rows of Python lists, in a pass of their own
        for k, req in enumerate(requests):
            t0 = time.perf_counter()
            as_rows = guard.apply(req, row_batches[k % len(batches)])
            row_times.append(time.perf_counter() - t0)
            identical &= as_rows.item_ids == guard.apply(req, batches[k % len(batches)]).item_ids
    median = float(np.median(times))
    return {
        "inprocess_median_ms": median * 1000, "inprocess_p99_ms": _pct(times, 99),
        "inprocess_with_trace_table_p99_ms": _pct(with_records, 99),
        "inprocess_python_list_rows_median_ms": _pct(row_times, 50), "inprocess_python_list_rows_p99_ms": _pct(row_times, 99),
        # CPU time of the serving thread: what a request costs when it has the core to itself
        "inprocess_cpu_median_ms": _pct(cpu, 50), "inprocess_cpu_p99_ms": _pct(cpu, 99),
        "reference_median_ms": float(np.median(ref_times)) * 1000,
        "speedup_vs_reference": float(np.median(ref_times)) / median,
        "speedup_vs_reference_cpu": float(np.median(ref_cpu)) / float(np.median(cpu)),
        "identical_slates": bool(identical), "requests": n_requests, "reference_requests": n_reference,
        "candidates": 1000, "rules": n_rules, "caps": n_caps, "core": core,
    }


# -- HTTP --------------------------------------------------------------------------------------
async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"content-length:")
    j = head.find(b"\r\n", i)
    await reader.readexactly(int(head[i + 15 : j]))
    return status


def _http_request(port: int, body: bytes, token: str) -> bytes:
    return (f"POST /v1/guard HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def _closed_loop(port: int, reqs: list[bytes], concurrency: int, duration: float) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    end = time.perf_counter() + duration

    async def conn(k: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            writer.write(reqs[i % len(reqs)])
            status = await _read_response(reader)
            lat.append(time.perf_counter() - t0)
            errors += status != 200
            i += concurrency
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(conn(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {"rps": len(lat) / elapsed, "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "requests": len(lat), "errors": errors,
            "concurrency": concurrency}


async def _open_loop(port: int, reqs: list[bytes], rate: float, duration: float, connections: int, grace: float) -> dict[str, Any]:
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat: list[float] = []
    errors = 0
    n = int(rate * duration)
    start = time.perf_counter() + 0.05
    tasks = []

    async def send(k: int, scheduled: float) -> None:
        nonlocal errors
        reader, writer = await pool.get()
        writer.write(reqs[k % len(reqs)])
        status = await _read_response(reader)
        lat.append(time.perf_counter() - scheduled)  # from the scheduled time: queueing counts
        errors += status != 200
        pool.put_nowait((reader, writer))

    for k in range(n):
        scheduled = start + k / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append((scheduled, asyncio.create_task(send(k, scheduled))))
    _, pending = await asyncio.wait([t for _, t in tasks], timeout=max(start + duration + grace - time.perf_counter(), 0.01))
    cut = time.perf_counter()
    incomplete = [cut - sched for sched, t in tasks if t in pending]
    for t in pending:
        t.cancel()
    elapsed = cut - start
    # requests still waiting when the run is cut count with their wait so far (a lower bound)
    all_lat = lat + incomplete
    return {"offered_rps": rate, "achieved_rps": len(lat) / elapsed, "p50_ms": _pct(all_lat, 50), "p99_ms": _pct(all_lat, 99),
            "requests": n, "completed": len(lat), "incomplete": len(incomplete), "saturated": bool(incomplete),
            "errors": errors, "connections": connections}


def loadgen_main(args: list[str]) -> None:
    """The load generator process: ``python -m assay.guard.bench loadgen PORT BODIES.json QUICK``
    (the API token in ``ASSAY_BENCH_TOKEN``)."""
    port, bodies_path, quick = int(args[0]), args[1], args[2] == "1"
    token = os.environ["ASSAY_BENCH_TOKEN"]
    with contextlib.suppress(ImportError):  # the generator shares the cores: a cheaper event loop leaves more to the server
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    bodies = [b.encode() for b in json.loads(Path(bodies_path).read_text())]
    reqs = [_http_request(port, b, token) for b in bodies]
    out = {
        "closed_loop": asyncio.run(_closed_loop(port, reqs, 8, 1.0 if quick else 8.0)),
        "open_loop": asyncio.run(_open_loop(port, reqs, 1000.0, 0.3 if quick else 8.0, 64, 3.0 if quick else 10.0)),
    }
    print(json.dumps(out))


def bench_http(quick: bool, workdir: Path) -> dict[str, Any]:
    import httpx

    ids, store, meta = catalog(20_000)
    labels = store.to_parquet(workdir / "labels.parquet")
    rng = np.random.default_rng(2)
    bodies = []
    for k in range(16):
        batch = candidate_batch(ids, meta, 200, rng)
        batch = {key: (v.tolist() if isinstance(v, np.ndarray) else v) for key, v in batch.items()}
        req = {"request_id": f"h{k}", "surface": "for_you", "user": USERS[k % len(USERS)], "deadline_ms": 1000}
        bodies.append(json.dumps({"request": req, "candidates": batch}))
    (workdir / "bodies.json").write_text(json.dumps(bodies))
    port = free_port()
    workers = int(os.environ.get("ASSAY_BENCH_GUARD_WORKERS", os.cpu_count() or 1))
    # with authentication on, as served: a control-plane token (viewer) on a store of its own
    from assay.govern.registry import Actor
    from assay.govern.tokens import create_token
    from assay.store import open_store

    db = f"sqlite:///{workdir / 'tokens.db'}"
    token_store = open_store(db)
    token = create_token(token_store, Actor("bench", "admin", "bench"), name="bench-ranker", role="viewer")["token"]
    token_store.close()
    env = {**os.environ, "ASSAY_BENCH_TOKEN": token}
    server = subprocess.Popen([sys.executable, "-m", "assay.cli.main", "guard", "serve", "--labels", str(labels), "--port", str(port),
                               "--workers", str(workers), "--db", db],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"guard server exited: {server.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("guard server did not start within 90 s")
            time.sleep(0.2)
        import resource

        gen_cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu0 = _cpu_seconds(server.pid)
        started = time.perf_counter()
        gen = subprocess.run([sys.executable, "-m", "assay.guard.bench", "loadgen", str(port), str(workdir / "bodies.json"), "1" if quick else "0"],
                             capture_output=True, text=True, timeout=300, env=env)
        elapsed = time.perf_counter() - started
        gen_cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu1 = _cpu_seconds(server.pid)
        if gen.returncode != 0:
            raise RuntimeError(f"load generator failed: {gen.stderr[-2000:]}")
        result = json.loads(gen.stdout.strip().splitlines()[-1])
    finally:
        _stop_group(server)
    # the load generator runs on the same cores as the server: how much of them each one used
    cores_used = {"elapsed_s": elapsed,
                  "loadgen_cpu_s": (gen_cpu1.ru_utime + gen_cpu1.ru_stime) - (gen_cpu0.ru_utime + gen_cpu0.ru_stime),
                  "server_cpu_s": (server_cpu1 - server_cpu0) if server_cpu0 is not None and server_cpu1 is not None else None}
    served = result["closed_loop"]["requests"] + result["open_loop"]["completed"]
    if cores_used["server_cpu_s"] is not None and served:
        # what one request costs the server, whatever share of the cores the neighbours left it
        cores_used["server_cpu_ms_per_request"] = cores_used["server_cpu_s"] * 1000 / served
    return {"http_rps": result["closed_loop"]["rps"], "http_p50_ms": result["open_loop"]["p50_ms"],
            "http_p99_ms": result["open_loop"]["p99_ms"],
            "http_detail": {**result, "server_workers": workers, "cores_used": cores_used, "authentication": "bearer token (viewer)"}}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live descendants (the server's worker
    processes) from Linux /proc, None where unavailable."""
    try:
        total, pending = 0.0, [pid]
        while pending:
            p = pending.pop()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        return total
    except (OSError, ValueError, IndexError):
        return None


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and its worker processes (SIGINT is uvicorn's clean shutdown)."""
    import signal

    for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def bench_stream(quick: bool) -> dict[str, Any]:
    import redis

    from assay.guard.core import Guard, GuardConfig
    from assay.guard.stream import RedisStreamsTransport, StreamWorker, encode_request

    url = os.environ.get("ASSAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    tag = f"assay:bench:{os.getpid()}:{int(time.time())}"
    client = redis.Redis.from_url(url)
    ids, store, meta = catalog(20_000)
    guard = Guard(_feed_bundle(), store, config=GuardConfig(deadline_ms=1000))
    rng = np.random.default_rng(3)
    n = 10 if quick else 400
    t = RedisStreamsTransport(url, input_stream=f"{tag}:in", output_stream=f"{tag}:out", consumer="bench")
    try:
        msgs = [encode_request({"request_id": f"s{k}", "surface": "for_you", "user": USERS[k % len(USERS)]},
                               candidate_batch(ids, meta, 200, rng)) for k in range(n)]
        worker = StreamWorker(guard, t, count=32, block_ms=50)
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for m in msgs:
            pipe.xadd(f"{tag}:in", {"data": m})
        pipe.execute()
        handled = worker.run(max_messages=n, idle_exit_s=5.0)
        elapsed = time.perf_counter() - started
        written = client.xlen(f"{tag}:out")
        return {"stream_batches_per_s": handled / elapsed, "stream_batches": handled, "stream_slates_written": written,
                "stream_candidates_per_batch": 200}
    finally:
        keys = [f"{tag}:in", f"{tag}:out", *client.scan_iter(f"{tag}:out:done:*", count=1000)]
        client.delete(*keys)
        t.close()
        client.close()


# -- trust figures ------------------------------------------------------------------------------
def _records(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """A columnar batch as the records the reference guard reads (what the caller gave)."""
    cols = {k: (v.tolist() if isinstance(v, np.ndarray) else v.to_pylist() if hasattr(v, "to_pylist") else list(v))
            for k, v in batch.items()}
    return [{k: vals[i] for k, vals in cols.items() if vals[i] is not None or k in ("id", "score")} for i in range(len(cols["id"]))]


def bench_independent(quick: bool) -> dict[str, Any]:
    """Whole slates against the reference guard written from the docs (``assay.guard.oracle``):
    random users, both surfaces (one fail-open), labels missing for some items and all of others,
    list features as Arrow lists or as Python lists. A request disagrees when its served ids,
    scores or interstitials, or any candidate's action, rules, rank or shadow rules differ."""
    from assay.guard.core import Guard, GuardConfig
    from assay.guard.oracle import ReferenceGuard

    bundle = _feed_bundle()
    ids, store, meta = catalog(5000, seed=4)
    rng = np.random.default_rng(4)
    gone = rng.choice(ids, 300, replace=False).tolist()
    store.put(gone[:150], {"mature": np.full(150, np.nan), "hate": np.full(150, np.nan)}, "partial")
    store.put(gone[150:], {n: np.full(150, np.nan) for n in store.label_names}, "none")
    modes = {"search": "fail_open"}
    guard = Guard(bundle, store, config=GuardConfig(surface_modes=modes, extra_surfaces=("search",)))
    ref = ReferenceGuard(bundle, surface_modes=modes)
    n_requests = 30 if quick else 1000
    disagree, examples, candidates = 0, [], 0
    started = time.perf_counter()
    for k in range(n_requests):
        user = dict(USERS[k % len(USERS)], id=f"u{int(rng.integers(500))}")
        if k % 7 == 3:
            user.pop("country")  # a request-wide value absent for the whole batch
        request = {"request_id": f"i{k}", "surface": "search" if k % 5 == 4 else "for_you", "user": user, "deadline_ms": 60_000}
        batch = candidate_batch(ids, meta, 40, rng)
        if k % 2:
            batch = with_arrow_lists(batch)
        slate = guard.apply(request, batch)
        records = _records(batch)
        got = store.get(list(batch["id"]), store.label_names)
        labels = {i: {n: float(got.values[n][j]) for n in got.values if got.present[n][j]} for j, i in enumerate(got.item_ids)}
        want = ref.decide(request["surface"], request, records, labels)
        candidates += len(records)
        same = (slate.item_ids == want.item_ids and slate.scores.tolist() == want.scores and dict(slate.item_labels) == want.item_labels
                and [(d.action, d.rule_ids, d.rank_after, d.shadow_rule_ids) for d in slate.decisions]
                == [(c.action, c.rule_ids, c.rank, c.shadow_rule_ids) for c in want.candidates])
        if not same:
            disagree += 1
            if len(examples) < 3:
                examples.append({"request": request, "guard": slate.item_ids, "reference": want.item_ids})
    return {"independent_slate_disagreements": disagree, "independent_requests": n_requests, "independent_candidates": candidates,
            "independent_examples": examples, "independent_seconds": time.perf_counter() - started}


def bench_explain(quick: bool) -> dict[str, Any]:
    """Traced decisions explained again from their recorded inputs (``assay.guard.replay``)."""
    from assay.guard.replay import traced_mix

    started = time.perf_counter()
    report = traced_mix(n_requests=6 if quick else 105, candidates=100, seed=5)
    return {"explain_agreement": report["agreement"], "explain_decisions": report["decisions"], "explain_mix": report["mix"],
            "explain_examples": report["examples"], "explain_seconds": time.perf_counter() - started}


def bench_fuzz(quick: bool) -> dict[str, Any]:
    """The differential fuzzer (``assay.guard.fuzz``): the guard in a child process against the
    reference guard on random bundles and batches in every input shape."""
    from assay.guard import fuzz

    report = fuzz.run(cases=40 if quick else 1500, seed=int(time.time()) % 100_000)
    return {"fuzz_crashes": report.crashes, "fuzz_disagreements": report.disagreements, "fuzz_cases": report.cases,
            "fuzz_seed_examples": report.examples[:3], "fuzz_shapes": report.shapes, "fuzz_seconds": report.seconds}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_rss(quick: bool) -> dict[str, Any]:
    """Resident memory over many requests whose candidates carry list columns (as JSON gives them,
    and as Arrow lists), after a warm-up: growth per 100,000 requests."""
    import gc

    from assay.guard.core import Guard

    ids, store, meta = catalog(5000, seed=6)
    guard = Guard(_feed_bundle(), store)
    rng = np.random.default_rng(6)
    rows = [candidate_batch(ids, meta, 50, rng) for _ in range(16)]
    json_like = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in b.items()} for b in rows]
    batches = [b for pair in zip(json_like, [with_arrow_lists(b) for b in rows], strict=True) for b in pair]
    requests = [{"surface": "for_you", "user": USERS[k % len(USERS)], "deadline_ms": 60_000} for k in range(len(USERS))]
    n = 2_000 if quick else 100_000
    for k in range(500 if quick else 2_000):  # warm: the allocator's pools, the caches
        guard.apply(requests[k % len(requests)], batches[k % len(batches)])
    gc.collect()
    before = _rss_mb()
    started = time.perf_counter()
    for k in range(n):
        guard.apply(requests[k % len(requests)], batches[k % len(batches)])
    gc.collect()
    after = _rss_mb()
    return {"rss_growth_mb_per_100k": (after - before) * 100_000 / n, "rss_requests": n, "rss_before_mb": before, "rss_after_mb": after,
            "rss_seconds": time.perf_counter() - started}


def run(quick: bool = False) -> BenchResult:
    inproc = bench_inprocess(quick)
    with tempfile.TemporaryDirectory(prefix="assay-bench-guard-") as tmp:
        http = bench_http(quick, Path(tmp))
    stream = bench_stream(quick)
    independent = bench_independent(quick)
    explained = bench_explain(quick)
    fuzzed = bench_fuzz(quick)
    rss = bench_rss(quick)
    figures = {
        "inprocess_median_ms": inproc["inprocess_median_ms"],
        "inprocess_p99_ms": inproc["inprocess_p99_ms"],
        "speedup_vs_reference": inproc["speedup_vs_reference"],
        "http_p99_ms": http["http_p99_ms"],
        "http_rps": http["http_rps"],
        "stream_batches_per_s": stream["stream_batches_per_s"],
        "independent_slate_disagreements": independent["independent_slate_disagreements"],
        "explain_agreement": explained["explain_agreement"],
        "fuzz_crashes": fuzzed["fuzz_crashes"],
        "fuzz_disagreements": fuzzed["fuzz_disagreements"],
        "rss_growth_mb_per_100k": rss["rss_growth_mb_per_100k"],
    }
    return BenchResult(
        figures=figures,
        baseline={"reference_median_ms": inproc["reference_median_ms"]},
        units={"inprocess_median_ms": "ms", "inprocess_p99_ms": "ms", "speedup_vs_reference": "x", "http_p99_ms": "ms",
               "http_rps": "requests/s", "stream_batches_per_s": "batches/s", "independent_slate_disagreements": "requests",
               "explain_agreement": "share", "fuzz_crashes": "cases", "fuzz_disagreements": "cases",
               "rss_growth_mb_per_100k": "MB", "reference_median_ms": "ms"},
        targets={"inprocess_p99_ms": at_most(1, when="1,000 candidates x 25 rules, one core"),
                 "speedup_vs_reference": at_least(100),
                 "http_p99_ms": at_most(10, when="1,000 requests/s offered, authenticated, 200 candidates a request"),
                 "http_rps": at_least(1000),
                 "independent_slate_disagreements": at_most(0, when=">= 1,000 requests"),
                 "explain_agreement": at_least(1.0, when=">= 10,000 traced decisions"),
                 "fuzz_crashes": at_most(0), "fuzz_disagreements": at_most(0),
                 "rss_growth_mb_per_100k": at_most(5)},
        measures={
            "inprocess_p99_ms": "Guard.apply of one request (columnar input), wall clock, one core",
            "speedup_vs_reference": "the same requests decided with the reference CEL evaluator: median ÷ ours",
            "http_p99_ms": "open loop at an offered 1,000 requests/s, latency from each request's scheduled send time",
            "http_rps": "closed loop at concurrency 8: requests answered per second",
            "stream_batches_per_s": "a backlog of batches XADDed first, then drained by one Redis Streams worker "
                                    "(throughput of the worker alone; produce-to-decision is `assay bench stream`)",
            "independent_slate_disagreements": "requests whose slate differs from the reference guard written from the docs",
            "explain_agreement": "share of traced decisions explained again identically from their recorded inputs",
            "rss_growth_mb_per_100k": "resident memory growth over many requests after a warm-up, scaled to 100,000",
        },
        detail={**inproc, **{k: v for k, v in http.items() if k not in figures}, **stream, **independent, **explained, **fuzzed, **rss,
                "counts": {"independent_requests": independent["independent_requests"], "explain_decisions": explained["explain_decisions"],
                           "fuzz_cases": fuzzed["fuzz_cases"], "rss_requests": rss["rss_requests"]},
                "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None, "cpus": os.cpu_count()},
    )


if __name__ == "__main__":  # the load generator runs in its own process
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        loadgen_main(sys.argv[2:])
