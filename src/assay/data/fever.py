"""FEVER claims with SUPPORTS / REFUTES / NOT ENOUGH INFO verdicts (fever.ai ``paper_dev.jsonl``).

Layout: one JSON object a line with ``id``, ``verifiable``, ``label``, ``claim`` and ``evidence``
(lists of ``[annotation_id, evidence_id, wikipedia_page, sentence_index]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assay.data import dataset_path
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
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                label = obj["label"]
                if label not in LABELS:
                    raise ValueError(f"unknown label {label!r}")
                pages: list[str] = []
                for evidence_set in obj.get("evidence") or []:
                    for item in evidence_set:
                        if len(item) >= 3 and item[2] is not None and item[2] not in pages:
                            pages.append(item[2])
                out.append(
                    Claim(
                        id=int(obj["id"]),
                        claim=str(obj["claim"]),
                        label=label,
                        verifiable=obj.get("verifiable") == "VERIFIABLE",
                        evidence_pages=tuple(pages),
                    )
                )
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise BadInput(f"{path}:{lineno}: bad FEVER record: {e}") from None
    return out
