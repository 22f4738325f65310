"""Every YAML example in the docs, and every bundle and suite shipped in the package, loads with
the loader that reads it in real use, and every bundle's own ``tests:`` pass.

- A page's policy fragments (YAML blocks whose top-level keys are bundle sections) together make
  one bundle, in page order (a section written twice is extended): docs/policy.md builds its
  example up that way. The bundle must load and its tests pass.
- An evaluation suite (``suite:``) is parsed by the evaluation engine's own suite parser, with the
  built-in suites' folder as its base (the gate bundle it names is shipped there).
- A judge spec (``name:`` + ``kind:``) is built by ``get_judge``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docpages import ROOT, all_blocks
from ruamel.yaml import YAML

SECTIONS = {"bundle", "version", "description", "requires_signature", "attributes", "rules", "gates", "purposes",
            "alerts", "tests"}
SHIPPED_BUNDLES = sorted(p for p in (ROOT / "src" / "assay").rglob("*.yaml")
                         if p.name.endswith("bundle.yaml") or p.parent.name == "examples" or p.name == "policy.yaml")
SHIPPED_SUITES = sorted((ROOT / "src" / "assay" / "evaluate" / "suites").glob("*.yaml"))
SHIPPED_SUITES = [p for p in SHIPPED_SUITES if p not in SHIPPED_BUNDLES]

YAML_BLOCKS = [b for b in all_blocks() if b.lang in ("yaml", "yml") and b.marker != "skip"]


def _load(text: str):
    return YAML(typ="safe").load(text)


def _page_bundles() -> dict[str, list]:
    out: dict[str, list] = {}
    for b in YAML_BLOCKS:
        doc = _load(b.text)
        if isinstance(doc, dict) and set(doc) <= SECTIONS:
            out.setdefault(b.page.name, []).append(b)
    return out


PAGE_BUNDLES = _page_bundles()


def _merge(blocks) -> dict:
    merged: dict = {}
    for b in blocks:
        for key, value in _load(b.text).items():
            if isinstance(value, list):
                merged.setdefault(key, []).extend(value)
            elif isinstance(value, dict):
                target = merged.setdefault(key, {})
                for k, v in value.items():
                    target[k] = {**target.get(k, {}), **v} if isinstance(v, dict) and isinstance(target.get(k), dict) else v
            else:
                merged[key] = value
    return merged


def _check_bundle(path: Path) -> None:
    from assay.policy import load_bundle
    from assay.policy.testing import run_tests

    bundle = load_bundle(path)
    failed = [f"{r.case.name}: {'; '.join(r.problems)}" for r in run_tests(bundle) if not r.passed]
    assert not failed, f"{path}: tests that fail:\n" + "\n".join(failed)
    return bundle


@pytest.mark.parametrize("page", sorted(PAGE_BUNDLES), ids=sorted(PAGE_BUNDLES))
def test_the_policy_examples_of_a_page_make_a_bundle_whose_tests_pass(page, tmp_path):
    import json

    blocks = PAGE_BUNDLES[page]
    path = tmp_path / "page.bundle.yaml"
    path.write_text(json.dumps(_merge(blocks)))  # JSON is YAML
    try:
        bundle = _check_bundle(path)
    except Exception as e:
        raise AssertionError(f"the YAML examples at {', '.join(b.where for b in blocks)} do not make a bundle: {e}") from e
    if page == "policy.md":  # the language reference exercises every section and has tests for each
        assert bundle.rules and bundle.gates and bundle.purposes and bundle.alerts
        assert {c.section for c in bundle.tests} == {"rules", "gates", "purposes", "alerts"}


@pytest.mark.parametrize("path", SHIPPED_BUNDLES, ids=[p.name for p in SHIPPED_BUNDLES])
def test_a_shipped_bundle_loads_and_its_tests_pass(path):
    bundle = _check_bundle(path)
    assert bundle.tests, f"{path} ships without tests"


@pytest.mark.parametrize("path", SHIPPED_SUITES, ids=[p.name for p in SHIPPED_SUITES])
def test_a_shipped_suite_parses(path):
    from assay.evaluate.suite import parse_suite

    parse_suite(path.read_text(encoding="utf-8"), str(path), path.parent)


OTHER = [b for b in YAML_BLOCKS if b not in [x for v in PAGE_BUNDLES.values() for x in v]]


@pytest.mark.parametrize("block", OTHER, ids=[b.id for b in OTHER])
def test_a_yaml_example_loads_with_its_reader(block):
    doc = _load(block.text)
    assert isinstance(doc, dict), f"{block.where}: not a mapping"
    if "suite" in doc:
        from assay.evaluate.suite import builtin_dir, parse_suite

        parse_suite(block.text, block.where, builtin_dir())
    elif {"name", "kind"} <= set(doc):
        from assay.judges import get_judge

        judge = get_judge(doc)
        assert judge.version.startswith(f"{doc['name']}@")
    else:
        raise AssertionError(f"{block.where}: the docs tests do not know what reads this YAML (keys {sorted(doc)})")


def test_every_yaml_block_is_read_by_something():
    # the page bundles plus the rest cover every block: nothing is silently left out
    covered = sum(len(v) for v in PAGE_BUNDLES.values()) + len(OTHER)
    assert covered == len(YAML_BLOCKS) and len(YAML_BLOCKS) >= 8


def _alert_attributes(doc: dict) -> set[str]:
    return set((doc.get("attributes") or {}).get("alerts") or {})


@pytest.mark.parametrize("source", [*SHIPPED_BUNDLES, *PAGE_BUNDLES], ids=[getattr(s, "name", s) for s in [*SHIPPED_BUNDLES, *PAGE_BUNDLES]])
def test_alerts_read_only_what_the_monitor_supplies(source):
    # issue #27: `window.harmful_rate` type-checked and its tests passed, but no monitor window has
    # it, so the alert never fired live. The monitor's own table of what a window carries decides.
    from assay.monitor.windows import WINDOW_ATTRIBUTES

    doc = _merge(PAGE_BUNDLES[source]) if isinstance(source, str) else _load(source.read_text(encoding="utf-8"))
    unknown = sorted(_alert_attributes(doc) - set(WINDOW_ATTRIBUTES))
    assert not unknown, f"{source}: alerts declare {unknown}, which no monitor window supplies (it supplies {sorted(WINDOW_ATTRIBUTES)})"


TYPO_BUNDLE = """# feed.yaml
bundle: feed-safety
version: "1"
attributes:
  rules:
    request.user.age: int
    item.labels.mature: double
rules:
  - id: teen-mature-drop
    surface: [for_you]
    action: drop
    when: request.user.age < 18 && item.labels.maturity >= 0.7
    reason: mature content is not recommended to minors
"""


def test_the_error_policy_md_shows_is_what_assay_prints(tmp_path, monkeypatch):
    import contextlib
    import io

    from assay.cli.main import main

    shown = next(b for b in all_blocks() if b.page.name == "policy.md" and b.text.startswith("error: feed.yaml"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "feed.yaml").write_text(TYPO_BUNDLE)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["policy", "check", "feed.yaml"])
    assert code == 2
    assert err.getvalue().strip() == shown.text.strip(), f"{shown.where} shows:\n{shown.text}\nassay prints:\n{err.getvalue()}"
