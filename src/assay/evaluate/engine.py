"""The evaluation engine: run a suite, stream per-item results to disk, resume after a crash.

A run lives in ``ASSAY_HOME/runs/<run_id>/``:

- ``suite.yaml`` (as written) and ``run.json`` (resolved suite, item-set hash, target identity);
- ``results.jsonl``: the engine's journal, one line per finished item, appended and flushed as
  items finish (scores included), so a killed run loses at most the items in flight; only
  ``resume`` reads it;
- ``runlog.jsonl`` once all items are done: the run's record (``assay.runlog``, docs/runlog.md)
  -- identity, hashes, judges, every item in dataset order, metrics with intervals, gate
  verdicts, timings -- and ``report.html`` drawn from it. Everything that shows a run reads the
  run log.

``resume`` re-reads ``results.jsonl`` (dropping a torn last line), runs only the missing items
and writes the same report an uninterrupted run writes: the report is computed from the results
in dataset order, with seeded bootstrap intervals. Responses are cached in
``ASSAY_HOME/cache/responses.sqlite`` keyed by target identity + parameters + prompt.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.config import settings
from assay.errors import BadInput, Unavailable
from assay.evaluate import items as items_mod
from assay.evaluate.items import EvalItem
from assay.evaluate.judged import judged_metrics
from assay.evaluate.scorers import Scorer, build_scorer
from assay.evaluate.suite import Suite, from_spec, load_suite
from assay.evaluate.targets import Output, Target, TargetError, build_target, fingerprint_key
from assay.runlog import FILE_NAME, RunLog, RunLogError, read_runlog

RESULTS = "results.jsonl"  # the engine's own journal (resume reads it); the record of the run is RUNLOG
RUNLOG = FILE_NAME
RETRY_ON_RESUME = frozenset({"connect", "timeout", "http_429", "http_5xx"})


# ---------------------------------------------------------------------------------------------
# response cache


class ResponseCache:
    """SQLite key-value store of successful outputs (stdlib sqlite3: one file, safe across
    processes, nothing to run)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, output TEXT NOT NULL)")
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Output | None:
        row = self.conn.execute("SELECT output FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        data = json.loads(row[0])
        return Output(**{k: v for k, v in data.items() if k in Output.__dataclass_fields__}, cached=True)

    def put(self, key: str, output: Output) -> None:
        data = {k: v for k, v in output.to_dict().items() if k not in ("latency_s", "attempts", "cached")}
        self.conn.execute("INSERT OR REPLACE INTO responses (key, output) VALUES (?, ?)", (key, json.dumps(data)))

    def close(self) -> None:
        self.conn.close()


# ---------------------------------------------------------------------------------------------
# the run folder


def runs_dir() -> Path:
    return settings().path("runs", "x").parent


def run_dir(run_id: str) -> Path:
    path = runs_dir() / run_id
    if not (path / "run.json").is_file():
        raise BadInput(f"no evaluation run {run_id!r} under {runs_dir()}", hint="`assay eval list` shows the runs")
    return path


def read_results(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records in ``results.jsonl``; a torn last line (the process died mid-write) is dropped and,
    with ``repair``, cut off the file."""
    if not path.is_file():
        return []
    records = []
    good_bytes = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                records.append(json.loads(raw))
            except json.JSONDecodeError:
                break
            good_bytes += len(raw)
    if repair and good_bytes != path.stat().st_size:
        with open(path, "r+b") as fh:
            fh.truncate(good_bytes)
    return records


def _item_set_hash(items: list[EvalItem]) -> str:
    digest = hashlib.sha256()
    for it in items:
        digest.update(json.dumps([it.id, it.task, list(it.messages), it.invalid], sort_keys=True).encode())
    return digest.hexdigest()


def _jsonable_fields(item: EvalItem) -> dict[str, Any]:
    return {k: v for k, v in item.fields.items() if k not in ("response", "texts", "prefix")}


# ---------------------------------------------------------------------------------------------
# dataset + context


def load_items(suite: Suite) -> list[EvalItem]:
    ds = suite.dataset
    opts = dict(ds.get("options") or {})
    if "builtin" in ds:
        try:
            items = items_mod.BUILTIN[ds["builtin"]](opts)
        except (UnicodeDecodeError, csv.Error, json.JSONDecodeError, RecursionError) as e:
            folder = settings().data_dir / items_mod.BUILTIN_SOURCE[ds["builtin"]]
            raise BadInput(f"dataset {ds['builtin']!r}: a file under {folder} is damaged ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:200] if str(e) else ''})",
                           hint="compare the folder with its SHA256SUMS, or fetch the dataset again") from None
    elif "users" in ds:
        items = items_mod.load_recsys_users(suite.resolve(ds["users"]), {**opts, "k": opts.get("k", suite.recsys.get("k", 10))})
    else:
        items = items_mod.load_file(suite.resolve(ds["path"]), opts)
    items = items_mod.select(items, ds.get("limit"), ds.get("sample"), int(ds.get("seed", 0)))
    if not items:
        raise BadInput(f"suite {suite.name!r}: the dataset has no items")
    return items


def dataset_identity(suite: Suite) -> dict[str, Any]:
    """Name and content hash of the data the suite reads: sha256 over the sorted (relative
    path, file sha256) pairs, the same identity the governance registry gives a dataset
    registered from that folder or file."""
    from assay.data import dataset_path, sha256_file

    ds = suite.dataset
    if "builtin" in ds:
        name = items_mod.BUILTIN_SOURCE[ds["builtin"]]
        folder = dataset_path(name)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        pairs = sorted((p.relative_to(folder).as_posix(), sha256_file(p)) for p in files)
    else:
        p = suite.resolve(ds.get("path") or ds["users"])
        name, pairs = p.name, [(p.name, sha256_file(p))]
    digest = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    return {"name": name, "sha256": digest, "files": len(pairs)}


def recsys_context(suite: Suite) -> dict[str, Any]:
    """Catalogue, popularity, item groups and genres for recommender metrics (JSON files)."""
    ctx: dict[str, Any] = {}
    for key in ("catalogue", "popularity", "item_groups", "item_genres"):
        if key in suite.recsys:
            value = suite.recsys[key]
            if isinstance(value, str):
                path = suite.resolve(value)
                if not path.is_file():
                    raise BadInput(f"suite {suite.name!r}: recsys.{key} file {path} not found")
                value = json.loads(path.read_text())
            ctx[key] = value
    return ctx


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class RunOutcome:
    run_id: str
    path: Path
    report: dict[str, Any]
    result: Any  # EvaluationResult
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        return self.report["passed"]


ProgressHook = Callable[[int, int, int], None]  # (done, total, errors)


class _Progress:
    """Rich progress bar with rate and ETA (stays quiet when ``show`` is False)."""

    def __init__(self, total: int, done: int, show: bool, label: str) -> None:
        self.show = show
        self.errors = 0
        if show:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("[cyan]{task.fields[rate]}"),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("[red]{task.fields[errors]} errors"),
                transient=False,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(label, total=total, completed=done, rate="", errors=0)
        self.started = time.perf_counter()
        self.new = 0

    def advance(self, n: int, errors: int) -> None:
        self.new += n
        self.errors += errors
        if self.show:
            rate = self.new / max(time.perf_counter() - self.started, 1e-9)
            self.bar.update(self.task, advance=n, rate=f"{rate:.1f} it/s", errors=self.errors)

    def close(self) -> None:
        if self.show:
            self.bar.stop()


async def _score_batch(scorers: list[Scorer], batch: list[tuple[EvalItem, Output | None, dict | None]]) -> list[dict[str, Any]]:
    lines = []
    answered = [(it, out) for it, out, err in batch if out is not None]
    scores: dict[str, dict[str, Any]] = {it.id: {} for it, _, _ in batch}
    score_errors: dict[str, dict[str, str]] = {it.id: {} for it, _, _ in batch}
    for scorer in scorers:
        subset = [(it, out) for it, out in answered if it.task in scorer.tasks]
        if not subset:
            continue
        try:
            results = await scorer.score([s[0] for s in subset], [s[1] for s in subset])
        except Exception as e:  # one scorer failing must not stop the run: count it per item
            for it, _ in subset:
                score_errors[it.id][scorer.name] = f"{type(e).__name__}: {e}"[:300]
            continue
        for (it, _), row in zip(subset, results, strict=True):
            scores[it.id].update(row)
    for it, out, err in batch:
        lines.append(
            {
                "id": it.id,
                "category": it.category,
                "group": it.group,
                "fields": _jsonable_fields(it),
                "output": out.to_dict() if out is not None else None,
                "error": err,
                "scores": scores[it.id],
                "score_errors": score_errors[it.id] or None,
            }
        )
    return lines


async def _produce_local(target: Target, todo: list[EvalItem], cache: ResponseCache | None, emit, window: int) -> None:
    """Call the target for every item with at most ``window`` calls outstanding (the target's
    own adaptive limiter decides how many actually hit the server)."""
    sem = asyncio.Semaphore(window)

    async def one(item: EvalItem) -> None:
        try:
            if item.invalid:
                await emit(item, None, {"kind": "invalid", "message": item.invalid})
                return
            key = fingerprint_key(target, item) if cache is not None else None
            if cache is not None and (hit := cache.get(key)) is not None:
                await emit(item, hit, None)
                return
            try:
                out = await target.call(item)
            except TargetError as e:
                await emit(item, None, {"kind": e.kind, "message": e.message[:300], "attempts": e.attempts})
                return
            if cache is not None:
                cache.put(key, out)
            await emit(item, out, None)
        finally:
            sem.release()

    tasks = []
    for item in todo:
        await sem.acquire()
        tasks.append(asyncio.create_task(one(item)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _execute(
    suite: Suite,
    path: Path,
    items: list[EvalItem],
    *,
    engine: str,
    use_cache: bool,
    show_progress: bool,
    hook: ProgressHook | None,
) -> dict[str, Any]:
    done_records = read_results(path / RESULTS, repair=True)
    # an item that failed for a transient reason (the server went away, timed out, shed load)
    # is run again on resume; its new line supersedes the old one
    done = {r["id"] for r in done_records if not (r.get("error") and r["error"]["kind"] in RETRY_ON_RESUME)}
    todo = [it for it in items if it.id not in done]
    target = build_target(suite.target)
    scorers = [build_scorer(s) for s in suite.scorers]
    # replayed answers cost nothing to produce: caching them would only add writes
    cacheable = use_cache and suite.run.get("cache", True) and target.kind != "replay"
    cache = ResponseCache(settings().path("cache", "responses.sqlite")) if cacheable else None
    batch_size = int(suite.run.get("batch_size", 32))
    flush_s = float(suite.run.get("flush_s", 0.5))
    progress = _Progress(len(items), len(done), show_progress, suite.name)
    stats: dict[str, Any] = {"resumed_from": len(done), "ran": len(todo), "engine": engine}
    started = time.perf_counter()
    queue: asyncio.Queue = asyncio.Queue()
    fh = open(path / RESULTS, "a", encoding="utf-8")  # noqa: SIM115
    n_done = len(done)

    async def emit(item: EvalItem, out: Output | None, err: dict | None) -> None:
        await queue.put((item, out, err))

    async def writer() -> None:
        nonlocal n_done
        finished = False
        while not finished:
            batch = []
            item = await queue.get()
            if item is None:
                break
            batch.append(item)
            deadline = time.monotonic() + flush_s
            while len(batch) < batch_size:
                try:
                    nxt = await asyncio.wait_for(queue.get(), timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if nxt is None:
                    finished = True
                    break
                batch.append(nxt)
            lines = await _score_batch(scorers, batch)
            fh.write("".join(json.dumps(line, sort_keys=True, default=str) + "\n" for line in lines))
            fh.flush()
            errors = sum(1 for line in lines if line["error"])
            n_done += len(lines)
            progress.advance(len(lines), errors)
            if hook:
                hook(n_done, len(items), errors)

    try:
        for scorer in scorers:
            await scorer.start()
        _record_judges(path, scorers)
        writer_task = asyncio.create_task(writer())
        try:
            if todo and engine == "ray":
                from assay.evaluate.ray_engine import produce_ray

                await produce_ray(target, suite.target, todo, cache, emit)
            elif todo:
                await target.start()
                try:
                    window = max(getattr(target, "max_concurrency", target.default_concurrency), 1) * 2
                    await _produce_local(target, todo, cache, emit, window)
                finally:
                    await target.close()
        finally:
            # whatever happened, what finished is scored and on disk before we return or raise
            await queue.put(None)
            await writer_task
    finally:
        fh.close()
        progress.close()
        for scorer in scorers:
            await scorer.close()
        if cache is not None:
            stats["cache_hits"], stats["cache_misses"] = cache.hits, cache.misses
            cache.close()
    elapsed = time.perf_counter() - started
    stats.update(
        wall_s=round(elapsed, 3),
        items_per_s=round(len(todo) / elapsed, 3) if elapsed > 0 else None,
        requests=target.stats.requests,
        retries=target.stats.retries,
        peak_concurrency=round(target.limiter.stats.peak_limit, 2) if getattr(target, "limiter", None) else None,
        backoffs=target.limiter.stats.decreases if getattr(target, "limiter", None) else None,
    )
    return stats


JUDGES = "judges.json"


def _record_judges(path: Path, scorers: list[Scorer]) -> None:
    """Which judge (name, version) produces each judged field, written when a run starts; a
    resumed run whose judges changed version is refused (its report would mix two judges)."""
    judged: dict[str, dict[str, str]] = {}
    for scorer in scorers:
        for field_name, judge in getattr(scorer, "judged_fields", dict)().items():
            judged[field_name] = {"judge": judge.name, "version": judge.version, "question": judge.question}
    file = path / JUDGES
    if file.is_file():
        before = json.loads(file.read_text())
        if before != judged:
            changed = sorted(k for k in set(before) | set(judged) if before.get(k) != judged.get(k))
            raise BadInput(f"run {path.name}: the judges of {', '.join(changed)} changed since the run started "
                           f"({', '.join(str(before.get(k, {}).get('version')) for k in changed)} -> "
                           f"{', '.join(str(judged.get(k, {}).get('version')) for k in changed)}); resuming would mix verdicts",
                           hint="start a new run with `assay eval run`")
        return
    file.write_text(json.dumps(judged, indent=2, sort_keys=True) + "\n")


def read_judges(path: Path) -> dict[str, dict[str, Any]]:
    """The run's judged fields with each judge's validation as it stands now."""
    file = path / JUDGES
    if not file.is_file():
        return {}
    judged = json.loads(file.read_text())
    from assay.judges.validate import summary_for_version

    return {f: {**info, "validation": summary_for_version(info["judge"], info["version"])} for f, info in judged.items()}


def _finish(suite: Suite, path: Path, items: list[EvalItem], meta: dict[str, Any], stats: dict[str, Any]) -> RunOutcome:
    from assay.evaluate import report as rep

    by_id = {r["id"]: r for r in read_results(path / RESULTS)}  # the last line of an id wins
    missing = [it.id for it in items if it.id not in by_id]
    if missing:
        raise Unavailable(f"run {meta['run_id']} is incomplete: {len(missing)} items missing", hint=f"assay eval resume {meta['run_id']}")
    records = [by_id[it.id] for it in items]  # dataset order, whatever order they finished in
    judges = read_judges(path)
    metrics = rep.compute_metrics(suite.metrics, records, recsys_context(suite), resamples=int(suite.run.get("resamples", 1000)))
    judged = judged_metrics(suite.metrics, metrics, records, judges)
    metrics.update(judged.corrected)
    gates = rep.check_gates(suite.gates, metrics, suite.base_dir, judged.evidence)
    log = read_runlog(rep.write_runlog(path / RUNLOG, meta, records, metrics, gates, judges=judges, judged=judged.by_metric,
                                       stats=stats, artifacts={"report": "report.html", "journal": RESULTS}))
    report = rep.report_from_runlog(log)
    (path / "report.html").write_text(rep.render_html(report), encoding="utf-8")
    result = rep.evaluation_result(report, str(path / "report.html"))
    return RunOutcome(meta["run_id"], path, report, result, stats)


def _meta(suite: Suite, items: list[EvalItem], run_id: str, engine: str) -> dict[str, Any]:
    target = build_target(suite.target)
    return {
        "run_id": run_id,
        "suite": suite.name,
        "suite_hash": suite.hash,
        "suite_source": suite.source,
        "base_dir": str(suite.base_dir),
        "spec": suite.spec,
        "target": target.fingerprint(),
        "model_hashes": target.model_hashes(),
        "dataset": dataset_identity(suite),
        "items": len(items),
        "item_set_sha256": _item_set_hash(items),
        "engine": engine,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def new_run_id(suite: Suite) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{suite.name}-{uuid.uuid4().hex[:6]}"


def run_suite(
    suite: Suite | str | Path,
    *,
    run_id: str | None = None,
    engine: str = "local",
    use_cache: bool = True,
    show_progress: bool = False,
    hook: ProgressHook | None = None,
) -> RunOutcome:
    """Run a suite from the start (into a new run folder)."""
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    if engine not in ("local", "ray"):
        raise BadInput(f"unknown engine {engine!r}; use local or ray")
    items = load_items(suite)
    run_id = run_id or new_run_id(suite)
    path = runs_dir() / run_id
    if (path / "run.json").exists():
        raise BadInput(f"run {run_id!r} already exists", hint=f"assay eval resume {run_id}")
    path.mkdir(parents=True)
    meta = _meta(suite, items, run_id, engine)
    (path / "suite.yaml").write_text(suite.text, encoding="utf-8")
    (path / "run.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    stats = asyncio.run(_execute(suite, path, items, engine=engine, use_cache=use_cache, show_progress=show_progress, hook=hook))
    return _finish(suite, path, items, meta, stats)


def resume_run(run_id: str, *, engine: str | None = None, use_cache: bool = True, show_progress: bool = False, hook: ProgressHook | None = None) -> RunOutcome:
    """Run only the items a killed run had not finished, then write the full report."""
    path = run_dir(run_id)
    meta = json.loads((path / "run.json").read_text())
    suite = from_spec(meta["spec"], meta["suite_source"], (path / "suite.yaml").read_text(), Path(meta["base_dir"]))
    items = load_items(suite)
    if _item_set_hash(items) != meta["item_set_sha256"]:
        raise BadInput(
            f"run {run_id}: the dataset's items changed since the run started; cannot resume it",
            hint="start a new run with `assay eval run`",
        )
    engine = engine or meta.get("engine", "local")
    stats = asyncio.run(_execute(suite, path, items, engine=engine, use_cache=use_cache, show_progress=show_progress, hook=hook))
    return _finish(suite, path, items, meta, stats)


def list_runs() -> list[dict[str, Any]]:
    out = []
    root = runs_dir()
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        if (p / "run.json").is_file():
            meta = json.loads((p / "run.json").read_text())
            row = {"run_id": p.name, "suite": meta["suite"], "items": meta["items"], "complete": False, "passed": None}
            try:
                log = read_runlog(p / RUNLOG) if (p / RUNLOG).is_file() else None
            except RunLogError as e:  # one damaged run log is listed as such, not a failed listing
                out.append({**row, "done": 0, "error": e.message})
                continue
            done = log.summary.samples if log else len({r["id"] for r in read_results(p / RESULTS)})
            out.append({**row, "done": done, "complete": log is not None, "passed": log.summary.passed if log else None})
    return out


def read_run(run_id: str) -> RunLog:
    """A finished run's run log, by id (a clear error when the run is unfinished)."""
    path = run_dir(run_id)
    if not (path / RUNLOG).is_file():
        raise BadInput(f"run {run_id} has no run log yet: it did not finish", hint=f"assay eval resume {run_id}")
    return read_runlog(path / RUNLOG)


def register_with_governance(result: Any, model_id: str) -> str:
    """Record the run in the governance registry against a registered model (its weights'
    sha256 must match the run's model hashes). Called by the CLI, not by the engine."""
    try:
        from assay.govern.registry import local_actor, register_evaluation
        from assay.store import open_store
    except ImportError as e:
        raise Unavailable(f"the governance registry is not available: {e}") from None
    out = register_evaluation(open_store(), local_actor(), result, model_id)
    return str(out.get("id", out))
