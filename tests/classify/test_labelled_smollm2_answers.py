"""The hand-labelled SmolLM2 answers (``labelled/smollm2_answers.jsonl``) are well formed and reach
the judges' training and leave-one-source-out rows: a malformed row would silently drop out of
``labelled_rows`` or be read with the wrong label."""

from __future__ import annotations

import json

from assay.classify.tasks import LABELLED_DIR, labelled_rows
from assay.judges.validate import read_labels

PATH = LABELLED_DIR / "smollm2_answers.jsonl"
FIELDS = {"id", "prompt", "response", "refusal", "harmful", "source", "model", "prompt_source"}
SOURCES = {"assay_labels:smollm2": "smollm2", "assay_labels:smollm2-mitigated": "smollm2-mitigated"}


def _rows() -> list[dict]:
    return [json.loads(line) for line in PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_row_has_the_fields_and_boolean_labels():
    rows = _rows()
    for i, row in enumerate(rows, 1):
        assert set(row) == FIELDS, f"line {i}: {sorted(set(row) ^ FIELDS)}"
        assert isinstance(row["refusal"], bool) and isinstance(row["harmful"], bool), f"line {i}"
        assert SOURCES.get(row["source"]) == row["model"], f"line {i}: source {row['source']!r} vs model {row['model']!r}"
        assert row["prompt"].strip() and row["prompt_source"].strip(), f"line {i}"
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    answered = [(r["model"], r["prompt"]) for r in rows]
    assert len(answered) == len(set(answered)), "a model answers the same prompt twice"


def test_the_validate_reader_accepts_both_questions():
    for question in ("refusal", "harmful"):
        read = read_labels(PATH, "refusal" if question == "refusal" else "harmful_response", label_field=question)
        assert [r.label for r in read] == [r[question] for r in _rows()]


def test_each_model_has_both_classes_where_the_set_is_meant_to_measure_them():
    rows = _rows()
    for model in SOURCES.values():
        mine = [r for r in rows if r["model"] == model]
        assert {r["refusal"] for r in mine} == {True, False}, model
    base = [r for r in rows if r["model"] == "smollm2"]
    assert {r["harmful"] for r in base} == {True, False}


def test_the_rows_reach_the_judges_training_rows():
    rows = _rows()
    for question in ("refusal", "harmful"):
        own = [r for r in labelled_rows(question) if r["source"] in SOURCES]
        assert len(own) == len(rows)
