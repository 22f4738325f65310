"""Demo step 7: one HTML assurance report of everything the earlier steps established, and the
address of the dashboard that ``assay server`` serves.

The report is built only from ``ctx.state`` (ids, verdicts, metrics with intervals, file
paths) and from the registry and trace those ids point to; it never reads a dataset, so no
prompt, answer or tweet text can reach it. Strings longer than a line are left out as a second
guard. It is rendered with Jinja2 (autoescaped) and written atomically (temporary file, then
rename), so an interrupted run leaves the previous report or none.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

TITLE = "Assurance report: one page of evidence, and the dashboard"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750  # the default of `assay server --port`
MAX_TEXT = 160  # longer strings are not shown: ids, verdicts and reasons are shorter than this

# state keys each part leaves in ctx.state (structured evidence beside its narration)
STATE_KEYS = {
    "govern": ("govern",), "recsys": ("recsys",), "redteam": ("redteam", "redteam_run"),
    "classify": ("classifier_versions",), "evaluate": ("evaluate", "evaluation_result", "evaluate_live_run"),
    "mitigate": ("mitigation_run", "mitigated_model"), "guard": ("guard",), "monitor": ("monitor", "monitor_alert_key"),
    "trace": ("trace",), "explain": ("explain",),
}  # fmt: skip

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>assay assurance report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1b1b1b}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em} td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4} .pass{color:#126b12;font-weight:600} .fail{color:#a31515;font-weight:600}
.muted{color:#666} code{background:#f4f4f4;padding:0 .2em} .path{font-family:monospace}
</style></head><body>
<h1>assay assurance report</h1>
<p class="muted">generated {{ generated }} by <code>assay demo{{ ' --quick' if quick else '' }}</code>; state in <span class="path">{{ home }}</span>.
Only identifiers, verdicts and aggregate figures appear here: no dataset text.</p>
<table><tr><th>stage</th><th>step</th><th>status</th><th>seconds</th><th>note</th></tr>
{% for r in steps %}<tr><td>{{ r.stage }}</td><td>{{ r.part }}</td>
<td class="{{ 'pass' if r.status == 'done' else 'fail' }}">{{ r.status }}</td><td>{{ '%.1f'|format(r.seconds) }}</td><td>{{ r.note }}</td></tr>
{% endfor %}</table>
<p>Dashboard: run <code>assay server</code> and open <a href="{{ dashboard }}">{{ dashboard }}</a>
(log in with a token from <code>assay token create --name you --role approver</code>).</p>
{% for s in sections %}
<h2>{{ s.stage }}/7. {{ s.heading }}</h2>
{% if not s.steps %}<p class="muted">this stage did not run.</p>{% endif %}
{% for st in s.steps %}
<h3>{{ st.title }} <span class="{{ 'pass' if st.status == 'done' else 'fail' }}">({{ st.status }})</span></h3>
{% if st.note %}<p class="muted">{{ st.note }}</p>{% endif %}
{% if st.lines %}<ul>{% for line in st.lines %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% for b in st.blocks %}
{% if b.kind == 'metrics' %}<h4>{{ b.title }}</h4><table><tr><th>metric</th><th>value</th><th>95% interval</th><th>n</th></tr>
{% for m in b.rows %}<tr><td>{{ m.name }}</td><td>{{ m.value }}</td><td>{{ m.interval }}</td><td>{{ m.n }}</td></tr>{% endfor %}</table>
{% elif b.kind == 'gates' %}<h4>{{ b.title }}</h4><table><tr><th>gate</th><th>verdict</th></tr>
{% for g in b.rows %}<tr><td>{{ g.id }}</td><td class="{{ 'pass' if g.passed else 'fail' }}">{{ 'pass' if g.passed else (g.verdict or 'fail') | upper }}</td></tr>{% endfor %}</table>
{% elif b.kind == 'facts' %}<details><summary>{{ b.title }}</summary><table>
{% for k, v in b.rows %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></details>
{% endif %}{% endfor %}{% endfor %}{% endfor %}
</body></html>
"""


def dashboard_url(host: str | None = None, port: int | None = None) -> str:
    """Where ``assay server`` serves the dashboard (``ASSAY_SERVER_HOST``/``_PORT`` override the defaults)."""
    host = host or os.environ.get("ASSAY_SERVER_HOST", DEFAULT_HOST)
    port = port or int(os.environ.get("ASSAY_SERVER_PORT", DEFAULT_PORT))
    return f"http://{host}:{port}/ui/"


def _num(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else f"{value:,}"


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ", ".join(_text(v) for v in value)
    s = str(value)
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 1] + "…"


def _metric_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    """Rows for metrics given as ``{name: {value, ci_low, ci_high, n}}`` or ``{name: value}``."""
    rows = []
    for name, m in metrics.items():
        if isinstance(m, dict) and "value" in m:
            lo, hi = m.get("ci_low"), m.get("ci_high")
            interval = f"[{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else ""
            rows.append(
                {
                    "name": name,
                    "value": _num(m["value"]),
                    "interval": interval,
                    "n": _num(m.get("n", "")),
                }
            )
        elif isinstance(m, int | float) and not isinstance(m, bool):
            rows.append({"name": name, "value": _num(m), "interval": "", "n": ""})
    return rows


def _evaluation_blocks(result: Any) -> list[dict[str, Any]]:
    """An EvaluationResult (object or dict): metrics with intervals, then gate verdicts."""
    r = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    metrics = {
        k: {
            "value": v,
            "ci_low": (r.get("intervals", {}).get(k) or (None, None))[0],
            "ci_high": (r.get("intervals", {}).get(k) or (None, None))[1],
            "n": r.get("n", {}).get(k, ""),
        }
        for k, v in (r.get("metrics") or {}).items()
        if "[" not in k
    }  # fmt: skip  (per-group rows: see its report)
    target = r.get("target", "?")
    try:  # targets are recorded as their JSON fingerprint: name the kind and model only
        spec = json.loads(target)
        target = " ".join(str(spec[k]) for k in ("kind", "model", "name") if k in spec) or target
    except (TypeError, ValueError):
        pass
    title = f"{r.get('suite', 'suite')} on {target} (run {r.get('run_id', '?')})"
    blocks = [{"kind": "metrics", "title": title, "rows": _metric_rows(metrics)}]
    outcomes = r.get("gate_outcomes") or {}  # pass / fail / inconclusive
    gates = [{"id": g, "passed": bool(p), "verdict": outcomes.get(g)} for g, p in (r.get("gate_verdicts") or {}).items()]
    if gates:
        blocks.append(
            {
                "kind": "gates",
                "title": f"release gates for {r.get('suite', 'the suite')}",
                "rows": gates,
            }
        )
    return blocks


def _facts(title: str, value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten the scalar part of a state entry into (key, value) rows; long text is left out."""
    rows: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            rows.extend(_facts(title, v, f"{prefix}{k}."))
    elif isinstance(value, list | tuple):
        if all(isinstance(v, str | int | float | bool) for v in value) and len(value) <= 12:
            rows.append((prefix.rstrip("."), _text(value)))
    elif isinstance(value, str | int | float | bool) and (
        not isinstance(value, str) or len(value) <= MAX_TEXT
    ):
        rows.append((prefix.rstrip("."), _num(value)))
    return rows


def _state_blocks(key: str, value: Any) -> list[dict[str, Any]]:
    """What one state entry contributes: evaluation results, metrics and gates, then its facts."""
    if hasattr(value, "to_dict") or (
        isinstance(value, dict) and "gate_verdicts" in value and "metrics" in value
    ):
        return _evaluation_blocks(value)
    if not isinstance(value, dict):
        return [{"kind": "facts", "title": key, "rows": _facts(key, {key: value})}]
    blocks: list[dict[str, Any]] = []
    value = dict(value)
    for name in ("evaluations", "evaluation_results"):
        for result in value.pop(name, None) or []:
            blocks.extend(_evaluation_blocks(result))
    if isinstance(value.get("metrics"), dict):
        blocks.append(
            {
                "kind": "metrics",
                "title": f"{key} metrics",
                "rows": _metric_rows(value.pop("metrics")),
            }
        )
    if isinstance(value.get("gates"), list):
        rows = [
            {"id": g.get("id"), "passed": g.get("passed")}
            for g in value.pop("gates")
            if isinstance(g, dict)
        ]
        blocks.append({"kind": "gates", "title": f"{key} gates", "rows": rows})
    facts = [(k, v) for k, v in _facts(key, value) if "/" not in k]
    if facts:
        blocks.append({"kind": "facts", "title": f"{key}: identifiers and figures", "rows": facts})
    return blocks


def build_report(state: dict[str, Any], *, home: Path, quick: bool) -> str:
    """The assurance report's HTML from the demo's shared state: per stage, what each step said
    (its narration, captured by the orchestrator) and the structured evidence it left."""
    from jinja2 import Environment

    from assay.demo_story import DEMO_STEPS, STAGES

    demo = state.get("demo", {})
    results = [r if isinstance(r, dict) else r.__dict__ for r in demo.get("results", [])]
    ran = {r["entry"] for r in results}
    order = {entry: i for i, entry in enumerate(DEMO_STEPS)}
    steps = [r for r in demo.get("earlier", []) if r.get("entry") not in ran] + results
    steps.sort(key=lambda r: order.get(r.get("entry", ""), len(order)))
    by_entry = {r["entry"]: r for r in steps}
    narration = demo.get("narration", {})
    sections = []
    for stage in STAGES[:-1]:
        shown = []
        for entry in stage.steps:
            r = by_entry.get(entry)
            if r is None:
                continue
            part = entry.split(".")[1]
            blocks: list[dict[str, Any]] = []
            if ":" not in entry:  # a part's state belongs to its main step
                for key in STATE_KEYS.get(part, ()):
                    if key in state:
                        blocks.extend(_state_blocks(key, state[key]))
            lines = [
                x if len(x) <= 1000 else x[:999] + "…" for x in map(str, narration.get(entry, []))
            ]
            shown.append({"title": r.get("title") or part, "status": r["status"], "note": _text(r.get("note") or ""),
                          "lines": lines, "blocks": blocks})  # fmt: skip
        sections.append({"stage": stage.number, "heading": stage.title, "steps": shown})
    env = Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"), quick=quick, home=str(home), steps=steps,
        dashboard=dashboard_url(), sections=sections,
    )  # fmt: skip


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def step(ctx: Any) -> None:
    path = ctx.settings.home / "reports" / "assurance.html"
    html = build_report(ctx.state, home=ctx.settings.home, quick=ctx.quick)
    write_atomic(path, html)
    results = ctx.state.get("demo", {}).get("results", [])
    done = sum(
        1
        for r in results
        if getattr(r, "status", None) == "done"
        or (isinstance(r, dict) and r.get("status") == "done")
    )
    ctx.say(f"assurance report ({done} steps' evidence, {len(html) // 1024} KiB) -> {path}")
    ctx.say(f"dashboard: run `assay server` and open {dashboard_url()}  "
            "(log in with a token from `assay token create --name you --role approver`)")  # fmt: skip
    ctx.state["report"] = {"path": str(path), "dashboard": dashboard_url()}
