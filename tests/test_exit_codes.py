"""Exit codes as the README documents them (issue 27, item 4): a dependency that is down is exit 3
with one line naming it, whichever library raised it; an install hint names an extra that exists
and installs the missing module. Every dependency here is really unreachable (a closed port)."""

from __future__ import annotations

import ast
import re
import socket
import tomllib
from pathlib import Path

import pytest

from assay.errors import EXIT_UNAVAILABLE, Unavailable, dependency_down

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_redis_that_is_down_is_one_unavailable_line() -> None:
    import redis

    client = redis.Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=1)
    with pytest.raises(redis.exceptions.ConnectionError) as e:
        client.ping()
    down = dependency_down(e.value)
    assert isinstance(down, Unavailable) and down.exit_code == EXIT_UNAVAILABLE
    assert down.message.startswith("Redis is unreachable:") and "\n" not in down.message, down.message


def test_a_server_that_is_down_is_named_with_its_address() -> None:
    import httpx

    url = f"http://127.0.0.1:{closed_port()}/v1/models"
    with pytest.raises(httpx.ConnectError) as e:
        httpx.get(url, timeout=2)
    down = dependency_down(e.value)
    assert down is not None and url in down.message and "\n" not in down.message, down.message


def test_a_refused_socket_is_a_dependency_down_and_other_errors_are_not() -> None:
    with pytest.raises(ConnectionRefusedError) as e:
        socket.create_connection(("127.0.0.1", closed_port()), timeout=2)
    assert dependency_down(e.value) is not None
    try:
        raise RuntimeError("wrapped") from e.value
    except RuntimeError as wrapped:  # what a library wraps is still found through its cause
        assert dependency_down(wrapped) is not None
    assert dependency_down(ValueError("a bug, not an outage")) is None
    assert dependency_down(KeyError("x")) is None
    assert dependency_down(BrokenPipeError(32, "Broken pipe")) is None  # `assay ... | head` closed our stdout


def test_install_hints_name_an_extra_that_installs_the_module() -> None:
    """Every ``require_extra(module, extra)`` names an extra of pyproject.toml that lists the
    module's distribution (a hint that names the wrong extra sends a newcomer in a circle)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    distributions = {"confluent_kafka": "confluent-kafka", "ray": "ray", "numba": "numba", "torch": "torch",
                     "transformers": "transformers", "schemathesis": "schemathesis"}

    def expand(extra: str, seen: frozenset = frozenset()) -> set[str]:
        names = set()
        for req in extras[extra]:
            name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower()
            if name == "assay":
                for inner in re.search(r"\[(.*)\]", req).group(1).split(","):
                    if inner not in seen:
                        names |= expand(inner.strip(), seen | {extra})
            else:
                names.add(name)
        return names

    calls = []
    for path in (ROOT / "src" / "assay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "require_extra" \
                    and len(node.args) == 2 and all(isinstance(a, ast.Constant) for a in node.args):
                calls.append((path.name, node.args[0].value, node.args[1].value))
    assert any(module == "ray" for _, module, _ in calls)
    for where, module, extra in calls:
        assert extra in extras, f"{where}: require_extra({module!r}, {extra!r}) names no extra of pyproject.toml"
        if module.startswith("assay"):
            continue
        assert distributions[module] in expand(extra), f"{where}: assay[{extra}] does not install {module}"


def run_cli(*args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "assay.cli.main", *args], capture_output=True, text=True, env=env, timeout=300)


def error_lines(rc) -> list[str]:
    assert "Traceback" not in rc.stderr, rc.stderr
    return [line for line in rc.stderr.splitlines() if line.startswith("error:")]


def test_a_model_server_that_is_down_is_exit_3_naming_it() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    rc = run_cli("eval", "run", "safety-advbench", "--target-url", url, "--model", "m", "--limit", "2")
    assert rc.returncode == 3, (rc.stdout, rc.stderr)
    (line,) = error_lines(rc)
    assert url in line and "unreachable" in line, line


def test_the_monitor_on_a_redis_that_is_down_is_exit_3_naming_it() -> None:
    port = closed_port()
    rc = run_cli("monitor", "run", "--bundle", str(ROOT / "src" / "assay" / "policy" / "examples" / "feed.yaml"),
                 "--redis", f"redis://127.0.0.1:{port}/0", "--max-steps", "1", "--no-trace")
    assert rc.returncode == 3, (rc.stdout, rc.stderr)
    (line,) = error_lines(rc)
    assert "Redis" in line and f"127.0.0.1:{port}" in line, line


def test_python_dash_m_assay_is_the_same_command_line() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    ok = subprocess.run([sys.executable, "-m", "assay", "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip(), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "assay", "no-such-command"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "no-such-command" in bad.stderr


def test_an_error_naming_a_path_with_brackets_prints_the_path_as_it_is(tmp_path, capsys) -> None:
    """The error line is printed as text, not as rich markup: a probe's policy path holding
    ``[/x]`` was a MarkupError traceback (exit 1), and one holding ``[bold]`` lost those characters
    from the path the message names."""
    from assay.cli.main import main

    for name in ("we[/ird]", "br[bold]x"):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        missing = folder / "bundle.yaml"
        assert main(["policy", "check", str(missing)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and str(missing) in err.replace("\n", ""), err
