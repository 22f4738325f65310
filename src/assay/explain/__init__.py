"""Explanations: TreeSHAP attributions of the reference ranker over named signals, why one item
ranks above another, the rule / values / smallest flipping change behind a guard decision (live
or from the trace), sampled attributions in the trace, and the transparency report. See
docs/explain.md.

    from assay.explain import explain_guard, contributions, check_trace

Names are imported lazily so that ``assay.explain.cli`` (and ``assay --help``) stay cheap.
"""

from __future__ import annotations

from assay import lazy_exports

_EXPORTS = {
    "Attribution": "assay.explain.ranking",
    "PairExplanation": "assay.explain.ranking",
    "attribute": "assay.explain.ranking",
    "contributions": "assay.explain.ranking",
    "explain_request": "assay.explain.ranking",
    "top_signals": "assay.explain.ranking",
    "why_above": "assay.explain.ranking",
    "Counterfactual": "assay.explain.guard",
    "GuardExplanation": "assay.explain.guard",
    "TracedExplanation": "assay.explain.guard",
    "check_trace": "assay.explain.guard",
    "explain_guard": "assay.explain.guard",
    "explain_traced": "assay.explain.guard",
    "read_trace": "assay.explain.guard",
    "ExplanationSampler": "assay.explain.sampling",
    "sample_into_trace": "assay.explain.sampling",
    "Transparency": "assay.explain.transparency",
    "transparency": "assay.explain.transparency",
    "write_transparency": "assay.explain.transparency",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
