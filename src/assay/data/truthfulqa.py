"""TruthfulQA (github.com/sylinrl/TruthfulQA): ``data/mc_task.json`` (790 multiple-choice items
with mc0 = 2-option, mc1 = single-true, mc2 = multi-true targets) joined with ``TruthfulQA.csv``
for each question's category and type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
from assay.errors import BadInput

NAME = "truthfulqa"
MC_FILE = ("data", "mc_task.json")
CSV_FILE = "TruthfulQA.csv"


@dataclass(frozen=True, slots=True)
class MCQuestion:
    index: int
    question: str
    category: str  # "" when the CSV has no row for the question
    type: str  # Adversarial | Non-Adversarial
    choices: tuple[str, ...]  # in file order
    correct: tuple[int, ...]  # indexes of the true choices


def load_mc(setting: str = "mc1", data_dir: Path | str | None = None) -> list[MCQuestion]:
    """Questions of one multiple-choice setting (mc0, mc1 or mc2)."""
    if setting not in ("mc0", "mc1", "mc2"):
        raise BadInput(f"unknown TruthfulQA setting {setting!r}; use mc0, mc1 or mc2")
    path = dataset_path(NAME, *MC_FILE, data_dir=data_dir)
    items = read.json_file(path, "TruthfulQA multiple-choice items")
    if not isinstance(items, list):
        raise BadInput(f"{path}: expected a JSON list of questions")
    meta: dict[str, tuple[str, str]] = {}
    csv_path = dataset_path(NAME, data_dir=data_dir) / CSV_FILE
    if os.path.lexists(csv_path):  # optional; when there, it must be whole
        for _, row in read.csv_rows(csv_path, "TruthfulQA questions", ("Question", "Category", "Type")):
            meta[row["Question"].strip()] = (row["Category"], row["Type"])
    out = []
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        targets = item.get(f"{setting}_targets") if isinstance(item, dict) else None
        if not isinstance(targets, dict) or not targets or "question" not in item:
            raise BadInput(f"{where} has no question or no {setting}_targets")
        question = read.string(item["question"], where, "question")
        choices = tuple(targets)
        correct = tuple(j for j, c in enumerate(choices) if read.whole(targets[c], where, f"{setting}_targets[{c!r}]", lo=0, hi=1))
        if not correct or (setting != "mc2" and len(correct) != 1):
            raise BadInput(f"{where}: {setting}_targets must mark {'at least one' if setting == 'mc2' else 'exactly one'} "
                           f"choice true (1), got {len(correct)}")
        category, qtype = meta.get(question.strip(), ("", ""))
        out.append(MCQuestion(i, question, category, qtype, choices, correct))
    return read.some(out, str(path), "questions")
