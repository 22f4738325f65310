"""Filter evasion: perturb content a filter flags and measure how often the perturbed text gets
through — the classifier alone, and the guard's rules acting on the classifier's labels — with
and without the normalisation defence (``assay.classify.normalise``).

Filters: any ``assay.classify`` classifier (``toxicity``, ``hate``, ``offensive``, ...; its own
threshold) and ``profanity-check`` (the ``alt-profanity-check`` package's linear model,
threshold 0.5). "Without normalisation" means the classifier's ``normalise`` switch off
(``light`` clean-up only); for profanity-check the text goes in as it is.

Flagged content comes from the Davidson et al. tweets labelled hate or offensive by the
annotators, restricted to those the filter flags unperturbed with normalisation on — evasion is
only meaningful for content the filter catches in the first place.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.errors import BadInput, Unavailable
from assay.redteam.perturb import PERTURBATIONS, perturb
from assay.stats import rate_interval

PROFANITY_CHECK = "profanity-check"


@dataclass
class Filter:
    name: str
    threshold: float
    score_normalised: Callable[[list[str]], np.ndarray]
    score_raw: Callable[[list[str]], np.ndarray]
    version: str = ""


def load_filter(name: str) -> Filter:
    if name == PROFANITY_CHECK:
        try:
            from profanity_check import predict_prob
        except ImportError as e:
            raise Unavailable("the profanity-check filter needs alt-profanity-check", hint="pip install 'assay[ml]'") from e
        from assay.classify.normalise import normalise

        def norm(texts: list[str]) -> np.ndarray:
            return np.asarray(predict_prob([normalise(t) for t in texts]), dtype=np.float64)

        def raw(texts: list[str]) -> np.ndarray:
            return np.asarray(predict_prob(list(texts)), dtype=np.float64)

        return Filter(name, 0.5, norm, raw, "alt-profanity-check")
    from assay.classify import load_classifier

    clf = load_classifier(name)
    if not hasattr(clf, "normalise"):
        raise BadInput(f"classifier {name!r} is not a text filter (no score/normalise)")
    off = dataclasses.replace(clf, normalise=False)
    return Filter(name, float(clf.threshold), lambda t: np.asarray(clf.score(list(t))), lambda t: np.asarray(off.score(list(t))),
                  clf.version)


def flagged_corpus(limit: int = 200, seed: int = 0) -> list[str]:
    """Davidson tweets the annotators labelled hate (0) or offensive (1), seeded sample."""
    from assay.data import davidson

    texts = [t.text for t in davidson.load_tweets() if t.label in (0, 1)]
    random.Random(seed).shuffle(texts)
    return texts[: limit * 3]  # room for the ones the filter does not flag


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = rate_interval(k, n)
    return {"rate": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi, "evaded": k, "n": n}


GUARD_BUNDLE = """\
bundle: filter-evasion
version: "1"
attributes:
  rules:
    item.labels.{label}: double
rules:
  - id: {label}-drop
    when: item.labels.{label} >= {threshold}
    action: drop
    reason: flagged by the {name} filter
"""


def _guard_survivors(scores: np.ndarray, label: str, bundle: Any, surface: str) -> np.ndarray:
    """Which items the guard's rules let through, given the filter's labels for them."""
    from assay.guard import Guard, GuardConfig
    from assay.store.labels import InMemoryLabelStore

    ids = [f"item-{i}" for i in range(scores.size)]
    store = InMemoryLabelStore()
    store.put(ids, {label: scores.tolist()}, "filter")
    guard = Guard(bundle, store, config=GuardConfig(deadline_ms=60_000, extra_surfaces=(surface,)))
    slate = guard.apply({"request_id": "evasion", "surface": surface, "user": {"id": "redteam"}, "deadline_ms": 60_000},
                        {"id": np.array(ids, dtype=object), "score": np.linspace(1, 0, scores.size)})
    served = set(slate.item_ids)
    return np.array([i in served for i in ids])


def run_filters(filter_name: str = PROFANITY_CHECK, *, kinds: Sequence[str] = PERTURBATIONS, limit: int = 100,
                rate: float = 0.6, seed: int = 0, bundle: Any = None, surface: str = "for_you",
                label: str | None = None, texts: Sequence[str] | None = None) -> dict[str, Any]:
    """Evasion rate per perturbation, for the filter and the guard, with and without normalisation."""
    unknown = sorted(set(kinds) - set(PERTURBATIONS))
    if unknown:
        raise BadInput(f"unknown perturbation(s) {', '.join(unknown)}; use any of {', '.join(PERTURBATIONS)}")
    if limit < 1:
        raise BadInput(f"limit must be >= 1, got {limit}")
    flt = load_filter(filter_name)
    pool = list(texts) if texts is not None else flagged_corpus(limit, seed)
    base = flt.score_normalised(pool)
    flagged = [t for t, s in zip(pool, base.tolist(), strict=True) if s >= flt.threshold][:limit]
    if not flagged:
        raise BadInput(f"the {filter_name} filter flags none of the {len(pool)} texts; nothing to evade")
    label = label or filter_name.replace("-", "_")
    if bundle is None:
        import tempfile
        from pathlib import Path

        from assay.policy import load_bundle

        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "filter.yaml"
            p.write_text(GUARD_BUNDLE.format(label=label, threshold=flt.threshold, name=filter_name))
            bundle = load_bundle(p)
    per_kind: dict[str, Any] = {}
    for kind in kinds:
        perturbed = [perturb(t, kind, rate=rate, seed=seed) for t in flagged]
        row: dict[str, Any] = {}
        for mode, fn in (("with_normalisation", flt.score_normalised), ("without_normalisation", flt.score_raw)):
            s = fn(perturbed)
            evaded = s < flt.threshold
            through = _guard_survivors(s, label, bundle, surface)
            row[mode] = {"classifier": _rate(int(evaded.sum()), len(flagged)),
                         "guard": _rate(int(through.sum()), len(flagged)),
                         "mean_score": float(s.mean())}
        per_kind[kind] = row
    clean_through = _guard_survivors(flt.score_normalised(flagged), label, bundle, surface)
    return {
        "filter": filter_name, "version": flt.version, "threshold": flt.threshold, "flagged": len(flagged),
        "rate": rate, "seed": seed, "surface": surface, "label": label,
        "unperturbed_guard_pass": _rate(int(clean_through.sum()), len(flagged)),
        "perturbations": per_kind,
    }
