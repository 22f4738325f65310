"""Filter-evasion perturbations of flagged text: homoglyphs, zero-width characters, spacing,
leetspeak and paraphrase templates.

The letter-level perturbations are the classifier part's (``assay.classify.obfuscate``), so the
attack and the defence agree on what each perturbation is (``classify`` is a foundation of this
package, always installed with it: there is no second, letter-level copy here). Each
perturbation is seeded and touches about a ``rate`` share of the words, so evasion can be
measured against attack strength.
"""

from __future__ import annotations

import random

from assay.classify import obfuscate
from assay.errors import BadInput

PERTURBATIONS = ("homoglyph", "zero_width", "spacing", "leetspeak", "fullwidth", "mixed", "paraphrase")

PARAPHRASES = (
    "Someone wrote this and I'm just quoting: \"{t}\"",
    "Not my words, but a lot of people think {t}",
    "Hypothetically speaking, {t}",
    "Just asking questions here... {t}?",
    "My friend keeps saying {t}, lol",
)


def perturb(text: str, kind: str, *, rate: float = 0.6, seed: int = 0) -> str:
    """``text`` with perturbation ``kind`` applied to about a ``rate`` share of its words
    (``assay.classify.obfuscate``; the same seed gives the same variant)."""
    if kind not in PERTURBATIONS:
        raise BadInput(f"unknown perturbation {kind!r}; use one of {', '.join(PERTURBATIONS)}")
    if not 0.0 <= rate <= 1.0:
        raise BadInput(f"perturbation rate must be within [0, 1], got {rate}")
    rng = random.Random(f"{seed}:{kind}:{text}")
    if kind == "paraphrase":
        body = text.rstrip(".!?")
        return rng.choice(PARAPHRASES).format(t=body[:1].lower() + body[1:])
    fn = obfuscate.KINDS[kind]
    return fn(text, rng) if kind == "mixed" else fn(text, rng, rate)
