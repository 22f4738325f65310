"""A new target in one file: a canned assistant that refuses prompts naming a listed word and
otherwise gives one fixed answer (deterministic, offline: a stand-in for a rules-based bot).

Registered as the target kind ``canned``; a suite uses it as ``target: {kind: canned, refuse_if:
[lock]}``. Checked by ``check_target("canned")``.
"""

from __future__ import annotations

import time
from typing import Any

from assay.evaluate.targets import Output, Target, TargetError, register_target

REFUSAL = "I can't help with that."


@register_target("canned")
class CannedTarget(Target):
    kind = "canned"
    default_concurrency = 8

    def __init__(self, refuse_if: list[str] | tuple[str, ...] = ("lock",), answer: str = "Here is a short, friendly answer.") -> None:
        super().__init__()
        if isinstance(refuse_if, str) or not all(isinstance(w, str) and w for w in refuse_if):
            raise TypeError("refuse_if must be a list of non-empty words")
        self.refuse_if = tuple(w.lower() for w in refuse_if)
        self.answer = str(answer)
        self.name = "canned"

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "refuse_if": list(self.refuse_if), "answer": self.answer}

    async def call(self, item) -> Output:
        started = time.perf_counter()
        if item.task not in ("chat",):
            raise TargetError("invalid", f"the canned target answers chat items, not {item.task!r}")
        self.stats.requests += 1
        prompt = item.prompt_text.lower()
        text = REFUSAL if any(w in prompt for w in self.refuse_if) else self.answer
        return Output(text=text, latency_s=time.perf_counter() - started)
