"""FEVER claims with SUPPORTS / REFUTES / NOT ENOUGH INFO verdicts (fever.ai ``paper_dev.jsonl``).

Layout: one JSON object a line with ``id``, ``verifiable``, ``label``, ``claim`` and ``evidence``
(lists of ``[annotation_id, evidence_id, wikipedia_page, sentence_index]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path, read
from assay.errors import BadInput

NAME = "fever"
FILE = "paper_dev.jsonl"
LABELS = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")


@dataclass(frozen=True, slots=True)
class Claim:
    id: int
    claim: str
    label: str  # one of LABELS
    verifiable: bool
    evidence_pages: tuple[str, ...]  # Wikipedia page titles cited by any evidence set (deduplicated)


def load(data_dir: Path | str | None = None, file: str = FILE) -> list[Claim]:
    """All claims of ``paper_dev.jsonl`` (9,999), in file order. ``file`` also reads other FEVER
    splits in the same layout (``paper_test.jsonl``, ``shared_task_dev.jsonl``)."""
    path = dataset_path(NAME, file, data_dir=data_dir)
    out: list[Claim] = []
    records = read.jsonl_records(path, "FEVER claims")
    for where, obj in records:
        read.fields(obj, where, "bad FEVER record", ("id", "label", "claim"))
        label = read.choice(obj["label"], where, "label", LABELS)
        verifiable = read.choice(obj.get("verifiable", "VERIFIABLE" if label != LABELS[2] else "NOT VERIFIABLE"), where,
                                 "verifiable", ("VERIFIABLE", "NOT VERIFIABLE"))
        if (verifiable == "VERIFIABLE") != (label != LABELS[2]):
            raise BadInput(f"{where}: bad FEVER record: {verifiable} with label {label}")
        evidence = obj.get("evidence") or []
        pages: list[str] = []
        if not isinstance(evidence, list) or not all(isinstance(s, list) for s in evidence):
            raise BadInput(f"{where}: bad FEVER record: evidence must be a list of evidence sets (lists)")
        for evidence_set in evidence:
            for item in evidence_set:
                if not isinstance(item, list) or len(item) != 4:
                    raise BadInput(f"{where}: bad FEVER record: an evidence item must be "
                                   "[annotation_id, evidence_id, wikipedia_page, sentence_index], got " + repr(item)[:80])
                if item[2] is not None and read.string(item[2], where, "an evidence page") not in pages:
                    pages.append(item[2])
        out.append(Claim(id=read.whole(obj["id"], where, "id"), claim=read.string(obj["claim"], where, "claim"), label=label,
                         verifiable=verifiable == "VERIFIABLE", evidence_pages=tuple(pages)))
    read.unique(((where, c.id) for (where, _), c in zip(records, out, strict=True)), "claim id")
    return out
