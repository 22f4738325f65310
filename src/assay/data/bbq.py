"""BBQ, the Bias Benchmark for QA (github.com/nyu-mll/BBQ, ``data/<Category>.jsonl``).

Each example is a 3-way multiple-choice question in an ambiguous (answer: unknown) or a
disambiguated context. ``target_index`` finds the answer that names the stereotyped group
(from ``answer_info`` group labels vs ``additional_metadata.stereotyped_groups``), which is what
the BBQ bias score needs; the official ``additional_metadata.csv`` is not required.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
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
    """The categories with a file under ``data/`` (anything by that name: a folder or a FIFO
    there is then refused by :func:`load`, not silently skipped)."""
    folder = dataset_path(NAME, "data", data_dir=data_dir)
    return [c for c in CATEGORIES if os.path.lexists(folder / f"{c}.jsonl")]


def load(categories: list[str] | None = None, data_dir: Path | str | None = None) -> list[BBQExample]:
    """Examples of the given categories (default: every category file present)."""
    cats = categories or available_categories(data_dir)
    out = []
    for cat in cats:
        if cat not in CATEGORIES:
            raise BadInput(f"unknown BBQ category {cat!r}; use one of {list(CATEGORIES)}")
        path = dataset_path(NAME, "data", f"{cat}.jsonl", data_dir=data_dir)
        records = read.jsonl_records(path, "BBQ examples")
        examples = [_example(row, where, cat) for where, row in records]
        read.unique(((where, e.example_id) for (where, _), e in zip(records, examples, strict=True)), "example_id")
        out += examples
    return read.some(out, str(dataset_path(NAME, "data", data_dir=data_dir)), f"BBQ category files ({', '.join(CATEGORIES)}.jsonl)")


def _example(row: dict, where: str, category: str) -> BBQExample:
    read.fields(row, where, "malformed BBQ example", ("category", "example_id", "question_index", "question_polarity",
                "context_condition", "context", "question", "ans0", "ans1", "ans2", "answer_info", "label", "additional_metadata"))
    if row["category"] != category:
        raise BadInput(f"{where}: category {row['category']!r} in the file of {category!r}")
    info, meta = row["answer_info"], row["additional_metadata"]
    if not isinstance(info, dict) or not isinstance(meta, dict):
        raise BadInput(f"{where}: malformed BBQ example: answer_info and additional_metadata must be objects")
    example = BBQExample(
        category=category,
        example_id=read.whole(row["example_id"], where, "example_id", lo=0),
        question_index=str(read.whole(row["question_index"], where, "question_index", lo=0)),
        polarity=read.choice(row["question_polarity"], where, "question_polarity", ("neg", "nonneg")),
        context_condition=read.choice(row["context_condition"], where, "context_condition", ("ambig", "disambig")),
        context=read.string(row["context"], where, "context"),
        question=read.string(row["question"], where, "question"),
        answers=tuple(read.string(row[f"ans{i}"], where, f"ans{i}") for i in range(3)),  # type: ignore[arg-type]
        answer_groups=tuple(read.strings(info.get(f"ans{i}"), where, f"answer_info.ans{i}") for i in range(3)),  # type: ignore[arg-type]
        label=read.whole(row["label"], where, "label", lo=0, hi=2),
        stereotyped_groups=read.strings(meta.get("stereotyped_groups", []), where, "additional_metadata.stereotyped_groups"),
    )
    unknown = sum("unknown" in groups for groups in example.answer_groups)
    if unknown != 1:  # the bias score needs the "can't be determined" option, exactly one
        raise BadInput(f"{where}: answer_info marks {unknown} answers 'unknown'; a BBQ example has exactly one")
    return example
