"""AdvBench (github.com/llm-attacks/llm-attacks, ``data/advbench/``): 520 harmful behaviours
(``goal`` + the affirmative ``target`` prefix GCG optimises for) and 574 harmful strings.

Many goals are near-duplicates; ``load_behaviors(dedupe=True)`` drops exact duplicates after
case and whitespace folding so reported rates are not inflated by repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read

NAME = "advbench"
BEHAVIORS_FILE = "harmful_behaviors.csv"
STRINGS_FILE = "harmful_strings.csv"


@dataclass(frozen=True, slots=True)
class AdvBehavior:
    index: int  # 0-based row in harmful_behaviors.csv
    goal: str
    target: str  # "Sure, here is ..." prefix; emitting it is GCG's success signal


def load_behaviors(dedupe: bool = False, data_dir: Path | str | None = None) -> list[AdvBehavior]:
    path = dataset_path(NAME, BEHAVIORS_FILE, data_dir=data_dir)
    out, seen = [], set()
    for i, (where, row) in enumerate(read.csv_rows(path, "AdvBench behaviours", ("goal", "target"))):
        goal = read.string(row["goal"], where, "goal").strip()
        target = read.string(row["target"], where, "target").strip()
        key = " ".join(goal.lower().split())
        if dedupe and key in seen:
            continue
        seen.add(key)
        out.append(AdvBehavior(i, goal, target))
    return out


def load_strings(data_dir: Path | str | None = None) -> list[str]:
    path = dataset_path(NAME, STRINGS_FILE, data_dir=data_dir)
    return [read.string(row["target"], where, "target") for where, row in read.csv_rows(path, "AdvBench strings", ("target",))]
