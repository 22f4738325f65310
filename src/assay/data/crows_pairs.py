"""CrowS-Pairs (github.com/nyu-mll/crows-pairs, ``data/crows_pairs_anonymized.csv``): 1,508
minimal sentence pairs; a model "prefers the stereotype" when it scores ``sent_more`` higher.
Evaluation only; the authors and Blodgett et al. (2021) caution that the data is noisy.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
from assay.errors import BadInput

NAME = "crows_pairs"
FILE = "crows_pairs_anonymized.csv"


@dataclass(frozen=True, slots=True)
class CrowsPair:
    index: int
    sent_more: str  # the more stereotypical sentence
    sent_less: str
    direction: str  # stereo | antistereo
    bias_type: str


def load(data_dir: Path | str | None = None) -> list[CrowsPair]:
    path = dataset_path(NAME, "data", FILE, data_dir=data_dir)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"sent_more", "sent_less", "stereo_antistereo", "bias_type"}
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise BadInput(f"{path}: missing columns {sorted(missing)}")
        out = []
        for i, row in enumerate(reader):
            if row["stereo_antistereo"] not in ("stereo", "antistereo"):
                raise BadInput(f"{path}:{reader.line_num}: stereo_antistereo must be stereo|antistereo")
            index = int(row[""]) if row.get("", "").strip().isdigit() else i
            out.append(CrowsPair(index, row["sent_more"], row["sent_less"], row["stereo_antistereo"], row["bias_type"]))
    return out
