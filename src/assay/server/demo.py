"""Demo step 7: the assurance report -- evidence, not narration -- and the address of the
dashboard that ``assay server`` serves.

The report is built from the run logs the earlier steps wrote under ``ASSAY_HOME`` (gate verdicts
first, metrics with their intervals as plots, links to each run), the registry (the lineage of
what was deployed) and the trace (breaker and alert timelines); see ``assay.server.evidence``. It
reads run logs' headers and summaries, never their samples, so no prompt, answer or dataset text
can reach it. It is written atomically (temporary file, then rename), so an interrupted run
leaves the previous report or none.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

TITLE = "Assurance report: the evidence on one page, and the dashboard"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8750  # the default of `assay server --port`


def dashboard_url(host: str | None = None, port: int | None = None) -> str:
    """Where ``assay server`` serves the dashboard (``ASSAY_SERVER_HOST``/``_PORT`` override the defaults)."""
    host = host or os.environ.get("ASSAY_SERVER_HOST", DEFAULT_HOST)
    port = port or int(os.environ.get("ASSAY_SERVER_PORT", DEFAULT_PORT))
    return f"http://{host}:{port}/ui/"


def _steps(state: dict[str, Any]) -> list[dict[str, Any]]:
    """How the demo's steps went (stage, part, status, seconds, note), in story order."""
    from assay.demo_story import DEMO_STEPS

    demo = state.get("demo", {})
    results = [r if isinstance(r, dict) else r.__dict__ for r in demo.get("results", [])]
    ran = {r["entry"] for r in results}
    order = {entry: i for i, entry in enumerate(DEMO_STEPS)}
    steps = [r for r in demo.get("earlier", []) if r.get("entry") not in ran] + results
    steps.sort(key=lambda r: order.get(r.get("entry", ""), len(order)))
    return [{"stage": r.get("stage", ""), "part": r.get("part", ""), "status": r.get("status", ""),
             "seconds": float(r.get("seconds") or 0.0), "note": str(r.get("note") or "")[:160]} for r in steps]


def build_report(home: Path, *, state: dict[str, Any] | None = None, store: Any = None) -> str:
    """The assurance report from the run logs under ``home``, the registry in ``store`` (when
    given) and the trace under ``home``; ``state`` adds the demo's step table."""
    from assay.runlog import find_runlogs
    from assay.server import evidence

    runs, unreadable = evidence.load_runs(find_runlogs(home), link_base=home / "reports")
    overview = None
    if store is not None:
        from assay.govern.lineage import overview as lineage_overview

        overview = lineage_overview(store)
    return evidence.build_assurance(runs, home=home, unreadable=unreadable, overview=overview,
                                    events=evidence.trace_events(home), steps=_steps(state or {}), dashboard=dashboard_url())


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
    from assay.store import open_store

    path = ctx.settings.home / "reports" / "assurance.html"
    html = build_report(ctx.settings.home, state=ctx.state, store=open_store())
    write_atomic(path, html)
    gates, runs = html.count('<tr class="gate '), html.count('<div class="run">')
    ctx.say(f"assurance report ({gates} gate verdicts, {runs} runs plotted, {len(html) // 1024} KiB) -> {path}")
    ctx.say(f"dashboard: run `assay server` and open {dashboard_url()}  "
            "(log in with a token from `assay token create --name you --role approver`)")  # fmt: skip
    ctx.state["report"] = {"path": str(path), "dashboard": dashboard_url()}
