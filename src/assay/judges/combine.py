"""Judges made of judges: a cascade (cheap judges first, the expensive one only where they
disagree) and a majority vote.

A cascade's ``first`` judges all see every pair. Where they give the same verdict, that is the
verdict (``stage`` = ``agree``). Where they disagree -- or one of them has no verdict -- the
``then`` judge decides (``stage`` = its name); an unparsed answer there stays unparsed. Without
``then``, the ``fallback`` judge (one of ``first``, by name) decides the disagreements. So an LLM
judge is only paid for the pairs the cheap judges cannot settle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from assay.errors import BadInput
from assay.judges.base import Judge, Judgment, as_pairs


def _check_question(name: str, question: str, parts: Sequence[Judge]) -> None:
    for j in parts:
        if j.question != question:
            raise BadInput(f"judge {name!r} ({question}) cannot combine {j.name!r}, which judges {j.question!r}")


class Cascade(Judge):
    kind = "cascade"

    def __init__(self, name: str, question: str, first: Sequence[Judge], then: Judge | None = None,
                 fallback: str | None = None) -> None:
        super().__init__(name, question)
        if len(first) < 2:
            raise BadInput(f"judge {name!r}: a cascade needs at least two first-stage judges")
        _check_question(name, question, [*first, *([then] if then else [])])
        names = [j.name for j in first]
        if then is None:
            fallback = fallback or names[-1]
            if fallback not in names:
                raise BadInput(f"judge {name!r}: fallback {fallback!r} is not one of its first judges {names}")
        self.first = list(first)
        self.then = then
        self.fallback = fallback if then is None else None

    def config(self) -> dict[str, Any]:
        return {"first": [j.version for j in self.first], "then": self.then.version if self.then else None,
                "fallback": self.fallback}

    def _settle(self, stage1: list[list[Judgment]]) -> tuple[list[Judgment | None], list[int]]:
        out: list[Judgment | None] = []
        undecided: list[int] = []
        for i, row in enumerate(zip(*stage1, strict=True)):
            verdicts = {j.verdict for j in row}
            scores = [j.score for j in row if j.score is not None]
            if len(verdicts) == 1 and None not in verdicts:
                out.append(Judgment(row[0].verdict, sum(scores) / len(scores) if scores else None, stage="agree"))
            else:
                out.append(None)
                undecided.append(i)
        return out, undecided

    def _finish(self, out: list[Judgment | None], undecided: list[int], stage1: list[list[Judgment]],
                decided: list[Judgment] | None) -> list[Judgment]:
        if decided is None:  # fallback judge among the first stage
            k = [j.name for j in self.first].index(self.fallback)  # type: ignore[arg-type]
            decided = [stage1[k][i] for i in undecided]
            stage = self.fallback
        else:
            stage = self.then.name  # type: ignore[union-attr]
        for i, j in zip(undecided, decided, strict=True):
            out[i] = Judgment(j.verdict, j.score, unparsed=j.unparsed, raw=j.raw, stage=stage)
        return out  # type: ignore[return-value]

    def judge(self, pairs: Sequence[Any]) -> list[Judgment]:
        checked = as_pairs(pairs, self.name)
        stage1 = [j.judge(checked) for j in self.first]
        out, undecided = self._settle(stage1)
        decided = self.then.judge([checked[i] for i in undecided]) if self.then is not None and undecided else None
        if self.then is not None and not undecided:
            decided = []
        return self._finish(out, undecided, stage1, decided)

    async def ajudge(self, pairs: Sequence[Any]) -> list[Judgment]:
        checked = as_pairs(pairs, self.name)
        stage1 = list(await asyncio.gather(*(j.ajudge(checked) for j in self.first)))
        out, undecided = self._settle(stage1)
        decided = None
        if self.then is not None:
            decided = await self.then.ajudge([checked[i] for i in undecided]) if undecided else []
        return self._finish(out, undecided, stage1, decided)

    def close(self) -> None:
        for j in [*self.first, *([self.then] if self.then else [])]:
            j.close()


class Vote(Judge):
    """Majority of the judges' verdicts (unparsed ones abstain); a tie or no verdict at all is
    ``tie`` (``positive``, ``negative`` or ``unparsed``, the default: never a silent pass)."""

    kind = "vote"

    def __init__(self, name: str, question: str, judges: Sequence[Judge], tie: str = "unparsed") -> None:
        super().__init__(name, question)
        if len(judges) < 2:
            raise BadInput(f"judge {name!r}: a vote needs at least two judges")
        if tie not in ("positive", "negative", "unparsed"):
            raise BadInput(f"judge {name!r}: tie must be positive, negative or unparsed, not {tie!r}")
        _check_question(name, question, judges)
        self.judges = list(judges)
        self.tie = tie

    def config(self) -> dict[str, Any]:
        return {"judges": [j.version for j in self.judges], "tie": self.tie}

    def _combine(self, rows: list[list[Judgment]]) -> list[Judgment]:
        out = []
        for row in zip(*rows, strict=True):
            yes = sum(1 for j in row if j.verdict is True)
            no = sum(1 for j in row if j.verdict is False)
            scores = [j.score for j in row if j.score is not None]
            score = sum(scores) / len(scores) if scores else None
            if yes != no:
                out.append(Judgment(yes > no, score))
            elif self.tie == "unparsed":
                out.append(Judgment(None, score, unparsed=True, raw=f"tie {yes}:{no}"))
            else:
                out.append(Judgment(self.tie == "positive", score, stage="tie"))
        return out

    def judge(self, pairs: Sequence[Any]) -> list[Judgment]:
        checked = as_pairs(pairs, self.name)
        return self._combine([j.judge(checked) for j in self.judges])

    async def ajudge(self, pairs: Sequence[Any]) -> list[Judgment]:
        checked = as_pairs(pairs, self.name)
        return self._combine(list(await asyncio.gather(*(j.ajudge(checked) for j in self.judges))))

    def close(self) -> None:
        for j in self.judges:
            j.close()
