"""``assay monitor drift|check``. Imports cheaply: the work is imported inside each command.

``assay monitor run``, the watch loop that drives other engines (the guard's stream worker, the
red-team regression, evaluation suites, the registry's rollback), lives above the engines in
``assay.cli.watch`` and adds itself to ``assay monitor``; this module imports no other engine.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer

from assay.errors import EXIT_FAILED, BadInput
from assay.files import dumps_json

monitor_app = typer.Typer(help="Watch live deployments: windows, drift tests, alert rules, mitigations.", no_args_is_help=True)


def _read_table(path: Path, what: str) -> Any:
    from assay.files import read_table

    return read_table(path, what)


@monitor_app.command("drift")
def drift_cmd(
    reference: Path = typer.Option(..., "--reference", "-r", help="Reference window (.parquet, .csv, .jsonl)."),
    current: Path = typer.Option(..., "--current", "-c", help="Current window, same columns."),
    column: list[str] = typer.Option(None, "--column", help="Features to test (repeatable); default every shared column."),
    correction: str = typer.Option("bh", "--correction", help="bh | holm | none, across features."),
    bins: int = typer.Option(10, "--bins", help="Quantile bins for PSI, Jensen-Shannon and chi-square."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Drift tests (PSI, Wasserstein, Jensen-Shannon, KS, chi-square) with effect sizes. Exit 1 when a
    feature drifted or its tests had too little data to decide ("insufficient data")."""
    import pyarrow.types as pat

    from assay.monitor.drift import ReferenceProfile, drift_report

    ref, cur = _read_table(reference, "--reference"), _read_table(current, "--current")
    cols = column or [c for c in ref.column_names if c in cur.column_names]
    if not cols:
        raise BadInput("the reference and current windows share no columns")
    profiles, values = {}, {}
    for c in cols:
        for table, name in ((ref, "--reference"), (cur, "--current")):
            if c not in table.column_names:
                raise BadInput(f"{name} has no column {c!r}; it has {', '.join(table.column_names)}")
        t = ref.schema.field(c).type
        if pat.is_integer(t) or pat.is_floating(t):
            profiles[c] = ReferenceProfile.numeric(c, ref[c].to_numpy(zero_copy_only=False), bins=bins)
            values[c] = cur[c].to_numpy(zero_copy_only=False)
        else:
            profiles[c] = ReferenceProfile.categorical(c, ref[c].to_pylist())
            values[c] = cur[c].to_pylist()
    report = drift_report(profiles, values, correction=correction)
    if as_json:
        typer.echo(dumps_json(report.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"drift ({correction} correction)")
        for h in ("feature", "PSI", "JS", "KS", "KS p adj", "Wasserstein/std", "Cramér V", "chi2 p adj", "status"):
            table.add_column(h)
        for f in report.features:
            table.add_row(f.feature, f"{f.psi:.4f}", f"{f.js_distance:.4f}", "-" if f.ks is None else f"{f.ks:.4f}",
                          "-" if f.ks_p_adjusted is None else f"{f.ks_p_adjusted:.2g}",
                          "-" if f.wasserstein_std is None else f"{f.wasserstein_std:.4f}", f"{f.cramers_v:.4f}",
                          f"{f.chi2_p_adjusted:.2g}", f.status + (f": {'; '.join(f.reasons)}" if f.reasons else ""))
        Console().print(table)
    if report.drifted or report.insufficient:
        raise typer.Exit(EXIT_FAILED)


DECISIONS_LIMIT = 1 << 30  # a JSON Lines file of decisions is read whole: at most 1 GiB


def _load_decisions(path: Path) -> list[dict]:
    if path.is_dir():  # a trace log folder
        from assay.monitor.engine import trace_records
        from assay.trace.log import TraceLog

        log = TraceLog.open(path, read_only=True)
        try:
            return [r for r in trace_records(log) if r.get("type") == "decision"]
        finally:
            log.close()
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        from assay.files import read_json

        rows = read_json(path, "decisions", lines=True, limit=DECISIONS_LIMIT)
        return _decisions(rows, path)
    return _decisions(_read_table(path, "--decisions").to_pylist(), path)


def _decisions(rows: list[Any], path: Path) -> list[dict]:
    """The decision records among ``rows`` (what the guard's ``--decisions-out`` writes: decisions,
    and events such as breaker transitions, which carry a ``kind`` and are left out, as the trace
    reader leaves them out). A row that is neither is bad input naming its place: counted, it
    would change every rate of its window."""
    out = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise BadInput(f"{path}: row {n}: a decision must be an object, got {type(row).__name__}")
        if "action" not in row and "kind" in row:
            continue
        if not isinstance(row.get("action"), str):
            raise BadInput(f"{path}: row {n}: not a decision record: 'action' must be a string")
        ts = row.get("ts", 0.0)
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
            raise BadInput(f"{path}: row {n}: 'ts' must be a finite number of seconds, got {ts!r:.40}")
        out.append(row)
    return out


@monitor_app.command("check")
def check_cmd(
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Policy bundle with an alerts section."),
    decisions: Path = typer.Option(..., "--decisions", "-d", help="Recorded decisions: a trace log folder, .jsonl or .parquet."),
    window_s: float = typer.Option(60.0, "--window-s", help="Tumbling window length in seconds (event time)."),
    window_n: int = typer.Option(None, "--window-n", help="Also close a window at this many decisions."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate the bundle's alert rules over windows of recorded decisions (no mitigations run). Exit 1 if any fired."""
    from assay.monitor.engine import Monitor
    from assay.monitor.windows import TumblingWindows
    from assay.policy import load_bundle

    b = load_bundle(bundle)
    monitor = Monitor(b)
    if not monitor.alerts:
        raise BadInput(f"{bundle}: the bundle has no alerts section")
    rows = sorted(_load_decisions(decisions), key=lambda r: float(r.get("ts") or 0.0))
    windows = TumblingWindows(window_s, max_n=window_n)
    closed = windows.add(rows) + windows.flush()
    out = []
    for w in closed:
        fired = [a.id for a in monitor.fired_alerts(w)]
        out.append({**w.to_dict(), "fired": fired})
    fired_any = any(o["fired"] for o in out)
    if as_json:
        typer.echo(dumps_json({"bundle": b.name, "bundle_hash": b.hash, "windows": out}, indent=2, sort_keys=True, default=str))
    else:
        for o in out:
            typer.echo(f"{o['surface']:<12} [{o['start']:.0f}, {o['end']:.0f}] n={o['n']:<7} drop_rate={o['drop_rate']:.3f} "
                       f"fired: {', '.join(o['fired']) or '-'}")
    if fired_any:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
