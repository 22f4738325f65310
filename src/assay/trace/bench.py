"""``assay bench trace``: batched append (canonicalise + hash + Merkle + fsync + signed
checkpoint per batch), full verification, and the ``why`` query — beside PostgreSQL's fastest
ingest (``COPY`` of the same decisions, no hashing or signing) on the machine's server, measured
in the same run (``append_vs_postgres_copy``: above 1 the log is ahead).

Figures (``BenchResult``): ``append_per_s`` and ``verify_per_s`` (records/s, target >= 1,000,000),
``why_query_ms`` (median of several lookups, target <= 100 ms), ``erase_s_per_1m`` (erasing one
subject, scaled to a 1M-record log), ``witness_cosign_ms`` (a witness checks a consistency proof
and cosigns), ``append_vs_postgres_copy`` and the threads-over-one-thread ratios (x); append and
verify with ``threads=1`` are measured beside them on the same batches, interleaved (in
``detail``). Baseline: ``postgres_copy_per_s`` and ``postgres_indexed_lookup_ms`` (null, with
the reason in ``detail.postgres``, where PostgreSQL cannot be reached).
quick=True uses a small log; quick=False appends 1M decisions for the throughput figures and
grows the log to 10M decisions for the ``why`` query (minutes on a small machine).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from assay.records import BenchResult, at_least, at_most
from assay.trace import canonical

PG_URL = os.environ.get("ASSAY_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def synthetic_decisions(n: int, start: int = 0, seed: int = 0) -> pa.Table:
    """A realistic decision batch: 50 candidates per request, 100k subjects, 1M items,
    a third dropped or demoted by one of a few rules."""
    rng = np.random.default_rng(seed + start)
    idx = np.arange(start, start + n)
    request = idx // 50
    rank = (idx % 50).astype(np.int64)
    fired = rng.random(n) < 0.3
    rule_choice = rng.integers(0, 3, n)
    rules = np.array(["teen-mature-drop", "creator-cap", "misinfo-demote"])
    actions = np.array(["drop", "cap", "demote"])
    rule_ids = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(fired)]).astype(np.int32)),
        pa.array(rules[rule_choice[fired]]))
    reasons = pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(fired)]).astype(np.int32)),
        pa.array(np.array(["mature content is not recommended to minors", "at most 2 items per creator",
                           "claims rated false are demoted"])[rule_choice[fired]]))
    empty = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()))
    models = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(np.full(n, "ranker@7")))
    action = np.where(fired, actions[rule_choice], "allow")
    score = rng.random(n)
    columns = {
        "request_id": pa.array(np.char.add("req-", request.astype(str))),
        "ts": pa.array(1_764_000_000.0 + request * 0.001),
        "surface": pa.array(np.where(request % 3 == 0, "search", "for_you")),
        "subject_id": pa.array(np.char.add("user-", (request * 7919 % 100_000).astype(str))),
        "item_id": pa.array(np.char.add("item-", rng.integers(0, 1_000_000, n).astype(str))),
        "rank_before": pa.array(rank),
        "rank_after": pa.array(np.where(action == "drop", -1, rank)),
        "action": pa.array(action),
        "rule_ids": rule_ids,
        "reasons": reasons,
        "shadow_rule_ids": empty,
        "bundle_hash": pa.array(np.full(n, "9f" * 32)),
        "bundle_version": pa.array(np.full(n, "2026.11.1")),
        "model_versions": models,
        "breaker_state": pa.array(np.full(n, "closed")),
        "score_before": pa.array(score),
        "score_after": pa.array(np.where(action == "demote", score * 0.5, score)),
        "attribution": pa.nulls(n, pa.string()),
    }
    return pa.table(columns, schema=canonical.DECISION_SCHEMA)


def _postgres_baseline(table: pa.Table) -> dict[str, Any]:
    """PostgreSQL's fastest ingest path beside the log: the same decisions (the ten scalar columns
    a row-per-decision table would hold; no hashing, no Merkle tree, no signature) written as CSV
    by pyarrow and loaded with one ``COPY ... FROM STDIN`` into a temporary table,
    committed; timed from the Arrow table to the commit. Then the ``why`` lookup with a
    (subject_id, item_id) index."""
    try:
        import psycopg
        from pyarrow import csv as pacsv
    except ImportError:  # pragma: no cover
        return {"postgres": "psycopg not installed"}
    cols = ["request_id", "ts", "surface", "subject_id", "item_id", "rank_before", "rank_after", "action", "bundle_hash", "score_before"]
    try:
        conn = psycopg.connect(PG_URL, connect_timeout=5)
    except psycopg.OperationalError as e:
        return {"postgres": f"unavailable: {e}"}
    with conn:
        cur = conn.cursor()
        cur.execute("""CREATE TEMP TABLE bench_decisions (request_id text, ts double precision, surface text,
                       subject_id text, item_id text, rank_before int, rank_after int, action text,
                       bundle_hash text, score_before double precision)""")
        conn.commit()
        started = time.perf_counter()
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table.select(cols), sink, pacsv.WriteOptions(include_header=False))
        with cur.copy(f"COPY bench_decisions ({', '.join(cols)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(sink.getvalue().to_pybytes())
        conn.commit()
        copy_s = time.perf_counter() - started
        cur.execute("SELECT count(*) FROM bench_decisions")
        rows = cur.fetchone()[0]
        cur.execute("CREATE INDEX ON bench_decisions (subject_id, item_id)")
        conn.commit()
        probes = table.select(["subject_id", "item_id"]).take(list(range(0, table.num_rows, max(1, table.num_rows // 7)))[:7]).to_pylist()
        times = []
        for row in probes:
            t = time.perf_counter()
            cur.execute("SELECT * FROM bench_decisions WHERE subject_id = %s AND item_id = %s ORDER BY ts DESC LIMIT 1",
                        (row["subject_id"], row["item_id"]))
            cur.fetchall()
            times.append((time.perf_counter() - t) * 1000)
    conn.close()
    if rows != table.num_rows:
        raise RuntimeError(f"COPY loaded {rows} of {table.num_rows} rows")
    return {"postgres_copy_per_s": round(rows / copy_s), "postgres_rows": rows,
            "postgres_indexed_lookup_ms": round(statistics.median(times), 3)}


def _hash_rates(text: pa.Array) -> dict[str, Any]:
    """SHA-256 messages per second, native batch hasher beside hashlib (one message per call, the
    previous implementation) on the same inputs in the same run: record JSON (~500 bytes),
    RFC 9162 leaves (33 bytes) and nodes (65 bytes). Single thread, wall clock, best of 3."""
    import hashlib

    from assay.trace import hashing

    arr = text.cast(pa.binary())
    n = len(arr)
    record_hashes = hashing.sha256_each(arr)
    pairs = record_hashes[: n // 2 * 64]
    view = memoryview(record_hashes)
    values = arr.to_pylist()
    sha = hashlib.sha256

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    def native(fn, data, count):
        # one thread, as hashlib: the ratio is per core
        return round(count / best(lambda: fn(data)))

    from assay.trace import _native

    _, offsets, data = arr.buffers()
    out: dict[str, Any] = {"record_bytes_mean": round(len(data or b"") / max(n, 1))}
    out["hashlib_record_per_s"] = round(n / best(lambda: [sha(v).digest() for v in values]))
    out["hashlib_leaf_per_s"] = round(n / best(lambda: [sha(b"\x00" + view[i : i + 32]).digest() for i in range(0, 32 * n, 32)]))
    out["hashlib_node_per_s"] = round(n // 2 / best(lambda: [sha(b"\x01" + view[i : i + 64]).digest() for i in range(0, len(pairs), 64)]))
    # The hand-written SHA-NI path (two messages side by side) beside OpenSSL's SHA-256 in the
    # same extension: the measured reason the SHA-NI code is kept (see _native.c, docs/trace.md).
    saved = _native.accelerated()
    try:
        for path, flag in (("native", saved), ("openssl", False)):
            _native.accelerated(flag)
            out[f"{path}_record_per_s"] = native(lambda d: _native.sha256_rows([(offsets, d, arr.offset)], n), data, n)
            out[f"{path}_leaf_per_s"] = native(_native.leaf_hashes, record_hashes, n)
            out[f"{path}_node_per_s"] = native(_native.node_hashes, pairs, n // 2)
    finally:
        _native.accelerated(saved)
    out["sha_ni"] = bool(saved)
    out["native_vs_hashlib"] = {k: round(out[f"native_{k}_per_s"] / out[f"hashlib_{k}_per_s"], 2)
                                for k in ("record", "leaf", "node")}
    out["native_vs_openssl"] = {k: round(out[f"native_{k}_per_s"] / out[f"openssl_{k}_per_s"], 2)
                                for k in ("record", "leaf", "node")}
    return out


def _why_times(log, items: list[str], subjects: list[str], picks) -> list[float]:
    times = []
    for k in picks:
        t = time.perf_counter()
        answer = log.why(items[k], subjects[k])
        times.append((time.perf_counter() - t) * 1000)
        if answer is None or answer["item_id"] != items[k]:
            raise RuntimeError("why query did not find a decision the benchmark wrote")
    return times


def _erase_one_subject(log, tables: list[pa.Table]) -> dict[str, Any]:
    """Erase the subject of a request a quarter into the appended decisions (the ``why`` probes
    are in the middle); timed whole (find, rewrite and fsync the segments, sign the event)."""
    subject = tables[len(tables) // 4].column("subject_id")[0].as_py()
    size = log.size
    started = time.perf_counter()
    result = log.erase(subject, "benchmark")
    seconds = time.perf_counter() - started
    if not result["erased"] or any(log.record(i)["item_id"] is not None for i in result["indices"][:5]):
        raise RuntimeError("the benchmark erasure did not erase")
    return {"erase_s_per_1m": round(seconds * 1_000_000 / size, 3), "erase_s": round(seconds, 3), "log_records": size,
            "erased_records": result["erased"], "files_rewritten": result["files_rewritten"]}


def _witness(tmp: Path, log):
    from assay.trace.witness import Witness

    witness = Witness.init(tmp / "witness", "bench.assay.local/witness")
    witness.add_log(log.verifier.vkey())
    return witness


def _cosign(log, witness) -> float:
    from assay.trace.witness import collect

    started = time.perf_counter()
    (result,) = collect(log, ["in-process"], [witness.verifier], post=lambda _url, body: witness.add_checkpoint(body))
    if not result.get("cosigned"):
        raise RuntimeError(f"the benchmark witness did not cosign: {result}")
    return (time.perf_counter() - started) * 1000


def _evict(root: str) -> None:
    """Drop this log's files from the OS page cache (POSIX_FADV_DONTNEED; nothing else is touched)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _side_by_side(tmp: Path, tables: list[pa.Table], threads: int | None) -> tuple[Any, dict[str, Any]]:
    """Append the same batches to two logs, one with ``threads=1`` (everything on the calling
    thread) and one with ``threads`` (default: the CPU count), after one untimed warm-up batch
    each, alternating which goes first on each batch so that both see the same load; then verify each twice (1, N, N, 1). Returns the
    multi-threaded log (still open) and the timings: wall, process CPU (all threads), per phase."""
    from assay.trace import TraceLog

    logs = {1: TraceLog.open(tmp / "log-1thread", threads=1), "n": TraceLog.open(tmp / "log", threads=threads)}
    # A writer's first append creates its segment and sizes its reusable encode buffer (tens of
    # MB faulted in once): appended untimed, as the guard bench warms up, so the figure is the
    # steady rate of a running writer.
    warm = synthetic_decisions(tables[0].num_rows, start=10**12)
    for log in logs.values():
        log.append_table(warm)
    wall = {1: 0.0, "n": 0.0}
    cpu = {1: 0.0, "n": 0.0}
    main = {1: 0.0, "n": 0.0}  # CPU of the calling thread alone
    for i, table in enumerate(tables):
        for key in ((1, "n") if i % 2 == 0 else ("n", 1)):
            started, c, m = time.perf_counter(), time.process_time(), time.thread_time()
            logs[key].append_table(table)
            wall[key] += time.perf_counter() - started
            cpu[key] += time.process_time() - c
            main[key] += time.thread_time() - m
    verify_wall: dict[Any, list[float]] = {1: [], "n": []}
    verify_cpu: dict[Any, list[float]] = {1: [], "n": []}
    verify_main: dict[Any, list[float]] = {1: [], "n": []}
    for key in (1, "n", "n", 1):
        started, c, m = time.perf_counter(), time.process_time(), time.thread_time()
        report = logs[key].verify()
        verify_wall[key].append(time.perf_counter() - started)
        verify_cpu[key].append(time.process_time() - c)
        verify_main[key].append(time.thread_time() - m)
        if not report.ok:
            raise RuntimeError(f"benchmark log failed verification: {report.problems[:3]}")
    same = logs[1].root_hash() == logs["n"].root_hash()
    logs[1].close()
    if not same:
        raise RuntimeError("the single-threaded and the multi-threaded log differ")
    n = sum(t.num_rows for t in tables)
    out = {"threads": logs["n"].threads, "same_root": same}
    for key, suffix in ((1, "_1thread"), ("n", "")):
        out[f"append_wall_s{suffix}"] = wall[key]
        out[f"append_cpu_s{suffix}"] = cpu[key]
        out[f"append_main_cpu_s{suffix}"] = main[key]
        # verify: the faster of two runs (wall), with the CPU of that run
        k = int(np.argmin(verify_wall[key]))
        out[f"verify_wall_s{suffix}"] = verify_wall[key][k]
        out[f"verify_cpu_s{suffix}"] = verify_cpu[key][k]
        out[f"verify_main_cpu_s{suffix}"] = verify_main[key][k]
    out["records"] = n
    out["verified_records"] = logs["n"].size  # the warm-up batch is verified too
    return logs["n"], out


def run(quick: bool = False, threads: int | None = None) -> BenchResult:
    from assay.trace import TraceLog

    load_before = os.getloadavg()[0]
    n_append = 20_000 if quick else 1_000_000
    batch = 5_000 if quick else 100_000
    n_why = n_append if quick else 10_000_000
    n_pg = 5_000 if quick else 100_000
    with tempfile.TemporaryDirectory(prefix="assay-bench-trace-") as tmp:
        old_home = os.environ.get("ASSAY_HOME")
        os.environ["ASSAY_HOME"] = str(Path(tmp) / "home")
        try:
            tables = [synthetic_decisions(batch, start=s) for s in range(0, n_append, batch)]
            # Where the time goes, on one batch.
            scratch = TraceLog.open(Path(tmp) / "scratch")
            sample = scratch._prepare_decisions(canonical.normalise_decision_table(tables[0]))
            scratch.close()
            t = time.perf_counter()
            text = canonical.canonical_decisions(sample)
            canon_s = time.perf_counter() - t
            t = time.perf_counter()
            canonical.decision_hashes(sample)
            pieces_hash_s = time.perf_counter() - t
            hashing_detail = _hash_rates(text)

            log, timed = _side_by_side(Path(tmp), tables, threads)
            append_s, append_cpu = timed["append_wall_s"], timed["append_cpu_s"]
            verify_s, verify_cpu = timed["verify_wall_s"], timed["verify_cpu_s"]
            load_after = os.getloadavg()[0]

            erase_detail = _erase_one_subject(log, tables)
            # Grow to the why-query size (not timed as append: generation dominates); a witness
            # cosigns each new checkpoint on the way (its consistency proof checked each time).
            witness = _witness(Path(tmp), log)
            cosign_ms: list[float] = []
            for start in range(n_append, n_why, batch):
                log.append_table(synthetic_decisions(batch, start=start))
                cosign_ms.append(_cosign(log, witness))
            if not cosign_ms:  # --quick: no growth; cosign a few new checkpoints
                for k in range(5):
                    log.append_table(synthetic_decisions(1_000, start=n_append + k * 1_000))
                    cosign_ms.append(_cosign(log, witness))
            probe = synthetic_decisions(batch, start=(n_why // 2) // batch * batch).slice(batch // 2, 50)
            subjects = probe.column("subject_id").to_pylist()
            items = probe.column("item_id").to_pylist()
            t = time.perf_counter()
            log.why(items[0], subjects[0])  # builds (and persists) each segment's item index once
            why_first_ms = (time.perf_counter() - t) * 1000
            why_ms = _why_times(log, items, subjects, range(1, 50, 7))
            # Cold: the log's files dropped from the page cache (only this benchmark's files), as
            # after a restart on a busy machine; the persisted item index is read back from disk.
            _evict(log.root)
            reader = TraceLog.open(log.root, read_only=True)
            why_cold_ms = _why_times(reader, items, subjects, range(2, 50, 7))
            reader.close()
            size = log.size
            log.close()
        finally:
            if old_home is None:
                os.environ.pop("ASSAY_HOME", None)
            else:
                os.environ["ASSAY_HOME"] = old_home
    baseline = _postgres_baseline(synthetic_decisions(n_pg, seed=99))
    figures = {
        "append_per_s": round(n_append / append_s),
        "verify_per_s": round(timed["verified_records"] / verify_s),
        "why_query_ms": round(statistics.median(why_ms), 2),
        "erase_s_per_1m": erase_detail["erase_s_per_1m"],
        "witness_cosign_ms": round(statistics.median(cosign_ms), 2),
    }
    single = {
        "append_per_s_1thread": round(n_append / timed["append_wall_s_1thread"]),
        "verify_per_s_1thread": round(timed["verified_records"] / timed["verify_wall_s_1thread"]),
        "append_per_cpu_s_1thread": round(n_append / timed["append_cpu_s_1thread"]),
        "verify_per_cpu_s_1thread": round(timed["verified_records"] / timed["verify_cpu_s_1thread"]),
    }
    pg = baseline.get("postgres_copy_per_s")
    figures.update({
        "append_vs_postgres_copy": round(figures["append_per_s"] / pg, 2) if pg else None,
        # the same batches, same run, interleaved: threads=N over threads=1
        "append_threads_vs_1thread": round(figures["append_per_s"] / single["append_per_s_1thread"], 2),
        "verify_threads_vs_1thread": round(figures["verify_per_s"] / single["verify_per_s_1thread"], 2),
    })
    return BenchResult(
        figures=figures,
        baseline={"postgres_copy_per_s": pg, "postgres_indexed_lookup_ms": baseline.get("postgres_indexed_lookup_ms")},
        units={"append_per_s": "records/s", "verify_per_s": "records/s", "why_query_ms": "ms", "erase_s_per_1m": "s",
               "witness_cosign_ms": "ms", "append_vs_postgres_copy": "x", "append_threads_vs_1thread": "x",
               "verify_threads_vs_1thread": "x", "postgres_copy_per_s": "records/s", "postgres_indexed_lookup_ms": "ms"},
        targets={"append_per_s": at_least(1_000_000), "verify_per_s": at_least(1_000_000),
                 "why_query_ms": at_most(100, when=f"{n_why:,}-record log")},
        measures={
            "append_per_s": "canonicalise + hash + Merkle + fsync + signed checkpoint per batch, wall clock",
            "verify_per_s": "full verification of every record, checkpoint and signature, wall clock",
            "why_query_ms": "the why query for one (item, subject), median of several lookups",
            "append_vs_postgres_copy": "append_per_s ÷ PostgreSQL COPY of the same decisions (no hashing or signing); "
                                       "above 1 the log is ahead",
            "postgres_copy_per_s": "the ten scalar columns as CSV through one COPY ... FROM STDIN, committed",
        },
        detail={
            "postgres": {k: v for k, v in baseline.items() if k not in ("postgres_copy_per_s", "postgres_indexed_lookup_ms")},
            # Erasure: one subject (~50 decisions in one request) out of the ~1.1M-record log
            # (figures: seconds scaled to 1M records); the segments holding them are rewritten
            # whole and fsynced, then the erasure event is signed.
            "erase": erase_detail,
            # Witness: after each growth batch, the log's consistency proof from the size the
            # witness last cosigned to the new checkpoint, the witness's checks (log signature,
            # proof, state fsynced) and cosignature, and the log verifying and storing it; in one
            # process (no HTTP). Median over the checkpoints.
            "witness_cosign_ms_p90": round(float(np.percentile(cosign_ms, 90)), 2), "witness_cosignatures": len(cosign_ms),
            "append_records": n_append, "batch": batch, "why_log_size": size,
            "why_first_query_ms": round(why_first_ms, 1), "why_cold_cache_ms": round(statistics.median(why_cold_ms), 2),
            # One batch: the RFC 8785 JSON built as strings (what a proof shows), and the record
            # hashes as append computes them (column pieces hashed natively, JSON never joined).
            "canonicalise_per_s": round(batch / canon_s), "record_hashes_per_s": round(batch / pieces_hash_s),
            "hashing": hashing_detail,
            # The same append and verify with the batch hasher switched off (hashlib, one message
            # per call: what the log used before the extension), on the first batches, same run.
            # Per CPU-second of this process (all its threads): what the work costs, independent of
            # how many other processes share the machine; the figures above are wall-clock.
            "append_per_cpu_s": round(n_append / append_cpu), "verify_per_cpu_s": round(timed["verified_records"] / verify_cpu),
            # threads=1 beside it: the same batches, appended alternately with the figures above
            # (so both saw the same load), and verified alternately (the faster of two runs each)
            "threads": timed["threads"], **single,
            # What idle cores would allow at most: wall time is at least the calling thread's CPU
            # time and at least the process CPU time over the threads, so N / max(...) bounds the
            # rate from above. An estimate from CPU times (this box's cores are shared), not a run.
            "append_idle_cores_bound_per_s": round(n_append / max(timed["append_main_cpu_s"], append_cpu / timed["threads"])),
            "verify_idle_cores_bound_per_s": round(timed["verified_records"] / max(timed["verify_main_cpu_s"], verify_cpu / timed["threads"])),
            "append_calling_thread_cpu_share": round(timed["append_main_cpu_s"] / append_cpu, 2),
            "verify_calling_thread_cpu_share": round(timed["verify_main_cpu_s"] / verify_cpu, 2),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "load_average_1m_before_after_append_verify": [round(load_before, 1), round(load_after, 1)],
            "checkpoint": "signed after every batch", "fsync": "per batch", "cpus": os.cpu_count(),
        },
    )
