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

Classifiers are registered by name in :data:`CLASSIFIERS` (``@register_classifier("name")`` on a
factory that takes no arguments and returns an object with ``score(texts)`` -> probabilities in
[0, 1], ``threshold``, ``predict(texts)`` and ``version``); the committed heads register here.
A registered classifier is usable everywhere a head is: the ``classifier`` scorer, a ``head``
judge. ``assay.testing.check_classifier`` checks a new one (docs/extending.md).
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

from assay.plugins import Registry

if TYPE_CHECKING:
    from assay.classify.claims import ClaimMatcher
    from assay.classify.model import Classifier

__all__ = ["CLASSIFIERS", "available", "load_classifier", "register_classifier", "score_many"]


def _check_classifier(name: str, obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"a classifier is registered as a factory that takes no arguments, not {type(obj).__name__}")


CLASSIFIERS: Registry[Any] = Registry("classifier", "assay.classifiers", _check_classifier)
register_classifier = CLASSIFIERS.register  # @register_classifier("name") on a no-argument factory


def _head(name: str) -> Classifier:
    from assay.classify.model import load_head_classifier

    return load_head_classifier(name)


def _claim_match() -> ClaimMatcher:
    from assay.classify.claims import load_matcher

    return load_matcher()


def _register_builtins() -> None:
    from assay.classify.model import HEAD_NAMES  # numpy only: still cheap

    for name in HEAD_NAMES:  # the committed heads, then the claim matcher
        CLASSIFIERS.register(name, partial(_head, name))


_register_builtins()
CLASSIFIERS.register("claim_match", _claim_match)
BUILTIN = tuple(CLASSIFIERS.names())


def available() -> list[str]:
    """Names of the classifiers that can be loaded: the built-ins whose trained heads (or
    configs) are committed, then every registered plugin."""
    from assay.classify.model import MODELS_DIR

    return [name for name in CLASSIFIERS.names() if name not in BUILTIN or (MODELS_DIR / f"{name}.json").is_file()]


@lru_cache(maxsize=16)
def _load(name: str, factory: Any) -> Any:
    return factory()


def load_classifier(name: str) -> Classifier | ClaimMatcher:
    """The registered classifier ``name`` (loaded once per process; no retraining)."""
    return _load(name, CLASSIFIERS.get(name))


def __getattr__(name: str):  # imported on first use: the encoder's module is heavy
    if name == "score_many":
        from assay.classify.model import score_many

        return score_many
    raise AttributeError(f"module 'assay.classify' has no attribute {name!r}")
