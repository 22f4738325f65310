"""``assay judge list | show JUDGE | validate JUDGE [--labels FILE.jsonl]``.

``validate`` runs the judge on human-labelled pairs (a JSONL file, or with no ``--labels`` the
built-in held-out set of the judge's question), prints precision, recall, F1, Cohen's kappa with
95% intervals overall, per source and per answering model, and records the validation against
the judge's version (``--no-record`` to only print). A bad label file exits 2 naming file:line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from assay.files import dumps_json

judge_app = typer.Typer(help="Judges: the one contract every verdict comes from; validate them against people.",
                        no_args_is_help=True)


def _endpoint(url: str | None, model: str | None) -> dict | None:
    from assay.errors import BadInput

    if bool(url) != bool(model):
        raise BadInput("--judge-url and --judge-model go together")
    return {"base_url": url, "model": model} if url else None


@judge_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The registered judges (the built-ins first), their versions and whether each version was validated."""
    from assay.judges import get_judge, validation_summary
    from assay.judges.registry import DESCRIPTIONS, JUDGES

    rows = []
    for name in JUDGES:  # the built-ins, then any registered judge (docs/extending.md)
        spec = JUDGES.get(name)
        kind = spec["kind"] if isinstance(spec, dict) else getattr(spec, "kind", "registered")
        doc = "" if isinstance(spec, dict) else (spec.__doc__ or "").strip().split("\n")[0]
        row = {"name": name, "kind": kind, "description": DESCRIPTIONS.get(name, doc)}
        try:
            judge = get_judge(name)
            row["version"] = judge.version
            s = validation_summary(judge)
            row["validated"] = s["validated"]
            row["f1"] = (s.get("f1") or {}).get("value")
        except Exception as e:  # an LLM judge without an endpoint, a head not trained
            row["version"], row["validated"], row["note"] = None, False, str(getattr(e, "message", e))
        rows.append(row)
    if as_json:
        typer.echo(dumps_json(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("judge", "kind", "version", "validated (F1)", "what it is")
    for r in rows:
        val = f"yes ({r['f1']:.3f})" if r["validated"] and r.get("f1") is not None else ("yes" if r["validated"] else "no")
        table.add_row(r["name"], r["kind"], r["version"] or f"- ({r.get('note', '')})", val, r["description"])
    Console().print(table)


@judge_app.command("show")
def show_cmd(judge: str = typer.Argument(..., help="Judge name or spec file."),
             judge_url: str = typer.Option(None, "--judge-url", help="LLM endpoint (OpenAI-compatible /v1)."),
             judge_model: str = typer.Option(None, "--judge-model", help="LLM endpoint model name.")) -> None:
    """A judge's definition, version and validation summary (JSON)."""
    from assay.judges import get_judge, validation_summary

    j = get_judge(judge, endpoint=_endpoint(judge_url, judge_model))
    typer.echo(dumps_json({**j.describe(), "validation": validation_summary(j)}, indent=2, default=str))


@judge_app.command("validate")
def validate_cmd(
    judge: str = typer.Argument(..., help="Judge name (assay judge list) or a .yaml/.json judge spec."),
    labels: Path = typer.Option(None, "--labels", "-l", help="Human-labelled JSONL (prompt, response, label, source, model). "
                                "Default: the built-in held-out set of the judge's question."),
    record: bool = typer.Option(True, "--record/--no-record", help="Record the validation against the judge's version."),
    as_json: bool = typer.Option(False, "--json", help="Print the validation as JSON."),
    judge_url: str = typer.Option(None, "--judge-url", help="LLM endpoint (OpenAI-compatible /v1) for LLM judges."),
    judge_model: str = typer.Option(None, "--judge-model", help="LLM endpoint model name."),
    package: bool = typer.Option(False, "--package", hidden=True, help="Maintainers: store as the packaged validation."),
) -> None:
    """Measure a judge against human labels: precision, recall, F1, kappa with 95% intervals,
    per source and per answering model; recorded against the judge's version."""
    from assay.judges import get_judge
    from assay.judges import validate as V

    j = get_judge(judge, endpoint=_endpoint(judge_url, judge_model))
    if labels is not None:
        rows = V.read_labels(labels, j.question)
        info = {"name": str(labels), "sha256": V.file_sha256(labels), "rows": len(rows), "builtin": False}
    else:
        from assay.judges.builtin import builtin_labels

        rows, info = builtin_labels(j.question)
    v = V.validate(j, rows, labels_info=info)
    where = None
    if package:
        where = V.write_packaged(v)
    elif record:
        where = V.record(v)
    if as_json:
        typer.echo(dumps_json({**v.to_dict(), "recorded_at": str(where) if where else None}, indent=2))
        return
    _print_validation(v, where)


def _fmt(m: dict) -> str:
    if m.get("value") is None:
        return "-"
    if m.get("ci_low") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _print_validation(v, where) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    o = v.overall
    console.print(f"[bold]{escape(v.version)}[/bold] against {escape(str(v.labels.get('name')))} ({o['n']} rows, {o['positives']} positive, "
                  f"{o['unparsed']} unparsed)")
    for title, groups in (("overall", {"all": o}), ("by source", v.by_source), ("by answering model", v.by_model)):
        table = Table(title=title)
        for col in ("group", "n", "pos", "unparsed", "precision", "recall", "F1", "kappa"):
            table.add_column(col)
        for name, m in groups.items():
            table.add_row(escape(str(name)), str(m["n"]), str(m["positives"]), str(m["unparsed"]), _fmt(m["precision"]),
                          _fmt(m["recall"]), _fmt(m["f1"]), _fmt(m["kappa"]))
        console.print(table)
    if where:
        console.print(f"recorded: {where}")


def register(app: typer.Typer) -> None:
    app.add_typer(judge_app, name="judge")
