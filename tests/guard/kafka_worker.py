"""A guard worker process for the Kafka tests: the real worker and transport, with one test-only
addition: when the file named by ``--pause-file`` exists, the next batch stops at the named point
(``before-write``: decided, nothing produced; ``after-write``: slates delivered and marked done,
offsets not yet committed), writes its request ids to ``--paused-file`` and waits to be killed.

    python kafka_worker.py BOOTSTRAP IN OUT GROUP NAME BUNDLE LABELS REDIS_URL [--pause-file F --paused-file G --pause-at P]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from assay.guard.cli import build_guard
from assay.guard.stream import KafkaTransport, RedisDedupe, StreamWorker

FAST_GROUP = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300}


class PausingTransport(KafkaTransport):
    pause_file = paused_file = pause_at = None

    def _maybe_pause(self, point: str, writes) -> None:
        if writes and self.pause_at == point and self.pause_file and os.path.exists(self.pause_file):
            with open(self.paused_file, "w") as fh:
                json.dump([rid for _, rid, _ in writes], fh)
            while True:  # killed here, mid-batch
                time.sleep(1)

    def write_and_ack_many(self, writes, acks=()):
        self._maybe_pause("before-write", writes)
        super().write_and_ack_many(writes, acks)
        self._maybe_pause("after-write", writes)


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("bootstrap", "input", "output", "group", "name", "bundle", "labels", "redis"):
        p.add_argument(name)
    p.add_argument("--pause-file")
    p.add_argument("--paused-file")
    p.add_argument("--pause-at", choices=["before-write", "after-write"])
    p.add_argument("--idle-exit", type=float, default=None)
    a = p.parse_args()
    guard = build_guard(a.bundle, a.labels, deadline_ms=60_000)
    t = PausingTransport(a.bootstrap, input_topic=a.input, output_topic=a.output, group=a.group, consumer=a.name,
                         dedupe=RedisDedupe(a.redis, prefix=f"{a.group}:done:"), extra_config=FAST_GROUP)
    t.pause_file, t.paused_file, t.pause_at = a.pause_file, a.paused_file, a.pause_at
    worker = StreamWorker(guard, t, count=16, block_ms=50, decisions_in_output=True,
                          on_status=lambda line: print(f"worker {a.name}: {line}", file=sys.stderr, flush=True))
    print("ready", flush=True)
    try:
        n = worker.run(idle_exit_s=a.idle_exit)
    finally:
        t.close()
    print(json.dumps({"handled": n, **worker.stats.__dict__}), flush=True)


if __name__ == "__main__":
    main()
