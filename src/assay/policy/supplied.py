"""What each producer supplies to the bundle section it evaluates, so that a condition reading an
attribute nobody fills is refused when the bundle loads (issue 27), not silently never true live.

==========  ==================================================  ==========================================
section     producer                                            attributes
==========  ==================================================  ==========================================
alerts      the monitor (one window's statistics)               ``window.*``: :data:`WINDOW`
gates       the evaluation engine (and the deployment gate,     ``eval.metrics``, ``eval.n``
            which passes registered results the same way)
purposes    the registry's deployment gate                      ``dataset.*`` (an ancestor's governing
                                                                terms), ``deployment.*`` (the request)
rules       the guard                                           open: ``request.*`` (the request body as
                                                                the caller sends it) and ``item.*`` (the
                                                                candidate columns; ``item.labels.*`` the
                                                                label store's columns)
==========  ==================================================  ==========================================

The policy foundation owns these records and imports no engine (docs/architecture.md): the
producers read their record (``assay.monitor.windows.WINDOW_ATTRIBUTES`` is :data:`WINDOW`, the
deployment gate's ``deployment.*`` are the fields :data:`PURPOSE` names), and
tests/policy/test_policy_supplied.py holds each producer's real context to its record. What "supplied" means for the guard's open
request and item attributes is written in docs/policy.md ("What the producers supply").
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from assay.policy.actions import BUILTIN_ACTIONS
from assay.policy.types import AttrType, parse_type


@dataclass(frozen=True)
class Supplied:
    """One producer's declaration for one section: exact attribute names with their CEL types,
    and prefixes under which the producer passes on whatever its caller sends."""

    section: str
    producer: str  # in words, as an error message names it
    attributes: Mapping[str, str]  # name -> CEL type signature
    open_prefixes: Mapping[str, str] = field(default_factory=dict)  # prefix -> where its names come from

    def types(self) -> dict[str, AttrType]:
        return {name: parse_type(t) for name, t in self.attributes.items()}

    def problem(self, name: str, declared: AttrType) -> tuple[str, str] | None:
        """Why a bundle may not read ``name`` (declared as ``declared``) in this section, with a
        hint; None when the producer supplies it with a compatible type."""
        if any(name.startswith(prefix) for prefix in self.open_prefixes):
            return None
        supplied = self.attributes.get(name)
        if supplied is None:
            close = difflib.get_close_matches(name, list(self.attributes), n=1, cutoff=0.6)
            known = ", ".join(sorted(self.attributes))
            opened = "".join(f"; any {p}* ({why})" for p, why in self.open_prefixes.items())
            return (f"{self.section} read {name!r}, which {self.producer} does not supply"
                    + (f" (did you mean {close[0]!r}?)" if close else ""),
                    f"{self.producer} supplies: {known}{opened}")
        t = parse_type(supplied)
        if declared != t and not (declared.kind == "double" and t.kind == "int"):
            return (f"{name!r} is declared {declared.signature}, but {self.producer} supplies it as {t.signature}",
                    f"declare it as {t.signature}")
        return None


# One window of the guard's decisions on one surface: assay.monitor.windows.WindowStats.context.
WINDOW = Supplied("alerts", "the monitor", {
    "window.n": "int",
    "window.requests": "int",
    "window.surface": "string",
    "window.duration_s": "double",
    **{f"window.{a}_rate": "double" for a in BUILTIN_ACTIONS},  # fixed: not whatever is registered at import
    "window.action_rate": "map(string, double)",
    "window.rule_rate": "map(string, double)",
    "window.fallback_rate": "double",
    "window.score_mean": "double",
    "window.harm_rate": "double",
    "window.harm_mean": "double",
    "window.rate_low": "map(string, double)",
    "window.rate_high": "map(string, double)",
    "window.rule_rate_low": "map(string, double)",
    "window.rule_rate_high": "map(string, double)",
    "window.psi": "map(string, double)",
    "window.ks": "map(string, double)",
    "window.drifted": "int",
    "window.drift_insufficient": "int",
})

# An evaluation's metrics: assay.evaluate.report.gate_context (the gates also weigh
# eval.intervals and eval.judges, which are evidence the gate reads itself, not declarable types).
EVAL = Supplied("gates", "the evaluation engine", {
    "eval.metrics": "map(string, double)",
    "eval.n": "map(string, int)",
})

# A deployment request against one ancestor's governing terms: assay.govern.gate.
PURPOSE = Supplied("purposes", "the registry's deployment gate", {
    "dataset.purposes": "list(string)",
    "dataset.restrictions": "list(string)",
    "deployment.purpose": "string",
    "deployment.surface": "string",
    "deployment.region": "string",
    "deployment.environment": "string",
})

# The guard passes on what its caller sends: the request body and the candidate columns, with
# item.labels.* read from the label store. Whether a value is there is decided per request
# (on_missing: a rule whose input is missing fails closed by default), not at load.
GUARD = Supplied("rules", "the guard", {}, {
    "request.": "the request body as the caller sends it",
    "item.": "the candidate columns; item.labels.* from the label store",
})

SUPPLIED: dict[str, Supplied] = {s.section: s for s in (GUARD, EVAL, PURPOSE, WINDOW)}
