"""HarmBench text behaviours (github.com/centerforaisafety/HarmBench,
``data/behavior_datasets/harmbench_behaviors_text_{all,test,val}.csv``).

400 behaviours: 200 ``standard``, 100 ``contextual`` (with a ``ContextString`` to show first)
and 100 ``copyright``. Use ``val`` for tuning and ``test`` for reporting.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
from assay.errors import BadInput

NAME = "harmbench"
SPLITS = {"all": "harmbench_behaviors_text_all.csv", "test": "harmbench_behaviors_text_test.csv", "val": "harmbench_behaviors_text_val.csv"}
COLUMNS = ("Behavior", "FunctionalCategory", "SemanticCategory", "Tags", "ContextString", "BehaviorID")


@dataclass(frozen=True, slots=True)
class Behavior:
    behavior_id: str
    behavior: str
    functional_category: str  # standard | contextual | copyright
    semantic_category: str
    tags: tuple[str, ...]
    context: str  # non-empty for contextual behaviours

    @property
    def prompt(self) -> str:
        """The request as HarmBench shows it to a model (context first for contextual ones)."""
        return f"{self.context}\n\n---\n\n{self.behavior}" if self.context else self.behavior


def load(split: str = "all", data_dir: Path | str | None = None) -> list[Behavior]:
    """The behaviours of one split, in file order."""
    if split not in SPLITS:
        raise BadInput(f"unknown HarmBench split {split!r}; use one of {sorted(SPLITS)}")
    path = dataset_path(NAME, SPLITS[split], data_dir=data_dir)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise BadInput(f"{path}: missing columns {sorted(missing)}")
        out = []
        for row in reader:
            if not row["Behavior"].strip() or not row["BehaviorID"].strip():
                raise BadInput(f"{path}:{reader.line_num}: empty Behavior or BehaviorID")
            out.append(
                Behavior(
                    behavior_id=row["BehaviorID"],
                    behavior=row["Behavior"],
                    functional_category=row["FunctionalCategory"],
                    semantic_category=row["SemanticCategory"],
                    tags=tuple(t.strip() for t in row["Tags"].split(",") if t.strip()),
                    context=row["ContextString"] or "",
                )
            )
    return out
