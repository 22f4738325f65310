"""Shared fixtures. Every test gets its own ASSAY_HOME; the real PostgreSQL and Redis on this
machine are used where a test asks for them (never a mock)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ASSAY_DATA_DIR", ROOT.parent / "shared" / "datasets")).resolve()
SPECS_DIR = ROOT.parent / "shared" / "specs"
PG_URL = os.environ.get("ASSAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ASSAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ASSAY_DATA_DIR", str(DATA_DIR))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """``free_port()`` -> a loopback port that nothing listened on a moment ago (for a child
    process that binds it itself; an app served in this process takes ``serve_asgi``)."""
    return _free_port


@contextmanager
def _serve_asgi(app, **config) -> Iterator[int]:
    import uvicorn

    sock = socket.socket()  # bound before the thread starts, so no other test can take the port
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", "access_log": False, **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start serving the test app")
            time.sleep(0.02)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def serve_asgi():
    """``with serve_asgi(app, **uvicorn_config) as port:`` -- the app under real uvicorn on a
    loopback port in a thread of the test process, as the services run it; stopped after."""
    return _serve_asgi


@pytest.fixture(autouse=True)
def assay_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "assay-home"
    monkeypatch.setenv("ASSAY_HOME", str(home))
    monkeypatch.delenv("ASSAY_DB_URL", raising=False)
    return home


@pytest.fixture
def data_dir() -> Path:
    assert DATA_DIR.is_dir(), f"shared datasets not found at {DATA_DIR}"
    return DATA_DIR


@pytest.fixture
def specs_dir() -> Path:
    assert SPECS_DIR.is_dir(), f"shared specs not found at {SPECS_DIR}"
    return SPECS_DIR


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL schema-less database URL on the machine's real server.

    Each test gets its own database, dropped afterwards, so tests never see each other's rows.
    """
    import sqlalchemy as sa

    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"assay_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture
def redis_url() -> str:
    """The machine's real Redis (database 15), flushed before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def typed_bench(capsys):
    """``typed_bench(name)`` runs ``assay bench NAME --json --quick`` through the CLI, checks the
    printed JSON is the typed result (numeric figures and baselines, a unit for each, numeric
    targets on reported figures, ``met`` per target agreeing with the figure) and returns it."""
    import json
    import math

    from assay.cli.main import main

    def run(name: str) -> dict:
        capsys.readouterr()
        assert main(["bench", name, "--json", "--quick"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert {"figures", "baseline", "units", "targets", "met", "measures", "detail"} <= set(out), sorted(out)
        assert out["benchmark"] == name and out["quick"] is True
        for kind in ("figures", "baseline"):
            for key, value in out[kind].items():
                assert value is None or (isinstance(value, int | float) and not isinstance(value, bool)), (kind, key, value)
                assert out["units"].get(key), f"no unit for {kind} {key!r}"
        assert set(out["met"]) == set(out["targets"]) and set(out["targets"]) <= set(out["figures"])
        for key, target in out["targets"].items():
            assert target["op"] in (">=", "<=") and isinstance(target["value"], int | float) and math.isfinite(target["value"]), (key, target)
            figure = out["figures"][key]
            expected = None if figure is None else (figure >= target["value"] if target["op"] == ">=" else figure <= target["value"])
            assert out["met"][key] is expected, (key, figure, target, out["met"][key])
        return out

    return run


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    """The system's headless Chromium (the Makefile installs it); a missing browser fails the test."""
    assert CHROMIUM, "chromium is not installed (the Makefile installs it: apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()
