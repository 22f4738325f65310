"""HarmBench text behaviours (github.com/centerforaisafety/HarmBench,
``data/behavior_datasets/harmbench_behaviors_text_{all,test,val}.csv``).

400 behaviours: 200 ``standard``, 100 ``contextual`` (with a ``ContextString`` to show first)
and 100 ``copyright``. Use ``val`` for tuning and ``test`` for reporting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
from assay.errors import BadInput

NAME = "harmbench"
SPLITS = {"all": "harmbench_behaviors_text_all.csv", "test": "harmbench_behaviors_text_test.csv", "val": "harmbench_behaviors_text_val.csv"}
FUNCTIONAL = ("standard", "contextual", "copyright")
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
    rows = read.csv_rows(path, "HarmBench behaviours", COLUMNS)
    out = []
    for where, row in rows:
        functional = read.choice(row["FunctionalCategory"], where, "FunctionalCategory", FUNCTIONAL)
        context = row["ContextString"]
        if functional == "contextual" and not context.strip():
            raise BadInput(f"{where}: a contextual behaviour with an empty ContextString")
        out.append(
            Behavior(
                behavior_id=read.string(row["BehaviorID"], where, "BehaviorID"),
                behavior=read.string(row["Behavior"], where, "Behavior"),
                functional_category=functional,
                semantic_category=read.string(row["SemanticCategory"], where, "SemanticCategory"),
                tags=tuple(t.strip() for t in row["Tags"].split(",") if t.strip()),
                context=context,
            )
        )
    read.unique(((where, b.behavior_id) for (where, _), b in zip(rows, out, strict=True)), "BehaviorID")
    return out
