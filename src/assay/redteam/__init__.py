"""Red-teaming: attacks on an LLM through the evaluation engine (jailbreak, direct, injection,
encoding, multi-turn), filter evasion with and without normalisation, and shilling attacks on the
reference recommender with detectors and mitigation. See docs/redteam.md.

    from assay.redteam import run_llm, run_filters, run_shilling

Names are imported lazily so that ``assay.redteam.cli`` (and ``assay --help``) stay cheap.
"""

from __future__ import annotations

from assay import lazy_exports

_EXPORTS = {
    "Attack": "assay.redteam.attacks",
    "Goal": "assay.redteam.attacks",
    "build": "assay.redteam.attacks",
    "load_filter": "assay.redteam.filters",
    "run_filters": "assay.redteam.filters",
    "load_findings": "assay.redteam.llm",
    "run_attacks": "assay.redteam.llm",
    "run_llm": "assay.redteam.llm",
    "run_regression": "assay.redteam.llm",
    "summarise": "assay.redteam.llm",
    "write_regression_suite": "assay.redteam.llm",
    "perturb": "assay.redteam.perturb",
    "ShillingReport": "assay.redteam.recsys",
    "run_shilling": "assay.redteam.recsys",
    "AttackConfig": "assay.redteam.shilling",
    "inject": "assay.redteam.shilling",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
