"""``assay trace verify|prove|check|stats|erase|key``: the decision log from the command line.

``assay trace why`` joins the trace with the governance registry (a model's lineage), so it lives
above both parts, in ``assay.cli.why``; this module imports no engine.

Imports cheaply: the log (pyarrow, DuckDB) is imported inside each command.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from assay.errors import AssayError, BadInput
from assay.files import dumps_json
from assay.trace import EXIT_UNACKNOWLEDGED

trace_app = typer.Typer(help="The decision trace: verify, prove, explain (why), aggregate and erase.",
                        no_args_is_help=True)

PathOpt = typer.Option(None, "--path", help="The log: a directory or fsspec URL (default ASSAY_HOME/trace).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")


def _echo_json(value: Any) -> None:
    typer.echo(dumps_json(value, indent=2, sort_keys=True, default=str))


def _open(path: str | None, read_only: bool = False, verifier=None):
    from assay.trace import TraceLog

    return TraceLog.open(path, read_only=read_only, verifier=verifier)


def _verifier(public_key: str | None):
    from assay.trace.checkpoint import Verifier

    if public_key is None:
        return None
    return Verifier.parse(_key_text(public_key, "--public-key"))


def _key_text(value: str, option: str) -> str:
    """A key given as the string itself or as a file holding it (text, one line)."""
    path = Path(value)
    try:
        if not path.exists():
            return value
    except OSError:  # not a possible file name (too long): the key itself
        return value
    if path.is_dir():
        raise BadInput(f"{option} {value}: a folder, not a key file")
    from assay.files import FileRefused, read_regular

    try:  # a regular file of at most 64 KiB: a FIFO would hang here, /dev/zero never end
        text = read_regular(path, 64 << 10).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadInput(f"{option} {value}: not a text file (a verifier key is one line: name+keyid+base64)") from None
    except FileRefused as e:
        raise BadInput(f"{option} {value}: {e.message}") from None
    if not text or "\n" in text:
        raise BadInput(f"{option} {value}: a verifier key file holds one line (name+keyid+base64)")
    return text


def parse_time(value: str | None, option: str = "--at") -> float | None:
    """Unix seconds (finite, not negative) or an ISO 8601 time (UTC when no zone is given)."""
    import math

    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds) or seconds < 0:
            raise BadInput(f"{option} {value!r} is not a time: unix seconds must be a finite number, 0 or more")
        return seconds
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise BadInput(f"{option} {value!r} is neither unix seconds nor an ISO 8601 time") from e
    if stamp.tzinfo is None:
        from datetime import UTC

        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


@trace_app.command("verify")
def verify(path: str = PathOpt, public_key: str = typer.Option(None, "--public-key",
           help="Trusted verifier key (C2SP vkey string or a file holding it); default: this machine's signing key."),
           witness: list[str] = typer.Option([], "--witness",
           help="A witness's cosignature key (vkey, type 0x04; or a file of them); repeatable."),
           quorum: int = typer.Option(None, "--quorum", help="Cosignatures required (default: every --witness)."),
           state: Path = typer.Option(None, "--state", help="This verifier's trusted-state file "
                                      "(default: one per log under ASSAY_HOME/state/trace/verifier)."),
           no_state: bool = typer.Option(False, "--no-state", help="Neither read nor keep a trusted state."),
           as_json: bool = JsonOpt) -> None:
    """Check the whole log against its signed checkpoints, the trusted state kept from the last
    run and, with --witness, a quorum of witness cosignatures. Exit 0 verified; 1 altered, rolled
    back or not witnessed; 4 the signed log verifies but an unacknowledged tail follows it."""
    from assay.trace.log import TamperError
    from assay.trace.verify import unacknowledged_message
    from assay.trace.witness import load_witness_keys

    trusted = _verifier(public_key)
    witnesses = load_witness_keys(witness)
    if state is not None and no_state:
        raise BadInput("give --state or --no-state, not both")
    if state is not None and state.is_dir():
        raise BadInput(f"--state {state}: a folder; give the trusted-state file")
    with _open(path, read_only=True, verifier=trusted) as log:
        report = log.verify(trusted, state=False if no_state else (state or True), witnesses=witnesses, quorum=quorum)
        report.warnings = [*log.recovery, *report.warnings]
    if as_json:
        _echo_json(report.to_dict())
    else:
        status = "OK" if report.ok else "FAILED"
        typer.echo(f"{status}: {report.records} records, {report.checkpoints} checkpoints (newest signed size "
                   f"{report.signed_size}), {report.erased} erased, {report.seconds:.2f}s"
                   + (f"; witnessed up to size {report.witnessed_size}" if report.witnessed_size is not None else ""))
        for warning in report.warnings:
            typer.echo(f"  warning: {warning}")
    if not report.ok:
        raise TamperError(report.problems)
    if report.unacknowledged:
        raise UnacknowledgedTail(unacknowledged_message(report))


class UnacknowledgedTail(AssayError):
    """The signed log verifies, and records (or a torn batch) follow its newest checkpoint."""

    exit_code = EXIT_UNACKNOWLEDGED


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
        if out.is_dir():
            raise BadInput(f"--out {out}: a folder; give a file name")
        if not out.parent.is_dir():
            raise BadInput(f"--out {out}: the folder {out.parent} does not exist")
        try:
            out.write_text(text + "\n")
        except OSError as e:
            raise BadInput(f"--out {out}: cannot be written ({e.strerror})") from None
        typer.echo(f"wrote {out}")
    else:
        typer.echo(text)


@trace_app.command("check")
def check(proof: Path = typer.Argument(..., help="A proof file from `assay trace prove`."),
          public_key: str = typer.Option(..., "--public-key", help="The log's verifier key (string or file)."),
          witness: list[str] = typer.Option([], "--witness", help="A witness's cosignature key; repeatable."),
          quorum: int = typer.Option(None, "--quorum", help="Cosignatures required (default: every --witness).")) -> None:
    """Check a proof with only the log's public key (no access to the log needed); exit 1 if it fails."""
    from assay.files import JSON_LIMIT, FileRefused, read_regular
    from assay.trace import merkle, proofs
    from assay.trace.checkpoint import SignatureError
    from assay.trace.witness import load_witness_keys

    if proof.is_dir():
        raise BadInput(f"{proof}: a folder, not a proof file")
    try:  # a regular file of at most 16 MiB: a FIFO would hang here, /dev/zero never end
        bundle = json.loads(read_regular(proof, JSON_LIMIT).decode("utf-8"))
    except FileRefused as e:
        raise BadInput(f"{proof}: cannot be read ({e.message.removeprefix('cannot read it: ')})") from None
    except UnicodeDecodeError:
        raise BadInput(f"{proof}: not a text file (a proof is JSON from `assay trace prove`)") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise BadInput(f"{proof}: not JSON ({e})") from None
    verifier, witnesses = _verifier(public_key), load_witness_keys(witness)
    try:
        typer.echo(proofs.check_bundle(bundle, verifier, witnesses, quorum))
    except (merkle.ProofError, SignatureError) as e:
        raise AssayError(f"proof does not check: {e}") from e


@trace_app.command("key")
def key(path: str = PathOpt) -> None:
    """Print this log's verifier key (C2SP vkey) to hand to auditors."""
    with _open(path, read_only=True) as log:
        if log.signer is None:
            raise BadInput("this machine does not hold the log's signing key")
        typer.echo(log.signer.verifier.vkey())


@trace_app.command("stats")
def stats(by: list[str] = typer.Option(["rule"], "--by", help="rule, surface, action, breaker_state, bundle_version (repeatable)."),
          bucket: str = typer.Option(None, "--bucket", help="minute, hour or day."),
          since: str = typer.Option(None, "--since"), until: str = typer.Option(None, "--until"),
          path: str = PathOpt, as_json: bool = JsonOpt) -> None:
    """Decision counts by rule / surface / action over time (DuckDB over the segments)."""
    with _open(path, read_only=True) as log:
        rows = log.aggregate(by, bucket, parse_time(since, "--since"), parse_time(until, "--until"))
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
    from assay.trace import TraceLog

    with TraceLog.open(path, create=False) as log:  # a mistyped path must not become a new, empty log
        result = log.erase(subject, reason)
    if as_json:
        _echo_json(result)
    else:
        typer.echo(f"erased {result['erased']} records ({result['files_rewritten']} files rewritten); "
                   f"recorded as event #{result['event_index']}")


@trace_app.command("cosign")
def cosign(witness: list[str] = typer.Option(..., "--witness", help="A witness's URL (its add-checkpoint prefix); repeatable."),
           witness_key: list[str] = typer.Option(..., "--witness-key", help="The witnesses' cosignature keys "
                                                 "(vkeys or files); cosignatures from other keys are ignored."),
           timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for each witness."),
           path: str = PathOpt, as_json: bool = JsonOpt) -> None:
    """Ask witnesses to cosign the newest checkpoint (C2SP tlog-witness add-checkpoint, with a
    consistency proof from the size each last cosigned); keep their cosignatures beside it.
    Exit 1 if any witness did not cosign."""
    from assay.trace.witness import collect, load_witness_keys

    if not timeout > 0:
        raise BadInput(f"--timeout must be more than 0 seconds, got {timeout}")
    keys = load_witness_keys(witness_key)
    with _open(path, read_only=True) as log:
        results = collect(log, witness, keys, timeout)
    if as_json:
        _echo_json(results)
    else:
        for r in results:
            typer.echo(f"{r['witness']}: " + ("cosigned size " + str(r["size"]) if r.get("cosigned") else f"not cosigned: {r['error']}"))
    failed = [r for r in results if not r.get("cosigned")]
    if failed:
        raise AssayError(f"{len(failed)} of {len(results)} witnesses did not cosign the checkpoint of size {results[0]['size']}")


witness_app = typer.Typer(help="Run a witness: an independent key that cosigns a log's checkpoints only as an "
                               "append-only extension of what it cosigned before (C2SP tlog-witness).",
                          no_args_is_help=True)
trace_app.add_typer(witness_app, name="witness")
WitnessDir = typer.Option(..., "--dir", help="The witness's folder (its key and the checkpoints it cosigned).")


@witness_app.command("init")
def witness_init(folder: Path = WitnessDir,
                 name: str = typer.Option(..., "--name", help="The witness's name, e.g. witness.example.org/w1.")) -> None:
    """Create a witness (a new Ed25519 key) and print its cosignature key (vkey) for verifiers."""
    from assay.trace.witness import Witness

    typer.echo(Witness.init(folder, name).verifier.vkey())


@witness_app.command("add-log")
def witness_add_log(folder: Path = WitnessDir,
                    public_key: str = typer.Option(..., "--public-key", help="The log's verifier key (vkey or file)."),
                    origin: str = typer.Option(None, "--origin", help="The log's origin (default: the key's name).")) -> None:
    """Follow a log: its checkpoints, signed by this key, will be cosigned."""
    from assay.trace.witness import Witness

    typer.echo(f"following {Witness(folder).add_log(_key_text(public_key, '--public-key'), origin)}")


@witness_app.command("key")
def witness_key_cmd(folder: Path = WitnessDir) -> None:
    """Print the witness's cosignature key (vkey) to hand to verifiers (--witness)."""
    from assay.trace.witness import Witness

    typer.echo(Witness(folder).verifier.vkey())


@witness_app.command("serve")
def witness_serve(folder: Path = WitnessDir,
                  listen: str = typer.Option("127.0.0.1:8707", "--listen", help="HOST:PORT (port 0: any free port)."),
                  prefix: str = typer.Option("", "--prefix", help="URL prefix of add-checkpoint, e.g. /witness.")) -> None:
    """Serve the witness over HTTP: POST <prefix>/add-checkpoint, GET <prefix>/<origin hash>/checkpoint."""
    from assay.trace.witness import Witness, serve

    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise BadInput(f"--listen {listen!r} must be HOST:PORT")
    if prefix and not prefix.startswith("/"):
        raise BadInput(f"--prefix {prefix!r} must start with '/'")
    witness = Witness(folder)

    def announce(line: str) -> None:
        typer.echo(line)
        import sys

        sys.stdout.flush()

    serve(witness, host.strip("[]"), int(port_text), prefix, announce)


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
