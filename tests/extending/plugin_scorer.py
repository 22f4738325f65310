"""A new scorer in one file: how many words the reply has, and whether it is terse.

Registered as ``word_count``; a suite uses it as ``scorers: [{kind: word_count, terse_below: 4}]``
(its options are the constructor's keyword arguments). Checked by ``check_scorer("word_count")``.
"""

from __future__ import annotations

from assay.evaluate.scorers import Scorer, register_scorer


@register_scorer("word_count")
class WordCount(Scorer):
    """``words``: the reply's word count; ``terse``: fewer than ``terse_below`` words."""

    name = "word_count"
    fields = ("words", "terse")

    def __init__(self, terse_below: int = 4) -> None:
        self.terse_below = int(terse_below)

    async def score(self, items, outputs):
        out = []
        for o in outputs:
            words = len((o.text or "").split())
            out.append({"words": words, "terse": words < self.terse_below})
        return out
