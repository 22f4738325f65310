"""Metrics made of a judge's verdicts: which judge made them, how it validated, how many items
it could not judge, and the evidence gates weigh.

A ``mean`` metric over a judged field (``refused``, ``harmful_flag``, ...) is a rate of a judge's
verdicts. The report names that judge and its validation beside the metric, counts the items
the judge left unparsed (kept out of the rate's denominator, never read as a pass), and -- where
the judge was validated -- adds the rate corrected for the judge's measured error
(:mod:`assay.evaluate.correction`) as ``<metric>_corrected``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from assay.evaluate.report import _value
from assay.evaluate.stats import Aggregate
from assay.judges.correction import correct_with


@dataclass
class JudgedMetrics:
    corrected: dict[str, Aggregate] = field(default_factory=dict)
    by_metric: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> judge, validation, unparsed, corrected
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> judge and validation for the gates


def judged_metrics(metric_specs: list[dict[str, Any]], metrics: dict[str, Aggregate], records: list[dict[str, Any]],
                   judges: dict[str, dict[str, Any]]) -> JudgedMetrics:
    """Annotate every metric computed from a judged field (see the module doc)."""
    out = JudgedMetrics()
    if not judges:
        return out
    ok = [r for r in records if r.get("error") is None]
    for spec in metric_specs:
        kind = spec.get("kind", "mean")
        fld = spec.get("mean") if kind == "mean" else spec.get("pred") if kind == "agreement" else None
        if fld not in judges:
            continue
        info = judges[fld]
        validation = info.get("validation") or {"validated": False}
        note = {"judge": info["judge"], "version": info["version"], "field": fld, "validated": bool(validation.get("validated")),
                "validation": validation}
        if kind == "mean":  # the metric and its per-group rows
            names = [n for n in metrics if n == spec["name"] or (n.startswith(spec["name"] + "[") and n.endswith("]"))]
        else:  # agreement: <name>_accuracy, _kappa, _recall, _precision
            names = [n for n in metrics if n.startswith(spec["name"] + "_")]
        if kind == "mean":
            where = spec.get("where") or {}
            rows = [r for r in ok if all(_value(r, k) == v for k, v in where.items())]
            unparsed = _unparsed_counts(spec, rows, fld)
            counts = _positive_counts(spec, rows, fld)
            for n in names:
                group = n[len(spec["name"]) + 1 : -1] if n.startswith(spec["name"] + "[") else None
                entry = {**note, "unparsed": unparsed.get(group, 0)}
                out.by_metric[n] = entry
                out.evidence[n] = {"judge": note["version"], "validated": note["validated"], "unparsed": entry["unparsed"]}
                k, total = counts.get(group, (0, 0))
                corrected = correct_with(validation, k, total)
                if corrected is None:
                    continue
                cname = f"{spec['name']}_corrected" + (f"[{group}]" if group is not None else "")
                out.corrected[cname] = Aggregate(corrected.value, total, corrected.ci_low, corrected.ci_high,
                                                 method="rogan-gladen", note=corrected.note)
                entry["corrected"] = cname
                out.by_metric[cname] = {**note, "role": f"{n} corrected for the judge's measured error", **corrected.to_dict()}
                out.evidence[cname] = {"judge": note["version"], "validated": True}
        else:
            for n in names:
                out.by_metric[n] = {**note, "role": "agreement of this judge with the labels"}
    return out


def _positive_counts(spec: dict[str, Any], rows: list[dict[str, Any]], fld: str) -> dict[str | None, tuple[int, int]]:
    """(positive verdicts, verdicts) overall (key None) and per ``by`` group."""
    counts: dict[str | None, list[int]] = defaultdict(lambda: [0, 0])
    by = spec.get("by")
    keys = [by] if isinstance(by, str) else (by or [])
    for r in rows:
        v = r.get("scores", {}).get(fld)
        if not isinstance(v, bool):
            continue
        groups: list[str | None] = [None]
        for key in keys:
            g = _value(r, key)
            if g not in (None, ""):
                groups.append(str(g))
        for g in groups:
            counts[g][0] += int(v)
            counts[g][1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def _unparsed_counts(spec: dict[str, Any], rows: list[dict[str, Any]], fld: str) -> dict[str | None, int]:
    """Items whose verdict is missing because the judge could not decide, overall (key None)
    and per ``by`` group."""
    flag = f"{fld}_unparsed"
    counts: dict[str | None, int] = defaultdict(int)
    by = spec.get("by")
    keys = [by] if isinstance(by, str) else (by or [])
    for r in rows:
        if not r.get("scores", {}).get(flag):
            continue
        counts[None] += 1
        for key in keys:
            g = _value(r, key)
            if g not in (None, ""):
                counts[str(g)] += 1
    return dict(counts)
