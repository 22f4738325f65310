"""The policy language: YAML bundles whose conditions are CEL, type-checked at load time by the
CEL library, evaluated per context by the library (reference) and per candidate batch by a
compiled numpy evaluator (vectorised). See docs/policy.md."""

from assay.policy.batch import Batch, ListValues
from assay.policy.bundle import Bundle, load_bundle
from assay.policy.diff import BundleDiff, diff
from assay.policy.model import (
    Action,
    Alert,
    CandidateDecision,
    Gate,
    GateReport,
    GateVerdict,
    MitigationCall,
    Outcome,
    Purpose,
    PurposeVerdict,
    Rule,
    TestCase,
)
from assay.policy.slate import SlateDecision, decide_slate
from assay.policy.source import PolicyError

__all__ = [
    "Action",
    "Alert",
    "Batch",
    "Bundle",
    "BundleDiff",
    "CandidateDecision",
    "Gate",
    "GateReport",
    "GateVerdict",
    "ListValues",
    "MitigationCall",
    "Outcome",
    "PolicyError",
    "Purpose",
    "PurposeVerdict",
    "Rule",
    "SlateDecision",
    "TestCase",
    "decide_slate",
    "diff",
    "load_bundle",
]
