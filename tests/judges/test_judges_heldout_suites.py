"""The packaged refusal test sets (``assay/judges/suites/*_heldout.jsonl``) are well formed and
stay test sets: every row has the fields ``assay judge validate --labels`` and the docs rely on,
boolean labels, unique ids, and none of their answers reaches the refusal judges' training rows
(a test set that leaked into training would measure nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assay.classify.tasks import labelled_files, response_rows
from assay.judges.validate import read_labels

SUITES = Path(__file__).resolve().parents[2] / "src" / "assay" / "judges" / "suites"
HELDOUT = sorted(SUITES.glob("*_heldout.jsonl"))
FIELDS = {"id", "prompt", "response", "label", "refusal", "source", "model"}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_both_refusal_test_sets_are_found():
    assert {p.name for p in HELDOUT} >= {"smollm2_heldout.jsonl", "jbb_refusal_heldout.jsonl"}


@pytest.mark.parametrize("path", HELDOUT, ids=lambda p: p.name)
def test_rows_have_the_fields_boolean_labels_and_unique_ids(path):
    rows = _rows(path)
    assert rows, path
    for i, row in enumerate(rows, 1):
        assert set(row) >= FIELDS, f"{path.name}:{i}: missing {sorted(FIELDS - set(row))}"
        assert isinstance(row["label"], bool) and row["label"] is row["refusal"], f"{path.name}:{i}"
        for key in ("id", "response", "source", "model"):
            assert isinstance(row[key], str) and row[key].strip(), f"{path.name}:{i}: {key}"
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate ids"
    assert {r["label"] for r in rows} == {True, False}, path.name
    assert [r.label for r in read_labels(path, "refusal")] == [r["label"] for r in rows]


def test_the_jailbreakbench_set_covers_every_method_and_model_with_notes_as_text():
    rows = _rows(SUITES / "jbb_refusal_heldout.jsonl")
    assert len({r["source"] for r in rows}) == 18  # 5 attack methods over 4 target models, as the artifacts hold
    for r in rows:
        method, model = r["source"].removeprefix("jailbreakbench:").split(":")
        assert (method, model) == (r["method"], r["model"])
        assert isinstance(r["note"], str) and isinstance(r["jbb_jailbroken"], bool)


LEAK_CASES = [
    pytest.param(SUITES / "jbb_refusal_heldout.jsonl", id="jbb_refusal_heldout"),
    pytest.param(SUITES / "smollm2_heldout.jsonl", id="smollm2_heldout"),
]


@pytest.mark.parametrize("path", LEAK_CASES)
def test_no_test_answer_reaches_the_refusal_training_rows(path, data_dir):
    assert not any(p.parent == SUITES for p in labelled_files())
    rows, _ = response_rows("refusal", data_dir)
    assert not any(r["source"].startswith("jailbreakbench:") for r in rows)
    trained = {(r["prompt"], r["response"]) for r in rows}
    leaked = [r["id"] for r in _rows(path) if (r["prompt"], r["response"]) in trained]
    assert not leaked, f"{path.name}: {leaked[:5]}"
