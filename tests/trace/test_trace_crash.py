"""Crash safety: a writer is killed with SIGKILL at random points; every record it acknowledged
must survive, nothing it did not get signed may be signed by the next writer (it is quarantined),
and the log must verify after recovery. 20 kills by default, 120 under -m slow."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
from trace_helpers import make_decisions

from assay.trace import TraceLog
from assay.trace import log as trace_log


def _writer(root: str, home: str, ack_fd: int, seed: int) -> None:
    """Append batches forever; after each acknowledged append write the new size to the pipe."""
    os.environ["ASSAY_HOME"] = home
    # About half the batches take the path that writes the segment and the tree in parallel.
    trace_log.OVERLAP_MIN_ROWS = 200
    rng = random.Random(seed)
    log = TraceLog.open(root, segment_records=200)
    while True:
        start = log.size
        result = log.append(make_decisions(rng.randint(1, 400), start=start))
        os.write(ack_fd, f"{result.tree_size}\n".encode())


def _crash_runs(tmp_path: Path, runs: int) -> dict:
    home = tmp_path / "home"
    root = tmp_path / "log"
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1234)
    recovered = 0
    for run in range(runs):
        read_fd, write_fd = os.pipe()
        child = ctx.Process(target=_writer, args=(str(root), str(home), write_fd, run), daemon=True)
        child.start()
        os.close(write_fd)
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        acks = b""
        while chunk := os.read(read_fd, 65536):
            acks += chunk
        os.close(read_fd)
        acked = int(acks.split()[-1]) if acks.split() else 0
        os.environ["ASSAY_HOME"] = str(home)
        notes = sorted((root / "checkpoints").glob("*.note"))
        signed = int(notes[-1].name[:20]) if notes else 0
        with TraceLog.open(root, segment_records=200) as log:
            assert not log.problems, f"run {run}: {log.problems}"
            recovered += bool(log.recovery)
            assert log.size >= acked, f"run {run}: {acked} records acknowledged but only {log.size} survived"
            # The reopening writer signed nothing it found: only what was signed before, plus its own event.
            assert log.size == signed + bool(log.recovery), f"run {run}: signed {signed}, reopened at {log.size}"
            table = log.table(["index", "type", "request_id"])
            for index, kind, request_id in zip(*(table.column(c).to_pylist() for c in ("index", "type", "request_id")), strict=True):
                # Each decision's request id names the log position it was written at: nothing
                # acknowledged was lost, reordered or duplicated.
                if kind == "decision":
                    assert request_id == f"r{index}", f"run {run}: index {index} holds {request_id}"
            report = log.verify()
            assert report.ok, f"run {run}: {report.problems}"
    return {"runs": runs, "recovered_partial_batches": recovered}


def test_sigkill_at_random_points(tmp_path) -> None:
    result = _crash_runs(tmp_path, 20)
    print(result)
    assert result["runs"] == 20


@pytest.mark.slow
def test_sigkill_at_random_points_many(tmp_path) -> None:
    result = _crash_runs(tmp_path, 120)
    assert result["runs"] == 120
