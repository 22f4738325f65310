"""A control plane on a fresh store, with one token per role."""

from __future__ import annotations

import pytest

from assay.govern.registry import Actor
from assay.server.app import create_app
from assay.server.auth import create_token
from assay.store import open_store

ROOT_ACTOR = Actor("root", "admin", "test")


@pytest.fixture(params=["sqlite", "postgres"])
def api(request, assay_home, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("ASSAY_DATA_ROOTS", str(tmp_path))  # the files tests register over HTTP live here

    store = open_store(None if request.param == "sqlite" else request.getfixturevalue("pg_url"))
    app = create_app(store)
    tokens = {}
    for name, role in [("vera", "viewer"), ("erin", "engineer"), ("alice", "approver"), ("bob", "approver"),
                       ("adam", "admin")]:
        tokens[name] = create_token(store, ROOT_ACTOR, name=name, role=role)["token"]
    client = TestClient(app)
    client.tokens = tokens
    client.store = store
    client.app_ = app

    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[name]}"}

    client.headers_for = auth
    yield client
    client.close()
    store.close()


class LiveServer:
    """`assay server` (or another script) in its own process on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], port: int, log_path):
        import subprocess
        import sys

        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> LiveServer:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def spawn_server(assay_home, tmp_path, free_port):
    """``spawn_server(lambda port: [python args...], **env)`` -> a ready LiveServer, killed at teardown."""
    import os

    started: list[LiveServer] = []

    def start(args, **env: str) -> LiveServer:
        port = free_port()
        environment = {**os.environ, "ASSAY_HOME": str(assay_home), "ASSAY_DATA_ROOTS": str(tmp_path), **env}
        server = LiveServer(args(port), environment, port, tmp_path / f"server-{port}.log")
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_server(spawn_server):
    """``live_server(db_url, *args)``: `assay server` on that store, ready."""
    return lambda db_url, *args: spawn_server(
        lambda port: ["-m", "assay.cli.main", "server", "--port", str(port), "--db-url", db_url, *args])
