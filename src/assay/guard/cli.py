"""``assay guard serve | apply | worker``. Imports stay cheap: the guard is imported in commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from assay.errors import BadInput, Unavailable
from assay.files import dumps_json

guard_app = typer.Typer(help="Guard live slates: apply policy rules to candidate batches in milliseconds.", no_args_is_help=True)

DEFAULT_BUNDLE = "builtin:feed"


def resolve_bundle_path(spec: str) -> Path:
    """``builtin:feed`` is the example feed bundle shipped with the policy package."""
    if spec == DEFAULT_BUNDLE:
        import assay.policy

        return Path(assay.policy.__file__).parent / "examples" / "feed.yaml"
    return Path(spec)


def build_guard(bundle: str, labels: str | None, *, deadline_ms: float = 50.0, decisions_out: Path | None = None,
                queue_size: int = 1024, when_full: str = "drop", trace: str | None = None) -> Any:
    from assay.guard.breakers import default_registry
    from assay.guard.core import Guard, GuardConfig
    from assay.guard.sink import DecisionQueue, JsonlSink, TraceSink
    from assay.policy import load_bundle
    from assay.store.labels import open_label_store

    if decisions_out and trace:
        raise BadInput("give one of --decisions-out or --trace")
    store = open_label_store(labels) if labels else None
    target = JsonlSink(decisions_out) if decisions_out else (TraceSink.open(None if trace == "default" else trace) if trace else None)
    sink = DecisionQueue(target, maxsize=queue_size, when_full=when_full) if target is not None else None
    return Guard(load_bundle(resolve_bundle_path(bundle)), store, config=GuardConfig(deadline_ms=deadline_ms),
                 breakers=default_registry(), sink=sink)


def token_access(db_url: str | None = None, *, ttl_s: float = 10.0) -> Any:
    """Who may call the guard's HTTP routes: the control plane's API tokens and roles, checked by
    its own ``token_actor`` on its store (``db_url``, default ``ASSAY_DB_URL`` or the SQLite file
    under ``ASSAY_HOME``). The service entry point wires it in (like ``assay server``, it sits on
    top of the parts); the guard's app only sees a lookup function."""
    from assay.govern.tokens import token_actor
    from assay.guard.http import TokenAccess
    from assay.store import open_store

    store = open_store(db_url)
    return TokenAccess(lambda token: token_actor(store, token, source="guard"), ttl_s=ttl_s)


def reload_policy(bundle_dir: Path | None, pubkeys: list[Path] | None) -> Any:
    from assay.guard.http import ReloadPolicy
    from assay.policy.signing import load_public_key

    if bundle_dir is None and not pubkeys:
        return None
    if bundle_dir is None or not pubkeys:
        raise BadInput("reloads need both --bundle-dir (where bundles may be reloaded from) and --pubkey (who must have signed them)")
    if not bundle_dir.is_dir():
        raise BadInput(f"--bundle-dir {bundle_dir} is not a folder")
    for key in pubkeys:
        load_public_key(key)  # a bad key is an error now, not at the first reload
    return ReloadPolicy(bundle_dir, [str(k) for k in pubkeys])


def _read_json(value: str, what: str) -> Any:
    """JSON given inline or as ``@file.json`` (``assay.files``: a regular file of at most 16 MiB,
    the HTTP guard's body limit; every way it is not JSON is bad input naming where)."""
    from assay.files import parse_json, read_json

    if value.startswith("@"):
        return read_json(value[1:], what)
    return parse_json(value, what)


def _read_candidates(path: Path) -> Any:
    if path.suffix == ".parquet":
        from assay.files import read_table

        return read_table(path, "candidates")
    return _read_json("@" + str(path), "candidates")


@guard_app.command("apply")
def apply_cmd(
    candidates: Path = typer.Argument(..., help="Candidates: a .json file (columns or a list of objects) or a .parquet table."),
    request: str = typer.Option(..., "--request", "-r", help='The request as JSON or @file.json, e.g. \'{"surface": "for_you", "user": {"id": "u1", "age": 15}}\'.'),
    bundle: str = typer.Option(DEFAULT_BUNDLE, "--bundle", "-b", help="Policy bundle (file or folder); builtin:feed is the example feed bundle."),
    labels: str = typer.Option(None, "--labels", "-l", help="Label store: a Parquet file or redis://host:port/db."),
    decisions: bool = typer.Option(False, "--decisions", help="Include one decision record per candidate."),
    as_json: bool = typer.Option(False, "--json", help="Print the slate as JSON."),
) -> None:
    """Decide one candidate batch and print the slate."""
    guard = build_guard(bundle, labels)
    req = _read_json(request, "--request")
    slate = guard.apply(req, _read_candidates(candidates))
    failed = guard.counters["label_store_errors"] + guard.counters["label_store_timeouts"]
    if failed:  # the guard failed closed, as it must; a one-shot answer over a store that is down is no answer
        raise Unavailable(f"the label store at {labels} did not answer (down or too slow): the guard failed closed, "
                          f"{slate.dropped} of {slate.n_candidates} candidates dropped")
    if as_json:
        typer.echo(dumps_json(slate.to_dict(decisions=decisions), indent=2, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"slate {slate.request_id} · {slate.surface} · bundle {guard.bundle.bundle.name} {slate.bundle_version}"))
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("score", justify="right")
    table.add_column("labels")
    for k, (item_id, score) in enumerate(zip(slate.item_ids, slate.scores.tolist(), strict=True)):
        table.add_row(str(k), escape(item_id), f"{score:.4f}", escape("; ".join(slate.item_labels.get(item_id, ()))))
    console = Console()
    console.print(table)
    console.print(f"{slate.n_candidates} candidates, {len(slate)} served, {slate.dropped} dropped; breaker {slate.breaker_state}")
    if decisions:
        for d in slate.decisions:
            if d.action != "allow":
                console.print(f"  {d.item_id}: {d.action} by {', '.join(d.rule_ids)}", highlight=False, markup=False)


@guard_app.command("serve")
def serve_cmd(
    bundle: str = typer.Option(DEFAULT_BUNDLE, "--bundle", "-b", help="Policy bundle (file or folder)."),
    labels: str = typer.Option(None, "--labels", "-l", help="Label store: a Parquet file or redis://host:port/db."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8787, "--port"),
    deadline_ms: float = typer.Option(50.0, "--deadline-ms", help="Default deadline budget per request."),
    decisions_out: Path = typer.Option(None, "--decisions-out", help="Append decision records as JSON lines to this file."),
    trace: str = typer.Option(None, "--trace", help="Write decisions to the trace log at this path ('default': ASSAY_HOME/trace)."),
    when_full: str = typer.Option("drop", "--when-full", help="Decision queue full: drop (and count) or backpressure."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (each holds its own guard and label store)."),
    db: str = typer.Option(None, "--db", help="The control plane's store holding the API tokens (default ASSAY_DB_URL or ASSAY_HOME)."),
    bundle_dir: Path = typer.Option(None, "--bundle-dir", help="The only folder bundles may be reloaded from (POST /v1/guard/reload)."),
    pubkey: list[Path] = typer.Option(None, "--pubkey", help="An Ed25519 public key a reloaded bundle must be signed by (repeat for several)."),
    feedback_rate: float = typer.Option(5.0, "--feedback-rate", help="Harm reports per second per principal (bursts of 20)."),
) -> None:
    """Serve the guard over HTTP (POST /v1/guard). Every route needs a control-plane API token
    (assay token create): viewer to decide and read status, engineer to report harm, admin to
    reload a signed bundle from --bundle-dir."""
    from assay.guard.http import RateLimit, serve, serve_workers

    if workers < 1:
        raise BadInput("--workers must be at least 1")
    if not feedback_rate > 0:
        raise BadInput("--feedback-rate must be a positive number of reports per second")
    reload = reload_policy(bundle_dir, pubkey)
    access = token_access(db)  # opens (and migrates) the token store now: a bad --db fails here, not per request
    if workers > 1:
        if decisions_out or trace:
            raise BadInput("--decisions-out/--trace need one writer: use --workers 1, or one server per trace path")
        resolve = str(resolve_bundle_path(bundle))
        typer.echo(f"assay guard: {workers} workers on http://{host}:{port}/v1/guard", err=True)
        serve_workers(bundle=resolve, labels=labels, deadline_ms=deadline_ms, workers=workers, host=host, port=port, db=db,
                      bundle_dir=str(bundle_dir) if reload else None, pubkeys=[str(k) for k in pubkey or []] if reload else None,
                      feedback_rate=feedback_rate)
        return
    guard = build_guard(bundle, labels, deadline_ms=deadline_ms, decisions_out=decisions_out, when_full=when_full, trace=trace)
    typer.echo(f"assay guard: bundle {guard.bundle.bundle.name} {guard.bundle.version} ({guard.bundle.hash[:12]}) on http://{host}:{port}/v1/guard", err=True)
    try:
        serve(guard, access=access, reload=reload, feedback_limit=RateLimit(feedback_rate), host=host, port=port)
    finally:
        if guard.sink is not None:
            guard.sink.close()


@guard_app.command("worker")
def worker_cmd(
    bundle: str = typer.Option(DEFAULT_BUNDLE, "--bundle", "-b", help="Policy bundle (file or folder)."),
    labels: str = typer.Option(None, "--labels", "-l", help="Label store: a Parquet file or redis://host:port/db."),
    redis_url: str = typer.Option(None, "--redis", help="Redis Streams: redis://host:port/db."),
    kafka: str = typer.Option(None, "--kafka", help="Kafka bootstrap servers (instead of --redis)."),
    input_stream: str = typer.Option("assay:guard:in", "--input", help="Input stream (Redis) or topic (Kafka)."),
    output_stream: str = typer.Option("assay:guard:out", "--output", help="Output stream or topic."),
    group: str = typer.Option("assay-guard", "--group", help="Consumer group."),
    consumer: str = typer.Option("worker-1", "--consumer", help="This worker's consumer name."),
    max_messages: int = typer.Option(None, "--max-messages", help="Stop after this many messages."),
    idle_exit_s: float = typer.Option(None, "--idle-exit", help="Stop after this many seconds without messages."),
    decisions_out: Path = typer.Option(None, "--decisions-out", help="Append decision records as JSON lines to this file."),
    trace: str = typer.Option(None, "--trace", help="Write decisions to the trace log at this path ('default': ASSAY_HOME/trace)."),
    dedupe: str = typer.Option(None, "--dedupe", help="Kafka: done markers shared by the group in this Redis (redis://host:port/db); default: per process."),
    decisions_in_output: bool = typer.Option(False, "--decisions-in-output", help="Write each slate with its decisions (what `assay guard trace-writer` logs)."),
    kafka_options: list[str] = typer.Option(None, "--kafka-option", help="A librdkafka setting KEY=VALUE (TLS, SASL, session.timeout.ms, ...); repeatable."),
) -> None:
    """Consume candidate batches from Redis Streams (or Kafka) and write slates to an output stream."""
    from assay.guard.core import freeze_startup_heap
    from assay.guard.stream import KafkaTransport, RedisDedupe, RedisStreamsTransport, StreamWorker

    if bool(redis_url) == bool(kafka):
        raise BadInput("give exactly one of --redis URL or --kafka BOOTSTRAP")
    if dedupe and not kafka:
        raise BadInput("--dedupe is for --kafka (Redis Streams keep their done markers beside the stream)")
    guard = build_guard(bundle, labels, decisions_out=decisions_out, trace=trace)
    if redis_url:
        transport: Any = RedisStreamsTransport(redis_url, input_stream=input_stream, output_stream=output_stream, group=group, consumer=consumer)
    else:
        if input_stream == "assay:guard:in" and output_stream == "assay:guard:out":  # Kafka topic names cannot hold ':'
            input_stream, output_stream = "assay.guard.in", "assay.guard.out"
        transport = KafkaTransport(kafka, input_topic=input_stream, output_topic=output_stream, group=group, consumer=consumer,
                                   dedupe=RedisDedupe(dedupe, prefix=f"assay:guard:kafka:{group}:done:") if dedupe else None,
                                   extra_config=_kafka_options(kafka_options))
    worker = StreamWorker(guard, transport, decisions_in_output=decisions_in_output,
                          on_status=lambda line: print(f"assay guard worker: {line}", file=sys.stderr, flush=True))
    freeze_startup_heap()
    try:
        n = worker.run(max_messages=max_messages, idle_exit_s=idle_exit_s)
    except KeyboardInterrupt:
        n = worker.stats.processed
    finally:
        transport.close()
        if guard.sink is not None:
            guard.sink.close()
    print(json.dumps({"handled": n, **worker.stats.__dict__}), file=sys.stderr)


def _kafka_options(options: list[str] | None) -> dict[str, str]:
    out = {}
    for option in options or []:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--kafka-option {option!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


@guard_app.command("trace-writer")
def trace_writer_cmd(
    kafka: str = typer.Option(..., "--kafka", help="Kafka bootstrap servers."),
    topic: str = typer.Option("assay.guard.out", "--input", help="The workers' output topic (slates with --decisions-in-output)."),
    trace: str = typer.Option("default", "--trace", help="The trace log ('default': ASSAY_HOME/trace)."),
    group: str = typer.Option("assay-trace", "--group", help="Consumer group of the trace writer."),
    idle_exit_s: float = typer.Option(None, "--idle-exit", help="Stop after this many seconds without slates."),
    kafka_options: list[str] = typer.Option(None, "--kafka-option", help="A librdkafka setting KEY=VALUE; repeatable."),
) -> None:
    """Append the decisions of a Kafka guard group's slates to one trace log, once per request id."""
    from assay.guard.stream import KafkaTraceWriter
    from assay.trace import TraceLog

    log = TraceLog.open(None if trace == "default" else trace)
    try:
        writer = KafkaTraceWriter(kafka, log, topic=topic, group=group, extra_config=_kafka_options(kafka_options))
        try:
            writer.run(idle_exit_s=idle_exit_s)
        except KeyboardInterrupt:
            pass
        finally:
            writer.close()
    finally:
        log.close()
    print(json.dumps(writer.stats), file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(guard_app, name="guard")
