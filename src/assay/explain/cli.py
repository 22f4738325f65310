"""``assay explain``: why a film was ranked where it was, why A is above B, why the guard acted,
and the transparency report of a surface. Heavy imports happen inside the commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from assay.errors import BadInput
from assay.files import dumps_json

explain_app = typer.Typer(
    help="Explanations: ranker attributions (TreeSHAP), guard counterfactuals, transparency reports.",
    no_args_is_help=True,
)


def _history(text: str | None):
    from assay.recsys.cli import parse_history

    return parse_history(text)


@explain_app.command("ranking")
def ranking_cmd(
    user: int = typer.Argument(None, help="User id (omit for the cold-start slate)."),
    k: int = typer.Option(10),
    top: int = typer.Option(4, help="Signals shown per film."),
    history: str = typer.Option(None, help='"ITEM:STARS,..."'),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The top-k films for a user and the named signals that put each one there."""
    from assay.explain.ranking import explain_request, top_signals
    from assay.recsys.pipeline import load_served

    rec = load_served()
    att, cold = explain_request(rec, user, history=_history(history))
    items = [
        {
            "rank": r + 1,
            "item_id": int(i),
            "score": float(att.scores[r]),
            "signals": top_signals(att, int(i), top),
        }
        for r, i in enumerate(att.item_ids[:k])
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "user_id": user,
                    "model": rec.version,
                    "cold_start": cold,
                    "expected_value": att.expected_value,
                    "items": items,
                },
                indent=2,
            )
        )
        return
    typer.echo(
        f"{rec.version}, user {user}{' (cold start)' if cold else ''}; score = {att.expected_value:+.3f} (average) + contributions"
    )
    for it in items:
        sig = ", ".join(
            f"{s['feature']}={s['value']} ({s['contribution']:+.3f})" for s in it["signals"]
        )
        typer.echo(f"  {it['rank']:>3}. {it['item_id']:>7} {it['score']:+.3f}  {sig}")


@explain_app.command("pair")
def pair_cmd(
    user: int = typer.Argument(..., help="User id."),
    item_a: int = typer.Argument(...),
    item_b: int = typer.Argument(...),
    candidates: str = typer.Option(
        None, help="Comma-separated candidate ids (default: the user's retrieved candidates)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Why A is ranked above (or below) B: the difference of their attributions on the same candidate set."""
    from assay.explain.ranking import explain_request, why_above
    from assay.recsys.pipeline import load_served

    rec = load_served()
    cands = None
    if candidates:
        try:
            cands = sorted({int(c) for c in candidates.split(",") if c.strip()} | {item_a, item_b})
        except ValueError:
            raise BadInput(
                f"--candidates must be comma-separated item ids; got {candidates!r}"
            ) from None
    att, _ = explain_request(rec, user, candidates=cands)
    pair = why_above(att, item_a, item_b)
    if as_json:
        typer.echo(dumps_json(pair.to_dict(), indent=2))
        return
    verdict = "above" if pair.a_above_b else "below"
    typer.echo(
        f"{item_a} (rank {pair.rank_a}, score {pair.score_a:+.3f}) is {verdict} {item_b} (rank {pair.rank_b}, score {pair.score_b:+.3f}); difference {pair.score_a - pair.score_b:+.3f} ="
    )
    for d in pair.differences:
        if abs(d["difference"]) >= 1e-4:
            typer.echo(
                f"  {d['difference']:+.4f}  {d['feature']:<22} {d['value_a']} vs {d['value_b']}"
            )


@explain_app.command("guard")
def guard_cmd(
    bundle: Path = typer.Option(..., help="Policy bundle (file or folder): for a traced decision, the one that made it."),
    surface: str = typer.Option(None, help="Surface, e.g. for_you (with --input)."),
    candidate: str = typer.Option(
        None,
        "--input",
        help='Candidate as JSON, or @file.json: {"request": {...}, "item": {"labels": {...}}}',
    ),
    trace: Path = typer.Option(None, help="A trace log: explain a decision in it (with --request-id and --item)."),
    request_id: str = typer.Option(None, "--request-id", help="The traced request."),
    item: str = typer.Option(None, "--item", help="The item whose decision to explain."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Why the guard acted: the rules that fired, their conditions with the actual values, and the
    smallest label change that flips the action. A traced decision is decided again from the
    inputs recorded with its request, and the explanation says whether that reproduces what was
    served (exit 1 when it does not)."""
    from assay.explain.guard import explain_guard, explain_traced, read_trace
    from assay.policy import load_bundle

    if trace is not None:
        if candidate is not None or not request_id or not item:
            raise BadInput("a traced decision needs --trace, --request-id and --item (and no --input)")
        from assay.trace import TraceLog

        if not trace.exists():
            raise BadInput(f"there is no trace log at {trace}")
        log = TraceLog.open(trace, read_only=True)
        try:
            decisions, inputs = read_trace(log, request_id)
        finally:
            log.close()
        rows = [r for r in decisions.get(request_id, []) if r["item_id"] == item]
        if not rows:
            raise BadInput(f"the trace has no decision for item {item!r} in request {request_id!r}")
        if request_id not in inputs:
            raise BadInput(f"request {request_id!r} was traced without its inputs (a guard with record_inputs off): "
                           "it cannot be decided again")
        explanations = [explain_traced(load_bundle(bundle), inputs[request_id], row) for row in rows]
        typer.echo(dumps_json([e.to_dict() for e in explanations], indent=2, default=str) if as_json
                   else "\n\n".join(e.text() for e in explanations))
        if not all(e.reproduced for e in explanations):
            raise typer.Exit(1)
        return
    if candidate is None or surface is None:
        raise BadInput("give --surface and --input (one candidate), or --trace, --request-id and --item (a traced decision)")
    from assay.files import parse_json, read_json

    data = read_json(candidate[1:], "--input") if candidate.startswith("@") else parse_json(candidate, "--input")
    exp = explain_guard(load_bundle(bundle), surface, data)
    typer.echo(dumps_json(exp.to_dict(), indent=2) if as_json else exp.text())


@explain_app.command("transparency")
def transparency_cmd(
    surface: str = typer.Option("for_you", help="The surface the report describes."),
    bundle: Path = typer.Option(None, help="Policy bundle whose rules on this surface are listed."),
    users: int = typer.Option(200, help="Users sampled."),
    k: int = typer.Option(10),
    out: Path = typer.Option(
        None, help="HTML file (default ASSAY_HOME/reports/transparency-<surface>.html)."
    ),
) -> None:
    """Transparency report (DSA Art. 27 spirit): main parameters, their relative importance, active vs light users, with plots."""
    from assay.config import settings
    from assay.explain.transparency import transparency, write_transparency
    from assay.recsys.pipeline import load_served

    rec = load_served()
    b = None
    if bundle is not None:
        from assay.policy import load_bundle

        b = load_bundle(bundle)
    rep = transparency(rec, surface, k=k, n_users=users)
    path = write_transparency(
        rep, rec, out or settings().path("reports", f"transparency-{surface}.html"), b
    )
    typer.echo(f"wrote {path}")
    for name, share in rep.main_parameters():
        typer.echo(f"  {name}: {share * 100:.1f}%")


def register(app: typer.Typer) -> None:
    app.add_typer(explain_app, name="explain")
