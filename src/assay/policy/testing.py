"""``assay policy test``: the bundle's own ``tests:`` cases, like ``opa test``.

Rule cases run through BOTH evaluators and fail if they disagree, so a bundle's tests also
check the vectorised compilation of its own rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from assay.policy.batch import Batch
from assay.policy.model import TestCase
from assay.policy.slate import decide_records


@dataclass
class CaseResult:
    case: TestCase
    passed: bool
    problems: list[str]
    got: dict[str, Any]


def run_case(bundle, case: TestCase) -> CaseResult:
    expect, problems, got = case.expect, [], {}
    if case.section == "rules":
        surface = case.params.get("surface")
        if surface is None:
            surfaces = sorted(bundle.surfaces())
            surface = surfaces[0] if surfaces else "*"
        compiled = bundle.compile_rules(str(surface))
        context = {k: v for k, v in case.input.items() if k != "item"}
        items = [case.input.get("item", {})]
        fast = compiled.evaluate(Batch.from_records(context, items))
        ref = compiled.evaluate_reference(Batch.from_records(context, items))
        if not np.array_equal(fast, ref):
            problems.append(f"evaluators disagree: vectorised {fast[:, 0].tolist()} vs reference {ref[:, 0].tolist()}")
        # the guard's own slate semantics (rollout for the request's subject, the unlabeled
        # pre-drop of a fail-closed surface unless the case says `mode: fail_open`, caps)
        decision = decide_records(compiled, context, items, unlabeled_drop=case.params.get("mode", "fail_closed") != "fail_open").candidate(0)
        got = {"action": decision.action, "rules": decision.rule_ids, "factor": decision.factor, "labels": decision.labels}
        if "action" in expect and expect["action"] != decision.action:
            problems.append(f"expected action {expect['action']}, got {decision.action}")
        if "rule" in expect and expect["rule"] not in decision.rule_ids:
            problems.append(f"expected rule {expect['rule']} to fire, fired: {decision.rule_ids or 'none'}")
        if "rules" in expect and list(expect["rules"]) != decision.rule_ids:
            problems.append(f"expected rules {expect['rules']}, fired: {decision.rule_ids}")
        if "factor" in expect and abs(float(expect["factor"]) - decision.factor) > 1e-9:
            problems.append(f"expected factor {expect['factor']}, got {decision.factor}")
        if "labels" in expect and list(expect["labels"]) != decision.labels:
            problems.append(f"expected labels {expect['labels']}, got {decision.labels}")
    elif case.section == "gates":
        report = bundle.check_gates(case.input, only=case.params.get("only"))
        verdicts = {v.id: v.verdict for v in report.verdicts}
        got = {"pass": report.passed, "failed": report.failed, "inconclusive": report.inconclusive, "verdicts": verdicts}
        if "pass" in expect and bool(expect["pass"]) != report.passed:
            problems.append(f"expected gates to {'pass' if expect['pass'] else 'not pass'}; not passed: "
                            + (", ".join(f"{v.id} ({v.verdict})" for v in report.verdicts if not v.passed) or "none"))
        if "failed" in expect and sorted(expect["failed"]) != sorted(report.failed):
            problems.append(f"expected gates not passed {expect['failed']}, got {report.failed}")
        if "inconclusive" in expect and sorted(expect["inconclusive"]) != sorted(report.inconclusive):
            problems.append(f"expected inconclusive gates {expect['inconclusive']}, got {report.inconclusive}")
        for gid, want in (expect.get("verdicts") or {}).items():
            if verdicts.get(gid) != want:
                problems.append(f"expected gate {gid} to be {want}, got {verdicts.get(gid, 'not evaluated')}")
    elif case.section == "purposes":
        verdict = bundle.check_purposes(case.input)
        got = {"verdict": "allow" if verdict.allowed else "deny", "rules": verdict.deciding}
        if "verdict" in expect and expect["verdict"] != got["verdict"]:
            problems.append(f"expected {expect['verdict']}, got {got['verdict']} by {verdict.deciding}")
        if "rules" in expect and sorted(expect["rules"]) != sorted(verdict.deciding):
            problems.append(f"expected deciding rules {expect['rules']}, got {verdict.deciding}")
    else:
        fired = [a.id for a in bundle.check_alerts(case.input)]
        got = {"fired": fired}
        if "fired" in expect and sorted(expect["fired"]) != sorted(fired):
            problems.append(f"expected alerts {expect['fired']} to fire, fired: {fired}")
    return CaseResult(case, not problems, problems, got)


def run_tests(bundle) -> list[CaseResult]:
    return [run_case(bundle, case) for case in bundle.tests]
