"""AdvBench (github.com/llm-attacks/llm-attacks, ``data/advbench/``): 520 harmful behaviours
(``goal`` + the affirmative ``target`` prefix GCG optimises for) and 574 harmful strings.

Many goals are near-duplicates; ``load_behaviors(dedupe=True)`` drops exact duplicates after
case and whitespace folding so reported rates are not inflated by repeats.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
from assay.errors import BadInput

NAME = "advbench"
BEHAVIORS_FILE = "harmful_behaviors.csv"
STRINGS_FILE = "harmful_strings.csv"


@dataclass(frozen=True, slots=True)
class AdvBehavior:
    index: int  # 0-based row in harmful_behaviors.csv
    goal: str
    target: str  # "Sure, here is ..." prefix; emitting it is GCG's success signal


def _read(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = set(columns) - set(reader.fieldnames or ())
        if missing:
            raise BadInput(f"{path}: missing columns {sorted(missing)}")
        return [(reader.line_num, row) for row in reader]


def load_behaviors(dedupe: bool = False, data_dir: Path | str | None = None) -> list[AdvBehavior]:
    path = dataset_path(NAME, BEHAVIORS_FILE, data_dir=data_dir)
    out, seen = [], set()
    for i, (line, row) in enumerate(_read(path, ("goal", "target"))):
        goal = row["goal"].strip()
        if not goal:
            raise BadInput(f"{path}:{line}: empty goal")
        key = " ".join(goal.lower().split())
        if dedupe and key in seen:
            continue
        seen.add(key)
        out.append(AdvBehavior(i, goal, row["target"].strip()))
    return out


def load_strings(data_dir: Path | str | None = None) -> list[str]:
    path = dataset_path(NAME, STRINGS_FILE, data_dir=data_dir)
    return [row["target"] for _, row in _read(path, ("target",))]
