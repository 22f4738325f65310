"""``assay monitor run``: the watch loop, which composes engines — the monitor's windows, alert
rules and mitigations with the guard's stream worker (``--serve``), scheduled red-team
regressions and evaluation suites (``--schedule``), and the governance registry's rollback.

An orchestrator of several engines sits above them (docs/architecture.md), so it lives in
``cli`` and adds itself to the ``assay monitor`` group; ``assay.monitor`` imports no other engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from assay.errors import BadInput
from assay.files import dumps_json
from assay.monitor.cli import monitor_app


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
    typer.echo(dumps_json(stats.__dict__), err=True)


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
    """Nothing to add at the top level: ``run`` is on ``assay monitor`` (registered on import)."""
