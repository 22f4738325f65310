"""BBQ, the Bias Benchmark for QA (github.com/nyu-mll/BBQ, ``data/<Category>.jsonl``).

Each example is a 3-way multiple-choice question in an ambiguous (answer: unknown) or a
disambiguated context. ``target_index`` finds the answer that names the stereotyped group
(from ``answer_info`` group labels vs ``additional_metadata.stereotyped_groups``), which is what
the BBQ bias score needs; the official ``additional_metadata.csv`` is not required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
from assay.errors import BadInput

NAME = "bbq"
CATEGORIES = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
    "Race_ethnicity", "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BBQExample:
    category: str
    example_id: int
    question_index: str
    polarity: str  # neg | nonneg
    context_condition: str  # ambig | disambig
    context: str
    question: str
    answers: tuple[str, str, str]
    answer_groups: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    label: int
    stereotyped_groups: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.category}/{self.example_id}"

    @property
    def unknown_index(self) -> int:
        """Index of the "can't be determined" option."""
        for i, groups in enumerate(self.answer_groups):
            if "unknown" in groups:
                return i
        raise BadInput(f"BBQ {self.id}: no 'unknown' answer")

    @property
    def target_index(self) -> int | None:
        """Index of the answer naming the stereotyped group, None when no single one does."""
        wanted = {_norm(g) for g in self.stereotyped_groups}
        hits = [
            i
            for i, groups in enumerate(self.answer_groups)
            if "unknown" not in groups and any(_norm(g) in wanted for g in groups)
        ]
        return hits[0] if len(hits) == 1 else None


def _norm(label: str) -> str:
    return label.lower().replace(" ", "").replace("-", "").replace("_", "")


def available_categories(data_dir: Path | str | None = None) -> list[str]:
    folder = dataset_path(NAME, "data", data_dir=data_dir)
    return [c for c in CATEGORIES if (folder / f"{c}.jsonl").is_file()]


def load(categories: list[str] | None = None, data_dir: Path | str | None = None) -> list[BBQExample]:
    """Examples of the given categories (default: every category file present)."""
    cats = categories or available_categories(data_dir)
    out = []
    for cat in cats:
        if cat not in CATEGORIES:
            raise BadInput(f"unknown BBQ category {cat!r}; use one of {list(CATEGORIES)}")
        path = dataset_path(NAME, "data", f"{cat}.jsonl", data_dir=data_dir)
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    info = row["answer_info"]
                    out.append(
                        BBQExample(
                            category=row["category"],
                            example_id=int(row["example_id"]),
                            question_index=str(row["question_index"]),
                            polarity=row["question_polarity"],
                            context_condition=row["context_condition"],
                            context=row["context"],
                            question=row["question"],
                            answers=(row["ans0"], row["ans1"], row["ans2"]),
                            answer_groups=tuple(tuple(str(x) for x in info[f"ans{i}"]) for i in range(3)),  # type: ignore[arg-type]
                            label=int(row["label"]),
                            stereotyped_groups=tuple(row["additional_metadata"].get("stereotyped_groups", ())),
                        )
                    )
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise BadInput(f"{path}:{lineno}: malformed BBQ example: {e!r}") from None
    return out
