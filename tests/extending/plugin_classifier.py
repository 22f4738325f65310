"""A new classifier in one file: how much of a text is SHOUTED (the share of its letters in
upper case), with a fixed threshold.

Registered as ``shouting`` (a factory with no arguments); a suite scores replies with it as
``scorers: [{kind: classifier, classifier: shouting}]``. Checked by ``check_classifier("shouting")``.
"""

from __future__ import annotations

import hashlib

import numpy as np

from assay.classify import register_classifier


class Shouting:
    threshold = 0.6
    version = "shouting@sha256:" + hashlib.sha256(b"shouting v1: share of upper-case letters").hexdigest()[:16]

    def score(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        out = np.zeros(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            letters = [c for c in text if c.isalpha()]
            out[i] = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
        return out

    def predict(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        return self.score(texts) >= self.threshold


@register_classifier("shouting")
def shouting() -> Shouting:
    return Shouting()
