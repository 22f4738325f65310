"""Run logs as evidence a person reads in ten seconds: the verdict of each run and of each gate
(failures first, each with its reason), metrics with their intervals as inline SVG, the lineage of
what was deployed, and breaker and alert timelines from the trace.

The assurance report (``build_assurance``) and the dashboard's run pages use it. It reads run
logs' headers and summaries only, never their samples, so no prompt, answer or dataset text can
reach a page built here; strings longer than ``MAX_TEXT`` are cut as a second guard. Plots are
hand-written SVG (a few lines each) so that a page is one self-contained file that fetches
nothing.
"""

from __future__ import annotations

import html
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay import runlog

MAX_TEXT = 200
VERDICT_ORDER = {"fail": 0, "inconclusive": 1, "pass": 2, "no gates": 3, "unreadable": -1}
COLOURS = {"fail": "#cf222e", "inconclusive": "#9a6700", "pass": "#1a7f37", "no gates": "#57606a", "unreadable": "#cf222e"}


def short(value: Any, limit: int = MAX_TEXT) -> str:
    s = str(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def run_verdict(log: runlog.RunLog) -> str:
    """fail when any gate failed, inconclusive when none failed but one could not decide, pass
    when every gate passed, ``no gates`` when the run was not gated."""
    gates = log.summary.gates
    if gates is None or not gates.verdicts:
        return "no gates"
    verdicts = {v.verdict for v in gates.verdicts}
    return "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"


@dataclass
class Unreadable:
    """A run log that could not be read: shown as such (never skipped silently)."""

    path: Path
    error: str


@dataclass
class RunView:
    """What a page shows of one run."""

    log: runlog.RunLog
    link: str
    verdict: str = ""
    gates: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.log.kind} · {self.log.header.name}"


def load_runs(paths: Iterable[Path], link_base: Path | None = None) -> tuple[list[RunView], list[Unreadable]]:
    """Read every run log (header and summary only); unreadable ones are returned beside, with why."""
    views, bad = [], []
    for p in paths:
        try:
            log = runlog.read_runlog(p)
        except runlog.RunLogError as e:
            bad.append(Unreadable(p, short(e.message, 400)))
            continue
        views.append(view(log, link_base))
    views.sort(key=lambda v: (VERDICT_ORDER.get(v.verdict, 9), v.log.header.created_at), reverse=False)
    return views, bad


def _link(log: runlog.RunLog, link_base: Path | None) -> str:
    target = log.artifact("report") or log.path
    if link_base is None:
        return target.as_posix()
    return Path(os.path.relpath(target, link_base)).as_posix()


def view(log: runlog.RunLog, link_base: Path | None = None) -> RunView:
    v = RunView(log=log, link=_link(log, link_base), verdict=run_verdict(log))
    if log.summary.gates is not None:
        for g in log.summary.gates.verdicts:
            v.gates.append({"id": g.id, "verdict": g.verdict, "reason": short(g.reason),
                            "notes": [short(n) for n in [*g.notes, *(f"missing: {m}" for m in g.missing)]]})
        v.gates.sort(key=lambda g: VERDICT_ORDER[g["verdict"]])
    weighed: dict[str, tuple[str, str]] = {}  # metric -> (worst verdict of a gate that weighs it, that gate)
    for g in log.summary.gates.verdicts if log.summary.gates is not None else ():
        for metric in g.evidence:
            if metric not in weighed or VERDICT_ORDER[g.verdict] < VERDICT_ORDER[weighed[metric][0]]:
                weighed[metric] = (g.verdict, g.id)
    for name, m in log.summary.metrics.items():
        if "[" in name:  # per-group rows stay in the run's own report
            continue
        verdict, gate = weighed.get(name, ("", ""))
        v.metrics.append({"name": name, "value": m.value, "low": m.ci_low, "high": m.ci_high, "n": m.n, "method": m.method,
                          "judge": m.judge, "judge_validated": m.judge_validated, "note": short(m.note),
                          "verdict": verdict, "gate": gate})
    return v


def gate_table(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """Every gate of every run, failures first, then inconclusive, then passes."""
    rows = [{**g, "run": r.log.run_id, "run_title": r.title, "link": r.link, "bundle": r.log.summary.gates.bundle.hash[:12]}
            for r in runs for g in r.gates if r.log.summary.gates is not None]
    rows.sort(key=lambda g: (VERDICT_ORDER[g["verdict"]], g["run"], g["id"]))
    return rows


# ---------------------------------------------------------------------------------------------
# plots


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def interval_svg(rows: Sequence[dict[str, Any]], *, label: str) -> str:
    """A dot-and-whisker plot: one row per metric, the value as a dot, its 95% interval as a bar,
    n beside it; a row without an interval says so. A metric a gate weighs (``verdict``, ``gate``)
    gets its dot in the verdict's colour and the gate named beside it. Rates share a 0..1 axis."""
    rows = [r for r in rows if math.isfinite(r["value"])]
    if not rows:
        return ""
    finite = [x for r in rows for x in (r["value"], r["low"], r["high"]) if math.isfinite(x)]
    lo, hi = min(finite), max(finite)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    elif lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    left, plot_w, row_h, right = 250, 320, 22, 380
    width, height = left + plot_w + right, 26 + row_h * len(rows)

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * plot_w

    e = html.escape
    parts = [f'<svg class="intervals" width="{width}" height="{height}" role="img" aria-label="{e(label)}" '
             f'font-family="system-ui,sans-serif" font-size="11">',
             f'<line x1="{left}" y1="14" x2="{left}" y2="{height - 4}" stroke="#d0d7de"/>',
             f'<line x1="{left + plot_w}" y1="14" x2="{left + plot_w}" y2="{height - 4}" stroke="#d0d7de"/>',
             f'<text x="{left}" y="10" fill="#57606a">{_fmt(lo)}</text>',
             f'<text x="{left + plot_w}" y="10" fill="#57606a" text-anchor="end">{_fmt(hi)}</text>']
    for i, r in enumerate(rows):
        y = 26 + i * row_h
        name = short(r["name"], 38)
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{e(name)}</text>')
        has_interval = math.isfinite(r["low"]) and math.isfinite(r["high"])
        if has_interval:
            parts.append(f'<line x1="{x(r["low"]):.1f}" y1="{y}" x2="{x(r["high"]):.1f}" y2="{y}" stroke="#4c78a8" stroke-width="3"/>')
        verdict = r.get("verdict") or ""
        colour = COLOURS[verdict] if verdict else ("#0969da" if has_interval else "#9a6700")
        value, low, high = _fmt(r["value"]), _fmt(r["low"]), _fmt(r["high"])
        text = f"{value} [{low}, {high}] n={r['n']}" if has_interval else f"{value}, no interval, n={r['n']}"
        if verdict:  # the gate that weighs this metric, and what it said
            text += f" · gate {short(r.get('gate', ''), 30)}: {verdict.upper()}"
        parts.append(f'<circle cx="{x(r["value"]):.1f}" cy="{y}" r="4" fill="{colour}"><title>{e(name)}: {e(text)}</title></circle>')
        parts.append(f'<text x="{left + plot_w + 8}" y="{y + 4}" fill="#24292f">{e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def interval_plots(rows: Sequence[dict[str, Any]], *, label: str) -> str:
    """Metrics on the 0..1 scale (rates, shares, scores) in one plot and the others in a second
    with their own axis, so a count or a ratio does not squash every rate to a point."""
    def unit(r: dict[str, Any]) -> bool:
        return all(0.0 <= x <= 1.0 for x in (r["value"], r["low"], r["high"]) if math.isfinite(x))

    return (interval_svg([r for r in rows if unit(r)], label=label)
            + interval_svg([r for r in rows if not unit(r)], label=f"{label} (other scales)"))


TIMELINE_COLOURS = {"open": "#cf222e", "half_open": "#9a6700", "half-open": "#9a6700", "closed": "#1a7f37"}


def timeline_svg(events: Sequence[dict[str, Any]], *, label: str) -> str:
    """Events on a time axis, one row per subject (a breaker's scope, an alert's rule): breaker
    transitions coloured by the state they moved to, alerts in orange. ``events`` are dicts with
    ``ts``, ``kind``, ``subject`` and ``payload``."""
    if not events:
        return ""
    subjects = sorted({short(ev["subject"], 40) for ev in events})
    t0 = min(ev["ts"] for ev in events)
    t1 = max(ev["ts"] for ev in events)
    span = max(t1 - t0, 1e-6)
    left, plot_w, row_h = 230, 520, 22
    width, height = left + plot_w + 30, 34 + row_h * len(subjects)
    e = html.escape
    parts = [f'<svg class="timeline" width="{width}" height="{height}" role="img" aria-label="{e(label)}" '
             f'font-family="system-ui,sans-serif" font-size="11">',
             f'<text x="{left}" y="12" fill="#57606a">{e(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0)))} UTC</text>',
             f'<text x="{left + plot_w}" y="12" fill="#57606a" text-anchor="end">+{span:.0f} s</text>']
    row = {s: i for i, s in enumerate(subjects)}
    for s, i in row.items():
        y = 30 + i * row_h
        parts.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{e(s)}</text>'
                     f'<line x1="{left}" y1="{y}" x2="{left + plot_w}" y2="{y}" stroke="#d0d7de"/>')
    for ev in sorted(events, key=lambda ev: ev["ts"]):
        y = 30 + row[short(ev["subject"], 40)] * row_h
        cx = left + (ev["ts"] - t0) / span * plot_w
        payload = ev.get("payload") or {}
        if ev["kind"] == "breaker_transition":
            state = str(payload.get("to", "?"))
            colour, what = TIMELINE_COLOURS.get(state, "#57606a"), f"{payload.get('from', '?')} → {state}"
        else:
            colour, what = "#bc4c00", str(payload.get("rule") or payload.get("alert") or ev["kind"])
        reason = payload.get("reason") or payload.get("message") or ""
        tip = f"{ev['kind']}: {what}" + (f" ({reason})" if reason else "")
        parts.append(f'<circle cx="{cx:.1f}" cy="{y}" r="5" fill="{colour}"><title>{e(short(tip))}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def deployed_lineage(overview: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The part of the lineage graph behind what was deployed: every deployment and its ancestors."""
    edges = [tuple(e) for e in overview.get("edges", [])]
    parents: dict[str, list[str]] = {}
    for src, dst in edges:
        parents.setdefault(dst, []).append(src)
    keep = {a["id"] for a in overview.get("assets", []) if a.get("kind") == "deployment"}
    todo = list(keep)
    while todo:
        for p in parents.get(todo.pop(), []):
            if p not in keep:
                keep.add(p)
                todo.append(p)
    assets = [a for a in overview.get("assets", []) if a["id"] in keep]
    return assets, [e for e in edges if e[0] in keep and e[1] in keep]


# ---------------------------------------------------------------------------------------------
# the assurance report


TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>assay assurance report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;padding:0 1em;color:#1f2328}
h1{margin:.1em 0 .3em} h2{border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:1.4em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em} td,th{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa} .muted{color:#57606a} code,.mono{font-family:ui-monospace,monospace;font-size:.92em}
.badge{display:inline-block;min-width:6.5em;text-align:center;padding:.1em .4em;border-radius:4px;color:#fff;font-weight:700;font-size:.85em}
.badge.fail,.badge.unreadable{background:#cf222e} .badge.inconclusive{background:#9a6700} .badge.pass{background:#1a7f37} .badge.no-gates{background:#6e7781}
#verdict{padding:.8em 1em;border-radius:6px;margin:.6em 0 1em;font-size:1.05em}
#verdict.fail{background:#ffebe9;border:2px solid #cf222e} #verdict.inconclusive{background:#fff8c5;border:2px solid #9a6700}
#verdict.pass{background:#dafbe1;border:2px solid #1a7f37} #verdict.none{background:#f6f8fa;border:2px solid #8c959f}
#verdict h2{border:0;margin:.1em 0 .3em;font-size:1.35em} #verdict ul{margin:.3em 0 0;padding-left:1.2em}
.run{border:1px solid #d0d7de;border-radius:6px;padding:.4em .8em;margin:.6em 0}
.run h3{margin:.3em 0}
</style></head><body>
<h1>assay assurance report</h1>
<p class="muted">generated {{ generated }} from {{ runs|length }} run log{{ '' if runs|length == 1 else 's' }} under <span class="mono">{{ home }}</span>{{ ', the registry and the trace' if lineage_svg or timelines else '' }}.
Only identifiers, verdicts and aggregate figures appear here: no dataset text.</p>

<section id="verdict" class="{{ headline.cls }}">
<h2 id="headline">{{ headline.text }}</h2>
<div>{{ counts.fail }} gate{{ '' if counts.fail == 1 else 's' }} failed · {{ counts.inconclusive }} inconclusive · {{ counts.pass }} passed, across {{ runs|length }} runs{% if unreadable %} · <b>{{ unreadable|length }} run log{{ '' if unreadable|length == 1 else 's' }} unreadable</b>{% endif %}</div>
{% if blocking %}<ul id="blocking">{% for g in blocking %}<li><span class="badge {{ g.verdict }}">{{ g.verdict|upper }}</span> <b class="gate-id">{{ g.id }}</b> on <a href="{{ g.link }}">{{ g.run_title }}</a>: {{ g.reason }}</li>{% endfor %}</ul>{% endif %}
</section>

<h2>Gate verdicts</h2>
{% if gates %}<table id="gates"><tr><th>verdict</th><th>gate</th><th>run</th><th>why</th><th>bundle</th></tr>
{% for g in gates %}<tr class="gate {{ g.verdict }}"><td><span class="badge {{ g.verdict }}">{{ g.verdict|upper }}</span></td><td class="mono">{{ g.id }}</td>
<td><a href="{{ g.link }}">{{ g.run_title }}</a><br><span class="muted mono">{{ g.run }}</span></td>
<td>{{ g.reason }}{% for n in g.notes %}<br><small class="muted">{{ n }}</small>{% endfor %}</td><td class="mono">{{ g.bundle }}</td></tr>
{% endfor %}</table>{% else %}<p class="muted">No run was gated by a policy bundle.</p>{% endif %}

<h2>Runs</h2>
<table id="runs"><tr><th>verdict</th><th>run</th><th>kind</th><th>model</th><th>judges</th><th>written</th></tr>
{% for r in runs %}<tr><td><span class="badge {{ r.verdict|replace(' ', '-') }}">{{ r.verdict|upper }}</span></td><td><a href="{{ r.link }}">{{ r.log.header.name }}</a><br><span class="muted mono">{{ r.log.run_id }}</span></td>
<td>{{ r.log.kind }}</td><td class="mono">{{ r.model }}</td><td>{% for j in r.judges %}<span class="mono">{{ j.version }}</span> {% if j.validated %}(validated){% else %}<b style="color:#cf222e">(NOT validated)</b>{% endif %}<br>{% endfor %}</td>
<td>{{ r.log.header.created_at }}</td></tr>{% endfor %}
{% for u in unreadable %}<tr><td><span class="badge unreadable">UNREADABLE</span></td><td colspan="5" class="mono">{{ u.error }}</td></tr>{% endfor %}
</table>

<h2>Metrics with their 95% intervals</h2>
{% for r in runs if r.plot %}<div class="run"><h3><span class="badge {{ r.verdict|replace(' ', '-') }}">{{ r.verdict|upper }}</span> <a href="{{ r.link }}">{{ r.title }}</a></h3>
{{ r.plot|safe }}</div>{% else %}<p class="muted">No run recorded metrics.</p>{% endfor %}

<h2>What was deployed: lineage</h2>
{% if lineage_svg %}<div id="lineage">{{ lineage_svg|safe }}</div>{% else %}<p class="muted">No deployment in the registry.</p>{% endif %}

<h2>Breakers and alerts (from the trace)</h2>
{% if timelines %}<div id="timelines">{{ timelines|safe }}</div>
<table id="events"><tr><th>when (UTC)</th><th>event</th><th>subject</th><th>what</th></tr>
{% for ev in events %}<tr><td>{{ ev.when }}</td><td>{{ ev.kind }}</td><td class="mono">{{ ev.subject }}</td><td>{{ ev.what }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No breaker transition or alert in the trace.</p>{% endif %}

{% if steps %}<h2>How it was produced</h2>
<table id="steps"><tr><th>stage</th><th>step</th><th>status</th><th>seconds</th><th>note</th></tr>
{% for s in steps %}<tr><td>{{ s.stage }}/7</td><td>{{ s.part }}</td><td><span class="badge {{ 'pass' if s.status == 'done' else 'fail' }}">{{ s.status }}</span></td><td>{{ '%.1f'|format(s.seconds) }}</td><td>{{ s.note }}</td></tr>{% endfor %}
</table>{% endif %}
{% if dashboard %}<p>Dashboard: run <code>assay server</code> and open <a href="{{ dashboard }}">{{ dashboard }}</a>.</p>{% endif %}
</body></html>
"""

EVENT_KINDS = ("breaker_transition", "alert", "mitigation")


def _headline(counts: dict[str, int], runs: Sequence[RunView], unreadable: Sequence[Unreadable]) -> dict[str, str]:
    if counts["fail"]:
        return {"cls": "fail", "text": f"NOT CLEARED: {counts['fail']} gate{'s' if counts['fail'] != 1 else ''} failed"}
    if counts["inconclusive"]:
        return {"cls": "inconclusive", "text": f"NOT CLEARED: {counts['inconclusive']} gate{'s' if counts['inconclusive'] != 1 else ''} inconclusive"}
    if unreadable:
        return {"cls": "fail", "text": f"NOT CLEARED: {len(unreadable)} run log{'s' if len(unreadable) != 1 else ''} unreadable"}
    if counts["pass"]:
        return {"cls": "pass", "text": f"CLEARED: all {counts['pass']} gates passed"}
    return {"cls": "none", "text": "NO GATED RUN: nothing was decided" if runs else "NO RUN LOGS: nothing to report"}


def _event_rows(events: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for ev in sorted(events, key=lambda ev: ev["ts"]):
        p = ev.get("payload") or {}
        if ev["kind"] == "breaker_transition":
            what = f"{p.get('from', '?')} → {p.get('to', '?')}" + (f": {p['reason']}" if p.get("reason") else "")
        else:
            what = ", ".join(f"{k}={v}" for k, v in p.items() if isinstance(v, str | int | float | bool))
        rows.append({"when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ev["ts"])), "kind": ev["kind"],
                     "subject": short(ev["subject"], 80), "what": short(what)})
    return rows


def build_assurance(runs: Sequence[RunView], *, home: Path, unreadable: Sequence[Unreadable] = (),
                    overview: dict[str, Any] | None = None, events: Sequence[dict[str, Any]] = (),
                    steps: Sequence[dict[str, Any]] = (), dashboard: str = "") -> str:
    """The assurance report: the verdict and what blocks it first, then every gate, every run
    with its judges, the metrics as interval plots, the lineage of what was deployed and the
    breaker and alert timelines. Self-contained HTML (inline SVG, no external fetch)."""
    from jinja2 import Environment

    from assay.server.routes.dashboard import lineage_svg

    gates = gate_table(runs)
    counts = {k: sum(1 for g in gates if g["verdict"] == k) for k in ("fail", "inconclusive", "pass")}
    shown = []
    for r in runs:
        judges = [{"version": j.version, "validated": bool(j.validation.get("validated"))} for j in r.log.header.judges.values()]
        model = r.log.header.model
        shown.append({"log": r.log, "link": r.link, "verdict": r.verdict, "title": r.title, "judges": judges,
                      "model": short(model.name, 60) if model else "",
                      "plot": interval_plots(r.metrics, label=f"metrics of {r.log.run_id}")})
    lineage = ""
    if overview:
        assets, edges = deployed_lineage(overview)
        if any(a.get("kind") == "deployment" for a in assets):
            lineage = lineage_svg(assets, edges)
    timelines = timeline_svg(events, label="breaker transitions and alerts")
    return Environment(autoescape=True).from_string(TEMPLATE).render(
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), home=str(home), runs=shown, gates=gates,
        counts=counts, headline=_headline(counts, runs, unreadable), blocking=[g for g in gates if g["verdict"] != "pass"][:12],
        unreadable=unreadable, lineage_svg=lineage, timelines=timelines, events=_event_rows(events), steps=steps,
        dashboard=dashboard,
    )


def trace_events(home: Path, kinds: Sequence[str] = EVENT_KINDS, limit: int = 2000) -> list[dict[str, Any]]:
    """Breaker transitions and alerts from the trace under ``home`` (none when there is no trace)."""
    import json

    if not (home / "trace").exists():
        return []
    import pyarrow as pa
    import pyarrow.compute as pc

    from assay.trace import TraceLog

    log = TraceLog.open(read_only=True)
    try:
        if log.size == 0:
            return []
        table = log.table(["type", "ts", "kind", "event_subject", "payload"])
        table = table.filter(pc.and_(pc.equal(table["type"], "event"), pc.is_in(table["kind"], value_set=pa.array(list(kinds), pa.string()))))
        rows = table.to_pylist()[-limit:]
    finally:
        log.close()
    return [{"ts": float(r["ts"]), "kind": r["kind"], "subject": r["event_subject"] or "", "payload": json.loads(r["payload"] or "{}")}
            for r in rows]
