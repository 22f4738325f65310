"""Judges: one contract for every verdict assay counts up (refused? harmful? hateful?).

    from assay.judges import get_judge, validation_summary
    judge = get_judge("refusal")                 # or "refusal-phrase", "harmful-llm", a spec file/mapping
    judge.judge([(prompt, response), ...])       # [Judgment(verdict, score, unparsed, ...)]
    judge.version                                # "refusal@sha256:<16 hex>" (content-addressed)
    validation_summary(judge)                    # how this version did against human labels

See :mod:`assay.judges.registry` for the built-in judges, :mod:`assay.judges.validate` for
validation, and docs/judges.md. This module imports cheaply; heads load on first use.
"""

from __future__ import annotations

from assay.judges.base import QUESTIONS, Counts, Judge, Judgment, as_pairs
from assay.judges.registry import DEFAULTS, available, get_judge
from assay.judges.validate import summary as validation_summary

__all__ = ["DEFAULTS", "QUESTIONS", "Counts", "Judge", "Judgment", "as_pairs", "available", "get_judge", "validation_summary"]
