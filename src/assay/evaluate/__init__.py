"""Evaluation engine: suites = dataset x target x scorers x metrics x gates, for LLMs and
recommenders. Results stream to disk, runs resume, every aggregate carries n and a 95% interval.

Submodules import lazily; ``assay.evaluate.recsys_metrics`` is usable on its own.

    from assay.evaluate import load_suite, run_suite
"""

from __future__ import annotations

from assay import lazy_exports

_EXPORTS = {
    "run_suite": "assay.evaluate.engine",
    "runs_dir": "assay.evaluate.engine",
    "Suite": "assay.evaluate.suite",
    "builtin_suites": "assay.evaluate.suite",
    "load_suite": "assay.evaluate.suite",
    "rate_interval": "assay.evaluate.stats",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
