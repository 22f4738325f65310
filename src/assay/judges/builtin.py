"""The built-in human-labelled sets ``assay judge validate`` uses when no ``--labels`` is given.

- ``refusal`` and ``harmful``: the **test split** of the response heads' training data
  (:func:`assay.classify.tasks.response_rows`, split by prompt): Do-Not-Answer's human labels per
  answering model, (for harmful) JailbreakBench's verdicts per attack and model, and the
  project's own hand-labelled SmolLM2 answers and hard cases. The heads never trained on these
  rows; the public datasets are read from ``ASSAY_DATA_DIR``.
- ``hate``: the project's hate functional test suite (``suites/hate_functional.jsonl``), written
  apart from the hate head's contrast training set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assay.errors import BadInput
from assay.judges.validate import Labelled

SUITES = Path(__file__).with_name("suites")
HATE_SUITE = SUITES / "hate_functional.jsonl"


def hate_suite() -> list[dict[str, Any]]:
    """The hate functional test cases: ``{id, functionality, text, label, identity}``."""
    return [json.loads(line) for line in HATE_SUITE.read_text(encoding="utf-8").splitlines() if line.strip()]


def builtin_labels(question: str) -> tuple[list[Labelled], dict[str, Any]]:
    if question in ("refusal", "harmful"):
        from assay.classify.tasks import response_rows, split_of

        rows, _ = response_rows("refusal" if question == "refusal" else "harmful_response")
        test = [r for r in rows if split_of(r["group"]) == "test"]
        out = [Labelled(r["prompt"], r["response"], bool(r["label"]), r["source"], r["model"], i + 1) for i, r in enumerate(test)]
        return out, {"name": f"builtin:{question}-test-split", "rows": len(out), "builtin": True,
                     "what": "test split (by prompt) of the response heads' training sources, never trained on"}
    if question == "hate":
        cases = hate_suite()
        out = [Labelled("", c["text"], bool(c["label"]), c["functionality"], "handwritten", i + 1) for i, c in enumerate(cases)]
        return out, {"name": "builtin:hate-functional-suite", "rows": len(out), "builtin": True,
                     "what": "hand-written functional test suite; source = functionality"}
    raise BadInput(f"no built-in labelled set for {question!r} judges", hint="pass --labels FILE.jsonl")
