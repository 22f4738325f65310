"""``assay monitor run --serve`` as a real process on the real Redis: it serves, the surge alert
trips the breaker of its own guard, and SIGTERM stops it cleanly with its stats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from assay.guard.stream import encode_request

pytestmark = pytest.mark.redis

BUNDLE = """\
bundle: run-cli
version: "1"
attributes:
  rules:
    item.labels.toxic: double
  alerts:
    window.n: int
    window.drop_rate: double
rules:
  - id: toxic-drop
    surface: [for_you]
    when: item.labels.toxic >= 0.8
    action: drop
alerts:
  - id: drop-surge
    when: window.n >= 20 && window.drop_rate > 0.5
    severity: page
    then: ['trip_breaker("for_you")']
"""


def test_monitor_run_serves_alerts_and_stops_on_sigterm(redis_url, tmp_path, assay_home):
    (tmp_path / "b.yaml").write_text(BUNDLE)
    ids = [f"ok-{i}" for i in range(5)] + [f"bad-{i}" for i in range(5)]
    pq.write_table(pa.table({"item_id": ids, "toxic": [0.1] * 5 + [0.99] * 5}), tmp_path / "labels.parquet")
    env = {**os.environ, "ASSAY_HOME": str(assay_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "assay.cli.main", "monitor", "run", "-b", str(tmp_path / "b.yaml"), "--redis", redis_url,
         "--serve", "--labels", str(tmp_path / "labels.parquet"), "--input", "mr:in", "--output", "mr:out",
         "--window-s", "3600", "--window-n", "20", "--poll-s", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    client = redis.Redis.from_url(redis_url)
    try:
        rng = np.random.default_rng(0)
        for k in range(4):  # 90% toxic candidates -> 90% dropped
            client.xadd("mr:in", {"data": encode_request(
                {"request_id": f"r{k}", "surface": "for_you", "user": {"id": f"u{k}"}, "deadline_ms": 60_000},
                {"id": np.array(ids[4:], dtype=object), "score": rng.random(6)})})
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and client.xlen("mr:out") < 4:
            time.sleep(0.2)
        assert client.xlen("mr:out") == 4
        time.sleep(1.5)  # a few polls of the output stream
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        client.close()
    assert proc.returncode == 0, err
    assert "ALERT drop-surge (page) on for_you: trip_breaker('for_you') -> ok" in out
    stats = json.loads(err.strip().splitlines()[-1])
    assert stats["stopped_by"] == "SIGTERM" and stats["alerts"] == 1 and stats["records"] >= 24
