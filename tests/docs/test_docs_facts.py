"""Facts the docs state in prose, held to the code that decides them: defaults, names and
tables that a newcomer copies (issue #27 found each of these stated wrongly)."""

from __future__ import annotations

import re

from docpages import ROOT

DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _option_default(command: list[str], option: str):
    import typer
    from cli_tree import resolve

    from assay.cli.main import app

    cmd, path, _ = resolve(typer.main.get_command(app), command)
    assert path[1:] == command, f"no command assay {' '.join(command)}"
    for p in cmd.params:
        if option in getattr(p, "opts", ()):
            return p.default
    raise AssertionError(f"assay {' '.join(command)} has no {option}")


def test_the_dashboard_address_is_the_servers_default_port():
    port = _option_default(["server"], "--port")
    for page in ("dashboard.md", "demo.md"):
        addresses = re.findall(r"http://127\.0\.0\.1:(\d+)/ui/", _page(page))
        assert addresses and all(int(a) == port for a in addresses), f"{page}: {addresses}, server default {port}"


def test_the_ranker_the_recsys_page_describes_is_the_one_trained():
    from assay.recsys.model import TrainConfig

    m = re.search(r"LambdaMART\*\* \(`objective=lambdarank`, (\d+) rounds, (\d+) leaves, depth ≤ (\d+)\)", _page("recsys.md"))
    assert m, "recsys.md no longer states the ranker's sizes in the form this test reads"
    rounds, leaves, depth = map(int, m.groups())
    config = TrainConfig()
    assert (rounds, leaves, depth) == (config.rounds, config.num_leaves, config.max_depth)
    # `assay recsys train` trains with TrainConfig's rounds unless told otherwise (it used to say 150)
    assert _option_default(["recsys", "train"], "--rounds") in (None, config.rounds)


def test_the_dpo_row_marked_default_uses_the_defaults():
    lr = _option_default(["mitigate", "finetune"], "--dpo-lr")
    pairs = _option_default(["mitigate", "finetune"], "--dpo-pairs")
    steps = _option_default(["mitigate", "finetune"], "--dpo-steps")
    rows = [line for line in _page("mitigate.md").splitlines() if line.startswith("| + DPO") and "default" in line]
    assert len(rows) == 1, rows
    row = rows[0]
    assert f"{lr:.0e}".replace("e-0", "e-") in row and f"{pairs} pairs" in row, (row, lr, pairs)
    assert "`--dpo-steps` default" not in row or steps != 0, f"the row calls itself the --dpo-steps default, which is {steps}"
    assert steps == 0 and "`--dpo-steps` is 0" in _page("mitigate.md").replace("\n", " ")


def test_the_error_body_is_the_shape_the_docs_give():
    from fastapi.testclient import TestClient

    from assay.govern.registry import Actor
    from assay.server.app import create_app
    from assay.server.auth import create_token
    from assay.store import open_store

    store = open_store()
    try:
        client = TestClient(create_app(store))
        auth = {"Authorization": "Bearer " + create_token(store, Actor("docs", "admin", "test"), name="a", role="admin")["token"]}
        answers = [client.get("/api/v1/whoami"),                                      # 401: no token
                   client.post("/api/v1/datasets", json={"name": 5}, headers=auth),  # 400: several fields
                   client.get("/api/v1/assets/nope", headers=auth),                  # 404: unknown id
                   client.get("/api/v1/nothing", headers=auth),                      # 404: unknown route
                   client.delete("/api/v1/tokens", headers=auth),                    # 405
                   client.get("/v1/trace/why", headers=auth)]                        # 400 on a trace route
    finally:
        store.close()
    page = _page("govern.md").replace("\n", " ")
    m = re.search(r"Every error, from every route and from the app itself, is JSON `\{([^}]*)\}` \(plus `(\w+)`", page)
    assert m, "govern.md no longer states the error body in the form this test reads"
    documented = {k.strip().strip('"') for k in m.group(1).split(",")}
    for r in answers:
        body = r.json()
        assert r.status_code >= 400 and documented <= set(body) <= documented | {m.group(2)}, \
            f"govern.md says {sorted(documented)} (plus {m.group(2)}), {r.request.method} {r.request.url.path} answers {body}"
    assert any(m.group(2) in r.json() for r in answers), f"no answer carried `{m.group(2)}`"


def test_the_guards_error_body_is_the_shape_its_page_gives():
    from fastapi.testclient import TestClient

    from assay.guard.cli import DEFAULT_BUNDLE, build_guard
    from assay.guard.http import create_app

    client = TestClient(create_app(build_guard(DEFAULT_BUNDLE, None), access=None))
    bodies = [client.post("/v1/guard", content=b"{not json").json(), client.post("/v1/guard/feedback", json={}).json()]
    m = re.search(r"Every refusal is JSON `\{([^}]*)\}`", _page("guard.md"))
    assert m, "guard.md no longer states the guard's error body in the form this test reads"
    documented = {k.strip().strip('"') for k in m.group(1).split(",")}
    for body in bodies:
        assert set(body) == documented, f"guard.md says {sorted(documented)}, the guard answers {body}"


def test_the_demo_stages_and_step_locations_are_the_orchestrators():
    from assay.cli import demo

    page = _page("demo.md")
    for stage in demo.STAGES:
        m = re.search(rf"^\| {stage.number}/7 [^|]*\| ([^|]*) \|", page, re.M)
        assert m, f"demo.md has no row for stage {stage.number}/7"
        documented = re.findall(r"`([^`]+)`", m.group(1))
        actual = [e.split(".")[1] + (":" + e.split(":")[1] if ":" in e and not e.startswith("assay.cli.") else "")
                  if not e.startswith("assay.cli.") else e.split(":")[1] for e in stage.steps]
        assert documented == actual, f"stage {stage.number}: demo.md lists {documented}, the orchestrator runs {actual}"
    # where each step lives: the page names the exceptions to `step` in src/assay/<part>/demo.py
    for entry in demo.DEMO_STEPS:
        module, _, function = entry.partition(":")
        path = ROOT / "src" / (module.replace(".", "/") + ".py")
        assert path.is_file(), entry
        if function:
            assert f"`{function}` in `{path.relative_to(ROOT)}`" in page.replace("\n", " "), \
                f"demo.md does not say that {entry} is `{function}` in {path.relative_to(ROOT)}"


def test_the_files_the_demo_writes_are_where_the_steps_write_them():
    """demo.md's "What it writes where" table, against the paths the steps' code names."""
    page = _page("demo.md")
    table = page.split("## What it writes where", 1)[1].split("\n## ", 1)[0]
    paths = re.findall(r"^\| `([^`]+)` \|", table, re.M)
    assert len(paths) >= 8
    code = "\n".join(p.read_text() for p in (ROOT / "src" / "assay").rglob("*.py"))
    for path in paths:
        first = path.strip("/").split("/")[0].split("<")[0]
        assert re.search(rf"""["']{re.escape(first)}["']|/ "{re.escape(first)}""", code) or first in ("assay.db",), \
            f"demo.md says the demo writes {path}, but no step names {first!r}"


def test_the_checkpoint_files_mitigate_md_names_are_the_ones_written():
    import inspect

    from assay.mitigate import pipeline, train

    page = _page("mitigate.md").replace("\n", " ")
    m = re.search(r"renamed into place as `checkpoints/([a-z-]+)(\d+)/` \(([^)]*)\)", page)
    assert m, "mitigate.md no longer names the checkpoint files in the form this test reads"
    prefix, digits, files = m.group(1), m.group(2), re.findall(r"`([^`]+)`", m.group(3))
    assert prefix == train.CHECKPOINT_PREFIX and len(digits) == 6
    source = inspect.getsource(train.train_lora if hasattr(train, "train_lora") else train)
    assert 'run_dir / "checkpoints"' in source and "{step:06d}" in source
    for name in files:
        assert f'"{name}"' in source, f"mitigate.md names {name}, which the trainer does not write"
    assert f"the newest {['zero', 'one', 'two', 'three'][train.TrainConfig().keep_checkpoints]} are kept" in page
    assert str(pipeline.runs_root()).endswith("mitigate/runs") and "`ASSAY_HOME/mitigate/runs/RUN/`" in page
    assert 'run_dir / "dpo"' in inspect.getsource(pipeline) and "`RUN/dpo/checkpoint-N`" in page


def test_every_setting_the_docs_name_is_read_by_the_code():
    from docpages import PAGES

    # the code, and the tests (a test's own knob, such as ASSAY_FUZZ_CASES, is read there)
    code = "\n".join(p.read_text(encoding="utf-8") for d in ("src", "tests") for p in (ROOT / d).rglob("*.py")
                     if "tests/docs" not in p.as_posix())
    named = {(page.name, name) for page in PAGES for name in re.findall(r"\bASSAY_[A-Z0-9_]+\b", page.read_text(encoding="utf-8"))}
    missing = sorted(f"{page}: {name}" for page, name in named if f'"{name}"' not in code and f"'{name}'" not in code)
    assert not missing, "settings the docs name that no code reads:\n" + "\n".join(missing)
