"""``assay demo`` as a user runs it: a real subprocess on embedded defaults, in its own ASSAY_HOME.

The quick demo runs once per module (about two to three minutes on the shared box); the second
run, Ctrl-C and missing-extra tests reuse or start their own homes as they need.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ASSAY = Path(sys.executable).parent / "assay"
STAGE_HEADINGS = [
    "1/7  Register datasets and models",
    "2/7  Train the reference recommender",
    "3/7  Evaluate SmolLM2",
    "4/7  Release gates, approvals, deployment",
    "5/7  Replay MovieLens sessions through the guard",
    "6/7  Verify the decision trace",
    "7/7  One HTML assurance report",
]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        ASSAY_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        COLUMNS="400",
    )
    env.pop("ASSAY_DB_URL", None)
    env.update(extra)
    return env


def _demo(
    home: Path, *args: str, timeout: float = 420, **extra: str
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    out = subprocess.run([str(ASSAY), "demo", *args], env=_env(home, **extra), capture_output=True, text=True,
                         timeout=timeout)  # fmt: skip
    return out, time.perf_counter() - started


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    home = tmp_path_factory.mktemp("demo-quick") / "home"
    out, seconds = _demo(home, "--quick")
    return home, out, seconds


def test_quick_demo_tells_the_seven_stages_in_order(quick_run) -> None:
    home, out, _seconds = quick_run
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    positions = [out.stdout.find(h) for h in STAGE_HEADINGS]
    assert all(p >= 0 for p in positions), [
        h for h, p in zip(STAGE_HEADINGS, positions, strict=True) if p < 0
    ]
    assert positions == sorted(positions)
    assert "failed" not in re.findall(r"\d+ steps done.*", out.stdout)[-1]
    assert "http://127.0.0.1:8750/ui/" in out.stdout
    report = home / "reports" / "assurance.html"
    html = report.read_text(encoding="utf-8")
    # evidence, not narration: the verdict first, then the gates and the runs from their run logs
    assert html.index('id="headline"') < html.index('id="gates"') < html.index('id="runs"')
    assert "CLEARED" in html[html.index('id="headline"'):html.index("</h2>", html.index('id="headline"'))]
    assert '<svg class="intervals"' in html and "UNREADABLE" not in html
    for stage in ("1/7", "3/7", "6/7"):
        assert f"<td>{stage}</td>" in html  # how each stage's steps went
    record = json.loads((home / "demo" / "last-run.json").read_text())
    assert record["finished"] is True and record["quick"] is True
    assert not list(home.rglob(".assurance.html.*")), "a temporary report file was left behind"


def test_report_holds_no_dataset_text(quick_run) -> None:
    """No Do-Not-Answer question or recorded answer reaches the assurance report."""
    from assay.data import do_not_answer

    home, _out, _ = quick_run
    html = (home / "reports" / "assurance.html").read_text(encoding="utf-8")
    import html as html_lib

    text = html_lib.unescape(html)
    responses = do_not_answer.load_responses()
    assert responses
    leaked = [r.question for r in responses[:400] if len(r.question) > 25 and r.question in text]
    leaked += [
        r.response[:80] for r in responses[:400] if len(r.response) > 80 and r.response[:80] in text
    ]
    assert not leaked, leaked[:3]


def test_second_run_reuses_what_the_first_built(quick_run) -> None:
    home, first, first_s = quick_run
    assert first.returncode == 0
    second, second_s = _demo(home, "--quick")
    assert second.returncode == 0, second.stdout[-4000:]
    assert "a previous run here finished" in second.stdout
    assert "reusing" in second.stdout  # the recommender is loaded, not retrained
    assert "this one reused its work" in second.stdout
    assert second_s < first_s, (first_s, second_s)


def test_ctrl_c_exits_130_and_the_next_run_completes(tmp_path) -> None:
    home = tmp_path / "home"
    args = [
        str(ASSAY),
        "demo",
        "--quick",
        "--only",
        "policy",
        "--only",
        "govern",
        "--only",
        "trace",
    ]
    # unbuffered: each line reaches the reader when it is printed, so the Ctrl-C below lands in
    # the step that printed it (a pipe is otherwise block-buffered: lines come seconds late)
    proc = subprocess.Popen(
        args, env=_env(home, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "registered dataset:" in line:  # inside the governance step, before it trains
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(120), "".join(lines)
    # at once: the step's training takes seconds, but on a fast machine no longer (a fixed wait
    # could outlast the whole step)
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(120)
    reader.join(10)
    out = "".join(lines)
    assert rc == 130, out
    assert "stopped during govern" in out and "finished: policy" in out
    record = json.loads((home / "demo" / "last-run.json").read_text())
    assert record["finished"] is False
    assert [s["status"] for s in record["steps"]] == ["done", "interrupted"]
    assert not [p for p in home.rglob("*") if p.name.startswith(".last-run.json.")]

    again = subprocess.run(args, env=_env(home), capture_output=True, text=True, timeout=420)
    assert again.returncode == 0, again.stdout[-4000:]
    assert "was interrupted" in again.stdout
    assert "verify: OK" in again.stdout


BLOCKER = textwrap.dedent(
    """
    # Test shim: make the modules named in ASSAY_TEST_BLOCK really unimportable in this process.
    import os
    import sys

    _BLOCKED = {m for m in os.environ.get("ASSAY_TEST_BLOCK", "").split(",") if m}


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in _BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None


    sys.meta_path.insert(0, _Blocker())
    """
)


def test_missing_optional_module_names_the_extra_and_the_rest_continues(tmp_path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER)
    home = tmp_path / "home"
    pythonpath = os.pathsep.join(p for p in (str(shim), os.environ.get("PYTHONPATH", "")) if p)
    out, _ = _demo(home, "--quick", "--only", "policy", "--only", "govern", "--only", "trace",
                   PYTHONPATH=pythonpath, ASSAY_TEST_BLOCK="lightgbm")  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "lightgbm" in out.stdout
    assert "pip install 'assay[ml]'" in out.stdout
    assert "skipped govern" in out.stdout
    assert "verify: OK" in out.stdout  # the trace step after it still ran
    record = json.loads((home / "demo" / "last-run.json").read_text())
    assert {s["part"]: s["status"] for s in record["steps"]} == {
        "policy": "done",
        "govern": "skipped",
        "trace": "done",
    }


def test_install_hint_reads_the_extras_from_the_package_metadata() -> None:
    from assay.cli.demo import install_hint

    assert install_hint("lightgbm") == "pip install 'assay[ml]'"
    assert install_hint("llama_cpp.server") == "pip install 'assay[llm]'"
    assert install_hint("sklearn") == "pip install 'assay[ml]'"


def test_unknown_part_is_bad_input(tmp_path) -> None:
    out, _ = _demo(tmp_path / "home", "--only", "nosuchpart", timeout=120)
    assert out.returncode == 2
    assert "nosuchpart" in out.stderr


@pytest.mark.slow
def test_full_demo_end_to_end(tmp_path) -> None:
    home = tmp_path / "home"
    out, seconds = _demo(home, "--full", timeout=3600)
    assert out.returncode == 0, out.stdout[-6000:]
    for heading in STAGE_HEADINGS:
        assert heading in out.stdout
    assert (home / "reports" / "assurance.html").is_file()
    print(f"full demo took {seconds:.0f}s")


def test_a_ctrl_c_whose_keyboard_interrupt_was_dropped_still_stops_the_step(tmp_path, monkeypatch) -> None:
    """Python drops a KeyboardInterrupt raised while a finalizer or weakref callback runs; the
    demo's SIGINT handler also sets ctx.interrupted, so the step still ends as interrupted."""
    import io
    import types

    from rich.console import Console

    from assay.cli import demo

    monkeypatch.setenv("ASSAY_HOME", str(tmp_path))
    fake = types.ModuleType("assay.fake_demo_part")
    fake.TITLE = "a step whose Ctrl-C was swallowed"

    def step(ctx) -> None:
        ctx.interrupted = True  # what the handler leaves when its exception went nowhere

    fake.step, fake.quiet = step, lambda ctx: None
    monkeypatch.setitem(sys.modules, "assay.fake_demo_part", fake)
    ctx = demo.DemoContext(console=Console(file=io.StringIO()), settings=demo.settings())
    assert demo._run_step(ctx, demo.STAGES[0], "assay.fake_demo_part:quiet").status == "done"
    result = demo._run_step(ctx, demo.STAGES[0], "assay.fake_demo_part:step")
    assert result is not None and result.status == "interrupted" and result.note == "Ctrl-C"
