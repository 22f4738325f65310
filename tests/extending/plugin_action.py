"""A new guard action in one file: ``boost(f)`` multiplies a candidate's score by f in (1, 10]
(a fact-checked source ranked higher). It owns its parsing from the bundle, its application (a
score factor the C rule walk and its numpy twin apply, soft: it stacks with demotions) and its
explanation. Checked by ``check_action("boost(2)")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from assay.policy.actions import GuardAction, register_action


@register_action("boost")
@dataclass(frozen=True)
class Boost(GuardAction):
    factor: float = 2.0
    precedence: ClassVar[int] = 3  # a boosted candidate is reported as boosted, even if also demoted
    verb: ClassVar[str] = "boosted"
    usage: ClassVar[str] = "boost(f)"

    @classmethod
    def parse(cls, args: list[str]) -> GuardAction:
        if len(args) != 1:
            raise ValueError("boost takes one factor, e.g. boost(2)")
        try:
            factor = float(args[0])
        except ValueError:
            raise ValueError(f"boost factor must be a number, not {args[0]!r}") from None
        if not 1 < factor <= 10:
            raise ValueError("boost factor must be in (1, 10]")
        return cls(factor)

    @property
    def score_factor(self) -> float:
        return self.factor

    def explain(self) -> str:
        return f"boosted {self.factor:g} times"

    def __str__(self) -> str:
        return f"boost({self.factor:g})"
