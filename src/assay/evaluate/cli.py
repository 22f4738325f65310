"""``assay eval ...`` and ``assay models ...`` commands. Imports stay cheap: the engine, httpx,
matplotlib and torch load inside the commands."""

from __future__ import annotations

import typer

from assay.files import dumps_json

eval_app = typer.Typer(help="Evaluate models and recommenders: suites, runs, resume, reports, gates.", no_args_is_help=True)
models_app = typer.Typer(help="Bundled models: serve SmolLM2 on llama.cpp's OpenAI-compatible server.", no_args_is_help=True)


def _target_override(target_url: str | None, model: str | None, api_key_env: str | None) -> dict | None:
    if target_url:
        spec = {"kind": "openai", "base_url": target_url, "model": model or "default"}
        if api_key_env:
            spec["api_key_env"] = api_key_env
        return spec
    if model:
        return {"kind": "llamacpp", "model": model}
    return None


def _print_outcome(outcome, as_json: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        typer.echo(dumps_json({"run_id": outcome.run_id, "path": str(outcome.path), "report": outcome.report, "stats": outcome.stats}, indent=2, sort_keys=True, default=str))
        return
    console = Console()
    r = outcome.report
    c = r["counts"]
    table = Table(title=f"{r['suite']} · run {outcome.run_id}")
    for col in ("metric", "value", "95% interval", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in r["metrics"].items():
        if "[" in name:
            continue
        table.add_row(name, f"{m['value']:.4f}", f"[{m['ci_low']:.4f}, {m['ci_high']:.4f}]", str(m["n"]))
    console.print(table)
    console.print(f"items {c['items']} · answered {c['ok']} · errors {c['errors'] or 'none'} · scorer errors {c['score_errors'] or 'none'}")
    console.print(f"tokens {c['usage']['prompt_tokens']} prompt + {c['usage']['completion_tokens']} completion · cost {c['usage']['cost']:.6f}")
    if r["gates"]:
        for v in r["gates"]["verdicts"]:
            mark = "[green]pass[/]" if v["passed"] else "[bold red]FAIL[/]"
            console.print(f"gate {v['id']}: {mark}  ({v['reason']})")
    console.print(f"report: {outcome.path / 'report.html'}")


def _exit_for(outcome) -> None:
    """A failed gate is the answer "no": exit code 1 with the failing gates named."""
    if outcome.passed is False:
        from assay.errors import AssayError

        failed = [v["id"] for v in outcome.report["gates"]["verdicts"] if not v["passed"]]
        raise AssayError(f"release gate(s) failed: {', '.join(failed)}", hint=f"see {outcome.path / 'report.html'}")


@eval_app.command("run")
def run_cmd(
    suite: str = typer.Argument(..., help="Suite YAML file or built-in suite name (see `assay eval suites`)."),
    target_url: str = typer.Option(None, "--target-url", help="Evaluate this OpenAI-compatible endpoint instead (…/v1)."),
    model: str = typer.Option(None, "--model", help="Model name at --target-url, or a bundled model (smollm2) to serve."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Environment variable holding the endpoint's API key."),
    limit: int = typer.Option(None, "--limit", help="Only the first N items (a slice for a quick check)."),
    engine: str = typer.Option("local", "--engine", help="local (asyncio) or ray (a local or existing Ray cluster)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the response cache."),
    run_id: str = typer.Option(None, "--run-id", help="Name the run (default: time-suite-random)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    register_model: str = typer.Option(None, "--register-model", help="Registered model id: record this run in the governance registry against it."),
) -> None:
    """Run a suite; write its run log and report.html; exit 1 when a gate fails."""
    from assay.evaluate.engine import register_with_governance, run_suite
    from assay.evaluate.suite import load_suite

    s = load_suite(suite).with_overrides(target=_target_override(target_url, model, api_key_env), limit=limit)
    outcome = run_suite(s, run_id=run_id, engine=engine, use_cache=not no_cache, show_progress=not as_json)
    if register_model:
        outcome.stats["registered"] = register_with_governance(outcome.result, register_model)
    _print_outcome(outcome, as_json)
    _exit_for(outcome)


@eval_app.command("trec")
def trec_cmd(
    qrels: str = typer.Argument(..., help="Qrels file: 'qid iter docno rel' lines."),
    run: str = typer.Argument(..., help="Run file: 'qid Q0 docno rank score tag' lines."),
    k: int = typer.Option(10, "-k", help="Cut-off; 0 = the whole list."),
    metric: list[str] = typer.Option(None, "--metric", "-m", help="ndcg, recall, precision, mrr, map, hit_rate, rprec (repeatable; default all)."),
    conventions: str = typer.Option("assay", "--conventions", help="assay | trec_eval | trec_eval-c | ranx | recbole (docs/recsys-conventions.md)."),
    duplicates: str = typer.Option("error", "--duplicates", help="A repeated (user, item) row: error (as trec_eval) | first (best-ranked row) | last (last row, as ranx)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recommender / retrieval metrics of a TREC run, with 95% intervals over users. A run that
    repeats an item for a user is refused (exit 2) unless --duplicates picks a rule."""
    from assay.evaluate import recsys_metrics as rm

    aggs = rm.evaluate_trec(qrels, run, k or None, metric or rm.RANKING_METRICS, conventions=conventions, duplicates=duplicates)
    if as_json:
        typer.echo(dumps_json({"k": k or None, "conventions": conventions, "duplicates": duplicates,
                               "metrics": {m: a.to_dict() for m, a in aggs.items()}}, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run} against {qrels} (k={k or 'all'}, {conventions} conventions)")
    for col in ("metric", "value", "95% interval", "n"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, a in aggs.items():
        table.add_row(name, f"{a.value:.4f}", f"[{a.ci_low:.4f}, {a.ci_high:.4f}]" if a.available else a.note, str(a.n))
    Console().print(table)


@eval_app.command("resume")
def resume_cmd(
    run_id: str = typer.Argument(..., help="The run to finish (see `assay eval list`)."),
    engine: str = typer.Option(None, "--engine", help="Override the run's engine (local | ray)."),
    no_cache: bool = typer.Option(False, "--no-cache"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run only the items a killed or failed run had not finished, then report as if it never stopped."""
    from assay.evaluate.engine import resume_run

    outcome = resume_run(run_id, engine=engine, use_cache=not no_cache, show_progress=not as_json)
    _print_outcome(outcome, as_json)
    _exit_for(outcome)


@eval_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """Runs under ASSAY_HOME with their progress and gate verdicts."""
    from assay.evaluate.engine import list_runs

    runs = list_runs()
    if as_json:
        typer.echo(dumps_json(runs, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="evaluation runs")
    for col in ("run", "suite", "done", "complete", "passed"):
        table.add_column(col)
    for r in runs:
        passed = f"[red]unreadable: {r['error']}[/]" if r.get("error") else str(r["passed"])
        table.add_row(r["run_id"], r["suite"], f"{r['done']}/{r['items']}", str(r["complete"]), passed)
    Console().print(table)


@eval_app.command("suites")
def suites_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
    """The built-in suites."""
    from assay.evaluate.suite import builtin_suites, load_suite

    rows = [{"name": n, "description": load_suite(n).description.strip()} for n in sorted(builtin_suites())]
    if as_json:
        typer.echo(dumps_json(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['name']:<26} {r['description']}")


@eval_app.command("show")
def show_cmd(run_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """Print a finished run's report (read from its run log)."""
    from assay.evaluate.engine import RunOutcome, read_run
    from assay.evaluate.report import evaluation_result, report_from_runlog

    log = read_run(run_id)
    report = report_from_runlog(log)
    html = log.artifact("report")
    outcome = RunOutcome(run_id, log.folder, report, evaluation_result(report, str(html or log.path)), log.summary.timings.stats)
    _print_outcome(outcome, as_json)
    _exit_for(outcome)


@models_app.command("list")
def models_list() -> None:
    """Bundled models and where their weights are."""
    from assay.errors import Unavailable
    from assay.evaluate.serve import BUNDLED, resolve_model

    for name in BUNDLED:
        try:
            typer.echo(f"{name}\t{resolve_model(name)}")
        except Unavailable as e:
            typer.echo(f"{name}\t(not installed: {e.message})")


@models_app.command("serve")
def models_serve(
    model: str = typer.Argument("smollm2", help="A bundled model name or a GGUF path."),
    port: int = typer.Option(None, "--port", help="Port on 127.0.0.1 (default: a free one)."),
    n_ctx: int = typer.Option(2048, "--n-ctx"),
    threads: int = typer.Option(None, "--threads"),
) -> None:
    """Start llama.cpp's OpenAI-compatible server on the model, wait until healthy, serve until Ctrl-C."""
    import signal
    import time

    from assay.evaluate.serve import ModelServer

    server = ModelServer(model, port=port, n_ctx=n_ctx, n_threads=threads)
    typer.echo(f"starting llama.cpp server for {server.model_path} ...", err=True)
    # Ctrl-C (or SIGTERM) raises KeyboardInterrupt and also sets a flag the loop reads: Python
    # drops the exception when the signal lands while a finalizer runs, and the server would
    # then never stop
    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        typer.echo(f"ready: {server.base_url}  (OpenAI-compatible; Ctrl-C stops it)")
        while not stopping and server.process is not None and server.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
    app.add_typer(models_app, name="models")
