"""Every Python block in README.md and docs/*.md runs as written, in a fresh ASSAY_HOME and an
empty working folder holding only the files the page says the reader brings (``SETUP``). Where a
page states what its example gives, ``CHECKS`` holds it to that (the guard page's slate is not
empty: a candidate missing an attribute the bundle reads is dropped, fail-closed)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from docpages import ROOT, all_blocks

FEED = ROOT / "src" / "assay" / "policy" / "examples" / "feed.yaml"
PY_BLOCKS = [b for b in all_blocks() if b.lang == "python" and b.marker != "skip"]


def _guard_files(work: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.copy(FEED, work / "feed.yaml")
    labels = ["mature", "violence", "toxicity", "hate", "self_harm", "misinfo", "spam", "drugs", "gambling"]
    rows = {"m1": {}, "m2": {"mature": 0.95}, "m3": {"misinfo": 0.1}}
    table = {"item_id": list(rows)}
    for label in labels:
        table[label] = [rows[i].get(label, 0.0) for i in rows]
    pq.write_table(pa.table(table), work / "labels.parquet")


SETUP: dict[str, Callable[[Path], None]] = {"guard.md": _guard_files}


def _guard_check(ns: dict) -> None:
    slate = ns["slate"]
    assert list(slate.item_ids) == ["m1", "m3"], f"served {list(slate.item_ids)}"
    actions = {d.item_id: d.action for d in slate.decisions}
    assert actions == {"m1": "allow", "m2": "drop", "m3": "demote"}, actions


def _trace_check(ns: dict) -> None:
    assert ns["log"].verify().ok


CHECKS: dict[str, Callable[[dict], None]] = {"guard.md": _guard_check, "trace.md": _trace_check}


def test_the_docs_have_python_examples():
    assert len(PY_BLOCKS) >= 8


@pytest.mark.parametrize("block", PY_BLOCKS, ids=[b.id for b in PY_BLOCKS])
def test_a_python_example_runs(block, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if block.page.name in SETUP:
        SETUP[block.page.name](work)
    ns: dict = {"__name__": "__docs__"}
    try:
        exec(compile(block.text, block.where, "exec"), ns)
    except Exception as e:
        raise AssertionError(f"{block.where}: the example fails: {type(e).__name__}: {e}") from e
    if block.page.name in CHECKS:
        CHECKS[block.page.name](ns)
