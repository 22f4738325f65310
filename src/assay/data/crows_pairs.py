"""CrowS-Pairs (github.com/nyu-mll/crows-pairs, ``data/crows_pairs_anonymized.csv``): 1,508
minimal sentence pairs; a model "prefers the stereotype" when it scores ``sent_more`` higher.
Evaluation only; the authors and Blodgett et al. (2021) caution that the data is noisy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read

NAME = "crows_pairs"
FILE = "crows_pairs_anonymized.csv"


@dataclass(frozen=True, slots=True)
class CrowsPair:
    index: int
    sent_more: str  # the more stereotypical sentence
    sent_less: str
    direction: str  # stereo | antistereo
    bias_type: str


BIAS_TYPES = ("race-color", "gender", "socioeconomic", "nationality", "religion", "age", "sexual-orientation",
              "physical-appearance", "disability")


def load(data_dir: Path | str | None = None) -> list[CrowsPair]:
    path = dataset_path(NAME, "data", FILE, data_dir=data_dir)
    rows = read.csv_rows(path, "CrowS-Pairs", ("sent_more", "sent_less", "stereo_antistereo", "bias_type"))
    out = []
    for i, (where, row) in enumerate(rows):
        # the official file's first, unnamed column is the pair's index; without it, the row's position
        index = read.whole(row[""], where, "the index column", lo=0) if "" in row else i
        out.append(CrowsPair(index, read.string(row["sent_more"], where, "sent_more"), read.string(row["sent_less"], where, "sent_less"),
                             read.choice(row["stereo_antistereo"], where, "stereo_antistereo", ("stereo", "antistereo")),
                             read.choice(row["bias_type"], where, "bias_type", BIAS_TYPES)))
    read.unique(((where, p.index) for (where, _), p in zip(rows, out, strict=True)), "pair index")
    return out
