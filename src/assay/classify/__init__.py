"""Content-safety classifiers on MiniLM-L6 embeddings, trained on public data and calibrated.

    from assay.classify import load_classifier, available
    clf = load_classifier("toxicity")
    clf.score(["some text", ...])   # calibrated probabilities, np.ndarray
    clf.predict(texts)              # score >= the threshold chosen on validation
    clf.version                     # "toxicity@sha256:<hash of the head weights>"

Classifiers: toxicity, hate, offensive, harmful_response, refusal, prompt_injection (heads), and
claim_match (nearest FEVER claims: ``load_classifier("claim_match").match(texts, k=3)``).
Texts are normalised against evasion first (``assay.classify.normalise``). This module imports
cheaply; the encoder loads on the first ``score``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from assay.errors import BadInput

if TYPE_CHECKING:
    from assay.classify.claims import ClaimMatcher
    from assay.classify.model import Classifier

__all__ = ["available", "load_classifier", "score_many"]


def available() -> list[str]:
    """Names of the classifiers whose trained heads (or configs) are committed."""
    from assay.classify.model import ALL_NAMES, MODELS_DIR

    return [name for name in ALL_NAMES if (MODELS_DIR / f"{name}.json").is_file()]


@lru_cache(maxsize=16)
def _load(name: str) -> Classifier | ClaimMatcher:
    from assay.classify.model import ALL_NAMES, load_head_classifier

    if name not in ALL_NAMES:
        raise BadInput(f"unknown classifier {name!r}; known: {', '.join(ALL_NAMES)}")
    if name == "claim_match":
        from assay.classify.claims import load_matcher

        return load_matcher()
    return load_head_classifier(name)


def load_classifier(name: str) -> Classifier | ClaimMatcher:
    """The committed classifier ``name`` (loaded once per process; no retraining)."""
    return _load(name)


def __getattr__(name: str):  # imported on first use: the encoder's module is heavy
    if name == "score_many":
        from assay.classify.model import score_many

        return score_many
    raise AttributeError(f"module 'assay.classify' has no attribute {name!r}")
