"""``assay trace why``: the one trace command that joins two parts, the decision log (a foundation)
and the governance registry (an engine) for each model's lineage. It sits above both (in ``cli``)
so that the trace imports no engine; it adds itself to ``assay trace``.
"""

from __future__ import annotations

from datetime import datetime

import typer

from assay.errors import AssayError
from assay.trace.cli import JsonOpt, PathOpt, _echo_json, _open, parse_time, trace_app


@trace_app.command("why")
def why(item: str = typer.Option(..., "--item", help="Item id."),
        subject: str = typer.Option(..., "--subject", help="Subject (user) id, as the product knows it."),
        at: str = typer.Option(None, "--at", help="Unix seconds or ISO 8601 time; default: now."),
        path: str = PathOpt, as_json: bool = JsonOpt) -> None:
    """Why was ITEM shown to (or kept from) SUBJECT at time T: the decision, rules, bundle, models, proof."""
    from assay.govern.lineage import registry_resolver
    from assay.trace.query import why as why_query

    with _open(path, read_only=True) as log:
        answer = why_query(log, item, subject, parse_time(at), lineage=registry_resolver())
    if answer is None:
        raise AssayError(f"no decision about item {item!r} for that subject" + (f" at or before {at}" if at else ""))
    if as_json:
        _echo_json(answer)
        return
    typer.echo(f"decision #{answer['index']} at {datetime.fromtimestamp(answer['ts']).isoformat()} on {answer['surface']}: "
               f"{answer['action']} (rank {answer['rank_before']} -> {answer['rank_after']})")
    for rule in answer["rules"] or [{"id": "(no rule fired)", "reason": ""}]:
        typer.echo(f"  rule {rule['id']}: {rule['reason'] or ''}")
    typer.echo(f"  bundle {answer['bundle_version']} ({answer['bundle_hash'][:16]}...), breaker {answer['breaker_state']}")
    for model in answer["models"]:
        typer.echo(f"  model {model['version']}" + (f" = {model['model']}" if model.get("model") else "")
                   + (f", trained on {', '.join(model['training_data'])}" if model.get("training_data") else ""))
        if model.get("missing"):
            typer.echo(f"    lineage incomplete: {model['missing']}")
    if answer["attribution"]:
        typer.echo(f"  attribution: {answer['attribution']}")
    typer.echo("  provable: " + ("yes, inclusion proof against the newest checkpoint (--json)" if "proof" in answer
                                 else "not yet covered by a checkpoint"))


def register(app: typer.Typer) -> None:
    """Nothing to add at the top level: ``why`` is on ``assay trace`` (registered on import)."""
