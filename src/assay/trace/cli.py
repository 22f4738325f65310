"""``assay trace verify|prove|check|why|stats|erase|key``: the decision log from the command line.

Imports cheaply: the log (pyarrow, DuckDB) is imported inside each command.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from assay.errors import AssayError, BadInput

trace_app = typer.Typer(help="The decision trace: verify, prove, explain (why), aggregate and erase.",
                        no_args_is_help=True)

PathOpt = typer.Option(None, "--path", help="The log: a directory or fsspec URL (default ASSAY_HOME/trace).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def _open(path: str | None, read_only: bool = False, verifier=None):
    from assay.trace import TraceLog

    return TraceLog.open(path, read_only=read_only, verifier=verifier)


def _verifier(public_key: str | None):
    from assay.trace.checkpoint import Verifier

    if public_key is None:
        return None
    text = Path(public_key).read_text().strip() if Path(public_key).is_file() else public_key
    return Verifier.parse(text)


def parse_time(value: str | None) -> float | None:
    """Unix seconds or an ISO 8601 time (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise BadInput(f"--at {value!r} is neither unix seconds nor an ISO 8601 time") from e
    if stamp.tzinfo is None:
        from datetime import UTC

        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def lineage_resolver():
    """Model lineage from the governance registry, when that part and its store are available."""
    try:
        from assay.govern import lineage
        from assay.store import open_store
    except ImportError:
        return None
    try:
        return lineage.resolver(open_store(None))
    except AssayError:
        return None


@trace_app.command("verify")
def verify(path: str = PathOpt, public_key: str = typer.Option(None, "--public-key",
           help="Trusted verifier key (C2SP vkey string or a file holding it); default: this machine's signing key."),
           as_json: bool = JsonOpt) -> None:
    """Check the whole log against its signed checkpoints; exit 1 if anything was altered."""
    from assay.trace.log import TamperError

    trusted = _verifier(public_key)
    with _open(path, read_only=True, verifier=trusted) as log:
        report = log.verify(trusted)
        report.warnings = [*log.recovery, *report.warnings]
    if as_json:
        _echo_json(report.to_dict())
    else:
        status = "OK" if report.ok else "FAILED"
        typer.echo(f"{status}: {report.records} records, {report.checkpoints} checkpoints, "
                   f"{report.erased} erased, {report.seconds:.2f}s")
        for warning in report.warnings:
            typer.echo(f"  warning: {warning}")
    if not report.ok:
        raise TamperError(report.problems)


@trace_app.command("prove")
def prove(index: int = typer.Option(None, "--index", help="Prove that record INDEX is in the log."),
          tree_size: int = typer.Option(None, "--tree-size", help="Against the checkpoint of this size (default: newest)."),
          old_size: int = typer.Option(None, "--from-size", help="Prove the log of this size is a prefix of --to-size."),
          new_size: int = typer.Option(None, "--to-size", help="With --from-size (default: the newest checkpoint)."),
          out: Path = typer.Option(None, "--out", help="Write the proof here instead of stdout."),
          path: str = PathOpt) -> None:
    """Print a proof (JSON) that a third party checks with `assay trace check` and the public key alone."""
    if (index is None) == (old_size is None):
        raise BadInput("give exactly one of --index or --from-size")
    with _open(path, read_only=True) as log:
        if index is not None:
            bundle = log.prove_inclusion(index, tree_size)
        else:
            bundle = log.prove_consistency(old_size, new_size)
    text = json.dumps(bundle, indent=2, sort_keys=True)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


@trace_app.command("check")
def check(proof: Path = typer.Argument(..., help="A proof file from `assay trace prove`."),
          public_key: str = typer.Option(..., "--public-key", help="The log's verifier key (string or file).")) -> None:
    """Check a proof with only the log's public key (no access to the log needed); exit 1 if it fails."""
    from assay.trace import merkle, proofs

    try:
        bundle = json.loads(proof.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"{proof}: not a readable JSON proof ({e})") from e
    try:
        typer.echo(proofs.check_bundle(bundle, _verifier(public_key)))
    except merkle.ProofError as e:
        raise AssayError(f"proof does not check: {e}") from e
    except (KeyError, TypeError) as e:
        raise BadInput(f"{proof}: proof bundle is missing or has a malformed field ({e})") from e


@trace_app.command("key")
def key(path: str = PathOpt) -> None:
    """Print this log's verifier key (C2SP vkey) to hand to auditors."""
    with _open(path, read_only=True) as log:
        if log.signer is None:
            raise BadInput("this machine does not hold the log's signing key")
        typer.echo(log.signer.verifier.vkey())


@trace_app.command("why")
def why(item: str = typer.Option(..., "--item", help="Item id."),
        subject: str = typer.Option(..., "--subject", help="Subject (user) id, as the product knows it."),
        at: str = typer.Option(None, "--at", help="Unix seconds or ISO 8601 time; default: now."),
        path: str = PathOpt, as_json: bool = JsonOpt) -> None:
    """Why was ITEM shown to (or kept from) SUBJECT at time T: the decision, rules, bundle, models, proof."""
    from assay.trace.query import why as why_query

    with _open(path, read_only=True) as log:
        answer = why_query(log, item, subject, parse_time(at), lineage=lineage_resolver())
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
        typer.echo(f"  model {model['version']}" + (" (lineage known)" if model["lineage"] else ""))
    if answer["attribution"]:
        typer.echo(f"  attribution: {answer['attribution']}")
    typer.echo("  provable: " + ("yes, inclusion proof against the newest checkpoint (--json)" if "proof" in answer
                                 else "not yet covered by a checkpoint"))


@trace_app.command("stats")
def stats(by: list[str] = typer.Option(["rule"], "--by", help="rule, surface, action, breaker_state, bundle_version (repeatable)."),
          bucket: str = typer.Option(None, "--bucket", help="minute, hour or day."),
          since: str = typer.Option(None, "--since"), until: str = typer.Option(None, "--until"),
          path: str = PathOpt, as_json: bool = JsonOpt) -> None:
    """Decision counts by rule / surface / action over time (DuckDB over the segments)."""
    with _open(path, read_only=True) as log:
        rows = log.aggregate(by, bucket, parse_time(since), parse_time(until))
        size = log.size
    if as_json:
        _echo_json({"records": size, "groups": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"decisions ({size} records)")
    for column in rows[0].keys() if rows else [*by, "decisions"]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console().print(table)


@trace_app.command("erase")
def erase(subject: str = typer.Option(..., "--subject", help="Subject (user) id whose records are erased."),
          reason: str = typer.Option("data subject request", "--reason"),
          path: str = PathOpt, as_json: bool = JsonOpt) -> None:
    """Erase a subject's personal payload; hashes and proofs stay valid; the erasure is recorded."""
    with _open(path) as log:
        result = log.erase(subject, reason)
    if as_json:
        _echo_json(result)
    else:
        typer.echo(f"erased {result['erased']} records ({result['files_rewritten']} files rewritten); "
                   f"recorded as event #{result['event_index']}")


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
