"""TruthfulQA (github.com/sylinrl/TruthfulQA): ``data/mc_task.json`` (790 multiple-choice items
with mc0 = 2-option, mc1 = single-true, mc2 = multi-true targets) joined with ``TruthfulQA.csv``
for each question's category and type.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
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
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    meta: dict[str, tuple[str, str]] = {}
    csv_path = dataset_path(NAME, data_dir=data_dir) / CSV_FILE
    if csv_path.is_file():
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            for row in csv.DictReader(fh):
                meta[row["Question"].strip()] = (row.get("Category", ""), row.get("Type", ""))
    out = []
    for i, item in enumerate(items):
        targets = item.get(f"{setting}_targets")
        if not isinstance(targets, dict) or not targets or "question" not in item:
            raise BadInput(f"{path}: item {i} has no question or no {setting}_targets")
        choices = tuple(targets)
        correct = tuple(j for j, c in enumerate(choices) if int(targets[c]) == 1)
        category, qtype = meta.get(item["question"].strip(), ("", ""))
        out.append(MCQuestion(i, item["question"], category, qtype, choices, correct))
    return out
