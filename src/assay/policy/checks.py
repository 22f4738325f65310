"""Gates, purpose checks and alerts: one context per decision, evaluated by the reference
evaluator (the CEL library).

Gates weigh evidence: a gate reads metrics (``eval.metrics["x"]``), and each metric comes with the
number of items behind it (``eval.n``) and its 95% interval (``eval.intervals``). By default a gate
is evaluated across the whole interval box of the metrics it reads (each interval's ends, three
points inside it and the point estimate; for several metrics every combination, up to
``MAX_GRID`` evaluations, else the corners): it **passes** when the condition holds everywhere,
**fails** when it holds nowhere, and is **inconclusive** when it holds for part of the interval.
For conditions that carve out one convex region of metric values (comparisons joined by ``&&``,
the usual gate) holding at the corners means holding everywhere; for other shapes the grid is a
dense check, not a proof. Too few items is inconclusive, never a pass."""

from __future__ import annotations

import math
from typing import Any

from assay.policy.model import Alert, GateReport, GateVerdict, Outcome, PurposeVerdict
from assay.policy.reference import evaluate_context

METRICS = "eval.metrics"
GRID_POINTS_ONE_METRIC = (0.0, 0.25, 0.5, 0.75, 1.0)  # where inside an interval a gate is evaluated
MAX_GRID = 256


def metric_keys(compiled) -> tuple[set[str], bool]:
    """The literal keys a condition reads from ``eval.metrics`` (``eval.metrics["x"]`` or
    ``eval.metrics.x``), and whether it also reads the map some other way (so its evidence
    cannot be attributed to named metrics)."""
    from assay.policy.checked_ast import decode_checked

    ast = decode_checked(compiled.program.serialize())
    keys: set[str] = set()
    other = False

    def is_metrics(node) -> bool:
        return node is not None and node.kind == "ident" and node.value == METRICS

    def walk(node, parent_ok: bool = False) -> None:
        nonlocal other
        if node.kind == "call" and node.value == "_[_]" and len(node.args) == 2 and is_metrics(node.args[0]):
            if node.args[1].kind == "const" and isinstance(node.args[1].value, str):
                keys.add(node.args[1].value)
            else:
                other = True
                walk(node.args[1])
            return
        if node.kind == "select" and is_metrics(node.target) and not node.test_only:
            keys.add(str(node.value))
            return
        if is_metrics(node) and not parent_ok:
            other = True
        for child in [node.target, *node.args] if node.target is not None else node.args:
            walk(child, node.kind == "select" and node.test_only)

    walk(ast.root)
    return keys, other


def _evidence(context: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    ev = context.get("eval") if isinstance(context, dict) else None
    ev = ev if isinstance(ev, dict) else {}

    def mapping(key: str) -> dict[str, Any]:
        v = ev.get(key)
        return v if isinstance(v, dict) else {}

    return mapping("metrics"), mapping("n"), mapping("intervals"), mapping("judges")


def _interval(raw: Any) -> tuple[float, float] | None:
    try:
        lo, hi = (float(x) for x in raw)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        return None
    return lo, hi


def _with_metrics(context: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    ev = dict(context["eval"])
    ev["metrics"] = {**ev["metrics"], **values}
    return {**context, "eval": ev}


def _grid(points: dict[str, list[float]]) -> list[dict[str, float]] | None:
    keys = sorted(points)
    size = 1
    for k in keys:
        size *= len(points[k])
    if size > MAX_GRID:
        return None
    combos: list[dict[str, float]] = [{}]
    for k in keys:
        combos = [{**c, k: v} for c in combos for v in points[k]]
    return combos


def _judge_notes(keys: set[str], judges: dict[str, Any]) -> list[str]:
    notes = []
    for k in sorted(keys):
        j = judges.get(k)
        if isinstance(j, dict) and not j.get("validated", False):
            notes.append(f"eval.metrics[{k!r}] comes from judge {j.get('judge', '?')}, which was never validated "
                         "against human labels: the number is that judge's opinion, of unknown accuracy")
    return notes


def gate_verdict(bundle, gate, context: dict[str, Any]) -> GateVerdict:
    """One gate weighed on its evidence (see :class:`assay.policy.model.Gate`)."""
    outcome = evaluate_context(bundle, "gates", gate.id, context)
    base = gate.reason or gate.when
    if outcome == Outcome.MISSING:
        verdict = "pass" if gate.on_missing == "skip" else "fail"
        return GateVerdict(gate.id, verdict == "pass", outcome, f"could not be evaluated (missing or ill-typed input): {gate.when}",
                           verdict=verdict, decide=gate.decide, missing=["a value for every metric the gate reads"])
    metrics, ns, intervals, judges = _evidence(context)
    keys, other = metric_keys(bundle.compiled("gates", gate.id))
    notes = _judge_notes(keys, judges)
    evidence = {k: {"value": metrics.get(k), "n": ns.get(k), "interval": intervals.get(k)} for k in sorted(keys)}
    for k in sorted(keys):
        if isinstance(judges.get(k), dict):
            evidence[k]["judge"] = judges[k].get("judge")
            evidence[k]["judge_validated"] = bool(judges[k].get("validated", False))

    def verdict_of(v: str, reason: str, missing: list[str] | None = None) -> GateVerdict:
        return GateVerdict(gate.id, v == "pass", outcome, reason, verdict=v, decide=gate.decide, evidence=evidence,
                           missing=missing or [], notes=notes)

    missing_n = [k for k in sorted(keys) if not isinstance(ns.get(k), int) or isinstance(ns.get(k), bool)]
    if missing_n:
        return verdict_of("inconclusive", f"{base} -- not decided: the number of items behind "
                          f"{', '.join(missing_n)} is not known", [f"eval.n[{k!r}]" for k in missing_n])
    small = [k for k in sorted(keys) if ns[k] < gate.min_n]
    if small:
        return verdict_of("inconclusive", f"{base} -- not decided: too few items ("
                          + ", ".join(f"{k} has n={ns[k]}" for k in small) + f"; the gate needs min_n={gate.min_n})",
                          [f"at least {gate.min_n} items for {k} (has {ns[k]})" for k in small])
    if other:
        notes.append("the condition reads eval.metrics without literal keys, so its evidence cannot be weighed per metric")
    if gate.decide == "point" or not keys or other:
        v = "pass" if outcome == Outcome.TRUE else "fail"
        how = "decided on the point estimate (decide: point)" if gate.decide == "point" else "decided on the values given"
        return verdict_of(v, f"{base} -- {how}")
    bounds = {k: _interval(intervals.get(k)) for k in sorted(keys)}
    no_interval = [k for k, b in bounds.items() if b is None]
    if no_interval:
        return verdict_of("inconclusive", f"{base} -- not decided: no 95% interval for {', '.join(no_interval)}",
                          [f"eval.intervals[{k!r}]" for k in no_interval])
    points: dict[str, list[float]] = {}
    for k, (lo, hi) in bounds.items():  # type: ignore[misc]
        inside = [lo + t * (hi - lo) for t in GRID_POINTS_ONE_METRIC]
        value = float(metrics[k])
        points[k] = sorted({*inside, min(max(value, lo), hi)})
    grid = _grid(points) or _grid({k: [lo, hi] for k, (lo, hi) in bounds.items()})  # type: ignore[misc]
    if grid is None:
        return verdict_of("inconclusive", f"{base} -- not decided: the gate reads too many metrics to weigh their "
                          "intervals; set decide: point to decide on the point estimates", ["decide: point, or fewer metrics per gate"])
    seen = {evaluate_context(bundle, "gates", gate.id, _with_metrics(context, combo)) for combo in grid}
    span = "; ".join(f"{k} {metrics[k]:.4g} [{lo:.4g}, {hi:.4g}] n={ns[k]}" for k, (lo, hi) in bounds.items())  # type: ignore[misc]
    if seen == {Outcome.TRUE}:
        return verdict_of("pass", f"{base} -- holds over the whole 95% interval ({span})")
    if seen == {Outcome.FALSE}:
        return verdict_of("fail", f"{base} -- fails over the whole 95% interval ({span})")
    return verdict_of("inconclusive", f"{base} -- not decided: the 95% interval straddles the threshold ({span}); "
                      f"the point estimate {'passes' if outcome == Outcome.TRUE else 'fails'}",
                      [f"more items, to narrow the interval of {', '.join(bounds)}"])


def check_gates(bundle, context: dict[str, Any], only: list[str] | None = None) -> GateReport:
    """Every gate's verdict: pass, fail or inconclusive (see :class:`assay.policy.model.Gate`).

    The context is ``{"eval": {"metrics": {...}, "n": {...}, "intervals": {name: [lo, hi]},
    "judges": {name: {"judge": ..., "validated": bool}}}}``; ``n`` and ``intervals`` are the
    evidence (without them a gate on a metric is inconclusive), ``judges`` says which judge made a
    judged metric. A gate whose condition cannot be evaluated fails unless ``on_missing: skip``."""
    verdicts = [gate_verdict(bundle, gate, context) for gate in bundle.gates if only is None or gate.id in only]
    return GateReport(all(v.passed for v in verdicts), verdicts)


def check_purposes(bundle, context: dict[str, Any]) -> PurposeVerdict:
    """Deny by default; any matching deny beats every allow; the verdict names every rule that
    decided it. A deny rule that cannot be evaluated matches (fail closed) unless ``skip``."""
    allow, deny, reasons = [], [], []
    for purpose in bundle.purposes:
        outcome = evaluate_context(bundle, "purposes", purpose.id, context)
        matched = outcome == Outcome.TRUE or (
            outcome == Outcome.MISSING and purpose.on_missing == "fail_closed" and purpose.effect == "deny"
        )
        if not matched:
            continue
        (deny if purpose.effect == "deny" else allow).append(purpose.id)
        why = purpose.reason or purpose.when
        if outcome == Outcome.MISSING:
            why = f"could not be evaluated, denied (fail closed): {purpose.when}"
        reasons.append(f"{purpose.id}: {why}")
    if deny:
        return PurposeVerdict(False, deny, allow, deny, [r for r in reasons if r.split(":")[0] in deny])
    if allow:
        return PurposeVerdict(True, allow, allow, deny, reasons)
    return PurposeVerdict(False, ["default-deny"], [], [], ["no purpose rule allows this use (deny by default)"])


def check_alerts(bundle, context: dict[str, Any]) -> list[Alert]:
    fired = []
    for alert in bundle.alerts:
        outcome = evaluate_context(bundle, "alerts", alert.id, context)
        if outcome == Outcome.TRUE or (outcome == Outcome.MISSING and alert.on_missing == "fail_closed"):
            fired.append(alert)
    return fired
