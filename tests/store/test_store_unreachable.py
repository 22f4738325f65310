"""A database server that cannot be reached is exit 3 with one line naming it (issue 27, item 4),
wherever the first connection is made: ``db current``, ``db upgrade``, any command that opens the
store. The server here is really unreachable: a loopback port where nothing listens."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from assay.errors import Unavailable
from assay.store import make_engine, open_store

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "assay.cli.main", *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("command", [["db", "current"], ["db", "upgrade"], ["lineage", "show", "--all"]])
def test_an_unreachable_postgresql_is_exit_3_with_one_line(command) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    args = [*command, "--url", url] if command[0] == "db" else command
    rc = run_cli(*args, env={"ASSAY_DB_URL": url})
    assert rc.returncode == 3, (rc.returncode, rc.stdout, rc.stderr)
    lines = [line for line in rc.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: cannot reach the database at postgresql+psycopg://postgres@127.0.0.1:")
    assert "Traceback" not in rc.stderr and len(lines) <= 2, rc.stderr  # the line and its hint


def test_the_engine_says_unavailable_not_a_driver_error() -> None:
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
    with pytest.raises(Unavailable, match="cannot reach the database"), engine.connect():
        pass
    with pytest.raises(Unavailable, match="cannot reach the database"):
        open_store(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")


def test_a_reachable_postgresql_still_connects(pg_url) -> None:
    store = open_store(pg_url)
    assert store.revision()
    store.close()


def test_a_bad_database_url_or_home_is_exit_2_naming_it(tmp_path) -> None:
    """A setting that cannot work is bad input (exit 2) saying which, not a traceback: a probe's
    ASSAY_DB_URL=garbage:// was SQLAlchemy's NoSuchModuleError, and an ASSAY_HOME under a file a
    NotADirectoryError from the store or from the folder of evaluation runs."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    rc = run_cli("token", "list", env={"ASSAY_DB_URL": "garbage://"})
    assert rc.returncode == 2 and "Traceback" not in rc.stderr and "garbage://" in rc.stderr, rc.stderr
    for command in (["token", "list"], ["eval", "list"]):
        rc = run_cli(*command, env={"ASSAY_HOME": str(a_file / "home"), "ASSAY_DB_URL": ""})
        assert rc.returncode == 2 and "Traceback" not in rc.stderr and "Not a directory" in rc.stderr, rc.stderr
        assert str(a_file) in rc.stderr
