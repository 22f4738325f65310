"""``assay monitor run|drift|check``. Imports cheaply: the work is imported inside each command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from assay.errors import EXIT_FAILED, BadInput

monitor_app = typer.Typer(help="Watch live deployments: windows, drift tests, alert rules, mitigations.", no_args_is_help=True)


def _read_table(path: Path, what: str) -> Any:
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    if not path.is_file():
        raise BadInput(f"{what}: no such file {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pq.read_table(path)
    if suffix == ".csv":
        return pcsv.read_csv(path)
    if suffix in (".jsonl", ".ndjson"):
        import pyarrow.json as pjson

        return pjson.read_json(path)
    raise BadInput(f"{what}: unsupported format {suffix!r} ({path}); use .parquet, .csv or .jsonl")


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
        typer.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str))
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
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BadInput(f"{path}:{n}: invalid JSON: {e.msg}") from e
        return rows
    return _read_table(path, "--decisions").to_pylist()


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
        typer.echo(json.dumps({"bundle": b.name, "bundle_hash": b.hash, "windows": out}, indent=2, sort_keys=True, default=str))
    else:
        for o in out:
            typer.echo(f"{o['surface']:<12} [{o['start']:.0f}, {o['end']:.0f}] n={o['n']:<7} drop_rate={o['drop_rate']:.3f} "
                       f"fired: {', '.join(o['fired']) or '-'}")
    if fired_any:
        raise typer.Exit(EXIT_FAILED)


def _job(spec: str) -> Any:
    """``regress:DIR:EVERY_S`` or ``eval:SUITE:EVERY_S``."""
    from assay.monitor.loop import ScheduledJob

    try:
        kind, rest = spec.split(":", 1)
        ref, every_text = rest.rsplit(":", 1)
        every = float(every_text)
    except ValueError as e:
        raise BadInput(f"--schedule {spec!r}: expected regress:DIR:SECONDS or eval:SUITE:SECONDS") from e
    if kind == "regress":
        def run_regress() -> dict:
            from assay.redteam.llm import run_regression

            return run_regression(ref).to_dict()["summary"]["overall"]

        return ScheduledJob(f"regress:{ref}", every, run_regress)
    if kind == "eval":
        def run_eval() -> dict:
            from assay.evaluate.engine import run_suite

            outcome = run_suite(ref)
            return {"run_id": outcome.run_id, "passed": outcome.passed}

        return ScheduledJob(f"eval:{ref}", every, run_eval)
    raise BadInput(f"--schedule {spec!r}: unknown job kind {kind!r}; use regress or eval")


@monitor_app.command("run")
def run_cmd(
    bundle: Path = typer.Option(..., "--bundle", "-b", help="Policy bundle: alert rules (and serving rules with --serve)."),
    redis_url: str = typer.Option(..., "--redis", help="Redis with the guard worker's output stream."),
    output_stream: str = typer.Option("assay:guard:out", "--output", help="The guard worker's output stream."),
    serve: bool = typer.Option(False, "--serve", help="Also run the guard stream worker in this process, so mitigations act on its breakers."),
    input_stream: str = typer.Option("assay:guard:in", "--input", help="Input stream for --serve."),
    labels: str = typer.Option(None, "--labels", help="Label store for --serve (Parquet file or redis:// URL)."),
    window_s: float = typer.Option(60.0, "--window-s"),
    window_n: int = typer.Option(None, "--window-n"),
    poll_s: float = typer.Option(1.0, "--poll-s"),
    cooldown_s: float = typer.Option(300.0, "--cooldown-s", help="An alert does not fire again for a surface within this time."),
    schedule: list[str] = typer.Option(None, "--schedule", help="regress:DIR:SECONDS or eval:SUITE:SECONDS (repeatable)."),
    trace: bool = typer.Option(True, "--trace/--no-trace", help="Record alerts and mitigations in the trace log (ASSAY_HOME/trace)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Stop after this many polls (default: run until SIGINT/SIGTERM)."),
) -> None:
    """The watch loop: windows over the guard's decisions, alert rules, mitigations, scheduled suites. Stops cleanly on SIGINT/SIGTERM."""
    import threading

    from assay.monitor.engine import Monitor
    from assay.monitor.loop import RedisSlateSource, WatchLoop
    from assay.monitor.mitigations import Mitigator
    from assay.monitor.windows import TumblingWindows
    from assay.policy import load_bundle

    b = load_bundle(bundle)
    jobs = [_job(s) for s in schedule or []]
    log = None
    if trace:
        from assay.trace.log import TraceLog

        log = TraceLog.open()
    worker = stop_worker = worker_thread = transport = None
    breakers = None
    if serve:
        from assay.guard.cli import build_guard
        from assay.guard.stream import RedisStreamsTransport, StreamWorker

        guard = build_guard(str(bundle), labels)
        breakers = guard.breakers
        if log is not None:
            from assay.guard.sink import DecisionQueue

            guard.sink = DecisionQueue(log.append, maxsize=10_000)
        transport = RedisStreamsTransport(redis_url, input_stream=input_stream, output_stream=output_stream)
        worker = StreamWorker(guard, transport, decisions_in_output=True)
        stop_worker = threading.Event()
        worker_thread = threading.Thread(target=worker.run, kwargs={"stop": stop_worker}, name="assay-guard-worker", daemon=True)
        worker_thread.start()
    monitor = Monitor(b, mitigator=Mitigator(breakers=breakers, rollback_fn=registry_rollback()),
                      recorder=log.append if log is not None else None, cooldown_s=cooldown_s)

    def say(f: Any) -> None:
        typer.echo(f"ALERT {f.alert_id} ({f.severity}) on {f.window.surface}: "
                   + "; ".join(f"{m.payload['call']} -> {'ok' if m.payload['ok'] else m.payload.get('error')}" for m in f.mitigations))

    loop = WatchLoop(monitor, RedisSlateSource(redis_url, output_stream), TumblingWindows(window_s, max_n=window_n),
                     jobs=jobs, poll_s=poll_s, on_firing=say)
    typer.echo(f"watching {output_stream} on {redis_url} with {len(monitor.alerts)} alert rule(s) of {b.name} {b.version}"
               + (" (serving)" if serve else ""), err=True)
    try:
        stats = loop.run(max_steps=max_steps)
    finally:
        if stop_worker is not None:
            stop_worker.set()
            worker_thread.join(timeout=10)
            transport.close()
            if worker.guard.sink is not None:
                worker.guard.sink.close()
        if log is not None:
            log.close()
    typer.echo(json.dumps(stats.__dict__), err=True)


def registry_rollback():
    """``rollback(...)`` mitigations roll deployments back in the configured governance registry,
    acting as the monitor (recorded as such in the audit log)."""

    def rollback(deployment: str, to_version: str | None, reason: str):
        from assay.govern.gate import rollback_deployment
        from assay.govern.registry import Actor
        from assay.store import open_store

        return rollback_deployment(open_store(), Actor(name="assay-monitor", role="admin", source="monitor"),
                                   deployment, to_version, reason)

    return rollback


def register(app: typer.Typer) -> None:
    app.add_typer(monitor_app, name="monitor")
