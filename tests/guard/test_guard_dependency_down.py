"""The guard's commands with a dependency that is down at start: exit 3 and one line naming it
(issue 27, item 4; Kafka down at start: test_guard_kafka; a broker that goes away mid-run is
backed off from instead: test_guard_kafka, test_guard_stream). Nothing listens on the ports used here."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "assay.cli.main", *args], capture_output=True, text=True, env=env, timeout=60)


def one_line(rc: subprocess.CompletedProcess, *needles: str) -> None:
    assert rc.returncode == 3, (rc.returncode, rc.stdout, rc.stderr)
    lines = [line for line in rc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), rc.stderr


def test_worker_on_a_redis_that_is_down_exits_3_with_one_line(bundle_path) -> None:
    port = closed_port()
    started = time.monotonic()
    rc = run_cli("guard", "worker", "--redis", f"redis://127.0.0.1:{port}/0", "--bundle", str(bundle_path), "--idle-exit", "1")
    one_line(rc, "Redis", f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30



def test_apply_over_a_redis_label_store_that_is_down_exits_3_not_an_empty_answer(bundle_path, tmp_path) -> None:
    """The guard fails closed (every candidate dropped), as it must; the one-shot command then says
    that its answer came from a store that is down instead of printing an empty slate with exit 0."""
    port = closed_port()
    candidates = tmp_path / "c.json"
    candidates.write_text('{"id": ["a", "b"], "score": [0.9, 0.5]}')
    rc = run_cli("guard", "apply", str(candidates), "--request", '{"surface": "for_you", "user": {"id": "u1", "age": 30}}',
                 "--labels", f"redis://127.0.0.1:{port}/0", "--bundle", str(bundle_path))
    one_line(rc, f"redis://127.0.0.1:{port}/0", "failed closed", "2 of 2 candidates dropped")
    assert rc.stdout == ""
