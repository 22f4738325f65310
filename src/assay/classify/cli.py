"""Commands: ``assay classify NAME --input X.jsonl --text-field F --output Y.jsonl``,
``assay classify train NAME``, ``assay classify list``, ``assay classify text NAME "..."`` and
``assay label`` (batch file or Redis stream into the label store).

Imports here are cheap; the encoder and scikit-learn load inside the commands.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from assay.errors import BadInput
from assay.files import dumps_json

SUBCOMMANDS = ("train", "list", "text", "score", "check-int8")


class _ClassifyGroup(TyperGroup):
    """``assay classify toxicity --input ...`` is shorthand for ``assay classify score toxicity ...``:
    a first argument that is not a subcommand is taken as classifier name(s)."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["score", *args]
        return super().resolve_command(ctx, args)


classify_app = typer.Typer(
    cls=_ClassifyGroup,
    help="Content-safety classifiers: score files, train heads, list what is committed.\n\n"
    "Shorthand: assay classify NAME[,NAME...] --input X.jsonl --text-field F --output Y.jsonl",
    no_args_is_help=True,
)


def _names(spec: str) -> list[str]:
    from assay.classify import available

    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["all"]:
        return available()
    known = available()
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise BadInput(f"unknown classifier(s) {', '.join(unknown) or spec!r}; available: {', '.join(known)}")
    return names


def _progress(total: int | None, what: str):  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # On stderr, so stdout stays machine-readable with --json.
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    return progress, progress.add_task(what, total=total)


@classify_app.command("score")
def score_command(
    names: str = typer.Argument(..., help="Classifier name(s), comma-separated, or 'all'."),
    input_path: Path = typer.Option(..., "--input", "-i", help="JSONL (or Parquet) file to score."),
    text_field: str = typer.Option("text", "--text-field", "-f", help="Field holding the text."),
    output_path: Path = typer.Option(..., "--output", "-o", help="JSONL file to write (each input row plus NAME_score and NAME_label)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Add each classifier's calibrated score and label to every row of a file."""
    from assay.classify.scoring import count_rows, score_file

    chosen = _names(names)
    if not Path(input_path).is_file():
        raise BadInput(f"input file {input_path} does not exist")
    progress, task = _progress(count_rows(input_path), f"scoring with {', '.join(chosen)}")
    with progress:
        summary = score_file(chosen, input_path, text_field, output_path, on_progress=lambda n: progress.advance(task, n))
    result = summary.to_dict()
    if as_json:
        typer.echo(dumps_json(result, indent=2))
        return
    typer.echo(
        f"{result['rows']} rows -> {output_path}: {result['scored']} scored, {result['errors']} with a per-row error, "
        f"{result['rows_per_s']} rows/s"
    )
    for example in result["error_examples"]:
        typer.echo(f"  {example}")


@classify_app.command("text")
def text_command(
    names: str = typer.Argument(..., help="Classifier name(s), comma-separated, or 'all'."),
    texts: list[str] = typer.Argument(..., help="Text(s) to score."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Score texts given on the command line. A text with nothing left after normalisation is
    refused (exit 2), as ``classify score`` gives such a row an error instead of a score."""
    from assay.classify import load_classifier
    from assay.classify import normalise as norm

    for i, text in enumerate(texts, 1):
        if not norm.normalise(text):
            raise BadInput(f"text {i} of {len(texts)} is empty (nothing left after normalisation): nothing to score")
    out = []
    for name in _names(names):
        clf = load_classifier(name)
        scores = clf.score(list(texts))
        for text, score in zip(texts, scores, strict=True):
            row = {"classifier": name, "text": text, "score": round(float(score), 4), "label": bool(score >= clf.threshold)}
            if name == "claim_match":
                row["matches"] = [asdict(m) for m in clf.match([text])[0]]
            out.append(row)
    if as_json:
        typer.echo(dumps_json(out, indent=2, ensure_ascii=False))
        return
    for row in out:
        typer.echo(f"{row['classifier']:>17}  {row['score']:.3f}  {'YES' if row['label'] else 'no ':>3}  {row['text'][:80]}")
        for m in row.get("matches", []):
            typer.echo(f"{'':>17}  ~{m['similarity']:.3f} [{m['verdict']}] {m['claim'][:90]}")


@classify_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The committed classifiers, their versions and test metrics."""
    from assay.classify import available
    from assay.classify.model import MODELS_DIR

    rows = []
    for name in available():
        metrics_path = MODELS_DIR / f"{name}.metrics.json"
        doc = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        model = doc.get("test", {}).get("model", {})
        rows.append(
            {
                "name": name,
                "version": doc.get("version", ""),
                "f1": model.get("f1", {}).get("value"),
                "auroc": model.get("auroc", {}).get("value"),
                "threshold": doc.get("threshold"),
                "description": doc.get("description", ""),
            }
        )
    if as_json:
        typer.echo(dumps_json(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="assay classifiers")
    for col in ("name", "F1", "AUROC", "threshold", "version"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["f1"]), str(r["auroc"]), str(r["threshold"]), r["version"][:40])
    Console().print(table)


@classify_app.command("train")
def train_command(
    name: str = typer.Argument(..., help="Classifier to train, or 'all'."),
    out_dir: Path = typer.Option(None, "--out-dir", help="Where to write the head, metrics and card (default: the package's models/ folder)."),
    limit: int = typer.Option(0, "--limit", help="At most this many rows per split (a quick check that the command works)."),
    davidson_fraction: float = typer.Option(None, "--davidson-fraction", help="Share of Davidson tweets to use (toxicity, hate, offensive)."),
    register: bool = typer.Option(
        True,
        "--register/--no-register",
        help="Register the source datasets, the head's files (sha256) and its test evaluation, with lineage, in the governance registry (ASSAY_DB_URL / ASSAY_HOME).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics document."),
    seeds: str = typer.Option(
        None, "--seeds",
        help="Fine-tuned heads (hate): train the encoder's adapter once per seed, e.g. 0,1,2, and average them (a model soup: one adapter, served at one encoder's cost). Default: the head's recipe.",
    ),
) -> None:
    """Train a classifier reproducibly (fixed seeds) and write its weights, metrics and model card;
    then register it with lineage (``--no-register`` to skip)."""
    from rich.console import Console

    from assay.classify import _load
    from assay.classify import tasks as task_module
    from assay.classify.model import ALL_NAMES, MODELS_DIR
    from assay.classify.train import train

    if davidson_fraction is not None:
        if not 0 < davidson_fraction <= 1:
            raise BadInput(f"--davidson-fraction must be in (0, 1], got {davidson_fraction}")
        task_module.DAVIDSON_FRACTION = davidson_fraction
    names = list(ALL_NAMES) if name == "all" else [name]
    for n in names:
        if n not in ALL_NAMES:
            raise BadInput(f"unknown classifier {n!r}; known: {', '.join(ALL_NAMES)}")
    extra: dict = {}
    if seeds is not None:
        from dataclasses import replace

        from assay.classify.finetune import FINETUNE_FOR

        if len(names) != 1 or names[0] not in FINETUNE_FOR:
            raise BadInput(f"--seeds applies to a fine-tuned head ({', '.join(FINETUNE_FOR)}), not {name!r}")
        try:
            soup_seeds = tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise BadInput(f"--seeds must be whole numbers separated by commas, e.g. 0,1,2; got {seeds!r}") from None
        if not soup_seeds or len(set(soup_seeds)) != len(soup_seeds) or min(soup_seeds) < 0:
            raise BadInput(f"--seeds must list distinct seeds >= 0, e.g. 0,1,2; got {seeds!r}")
        extra["finetune_config"] = replace(FINETUNE_FOR[names[0]], soup_seeds=soup_seeds)
    console = Console(stderr=True)
    docs = []
    for n in names:
        with console.status(f"training {n}") as status:
            doc = train(n, out_dir=out_dir or MODELS_DIR, limit=limit or None, progress=lambda text: status.update(text), **extra)
        docs.append(doc)
        model = doc["test"]["model"]  # a response head, a pair head or claim_match: the same form
        console.print(
            f"[bold]{n}[/] {doc['version'][:40]}…  F1 {model['f1']['value']} {model['f1']['ci95']}  AUROC {model['auroc']['value']} {model['auroc']['ci95']}"
            f"  ({doc['train_seconds']} s)"
        )
        if register and n != "claim_match":  # claim_match has no trained weights
            from assay.classify.governance import register as register_head

            ids = register_head(doc, out_dir or MODELS_DIR)
            doc["registry"] = ids
            console.print(f"  registered {ids['model']} trained on {', '.join(ids['datasets'])}; evaluation {ids['evaluation']}")
    _load.cache_clear()
    if as_json:
        typer.echo(dumps_json(docs if len(docs) > 1 else docs[0], indent=2))


@classify_app.command("check-int8")
def check_int8_command(
    name: str = typer.Argument(..., help="Committed head to re-check, or 'all'."),
    out_dir: Path = typer.Option(None, "--out-dir", help="Folder of the head (default: the package's models/ folder)."),
) -> None:
    """Re-measure a committed head's test metrics with the int8 encoder it serves with, beside
    its fp32 scores; updates its metrics JSON and model card (not its weights or version)."""
    from rich.console import Console

    from assay.classify.model import HEAD_NAMES, MODELS_DIR
    from assay.classify.train import recheck_int8

    names = list(HEAD_NAMES) if name == "all" else [name]
    for n in names:
        if n not in HEAD_NAMES:
            raise BadInput(f"{n!r} is not a head classifier; heads: {', '.join(HEAD_NAMES)}")
    console = Console(stderr=True)
    for n in names:
        with console.status(f"checking {n}") as status:
            doc = recheck_int8(n, out_dir or MODELS_DIR, progress=lambda text: status.update(text))
        q = doc["test_int8"]
        console.print(
            f"[bold]{n}[/] int8: F1 {q['metrics']['f1']['value']} AUROC {q['metrics']['auroc']['value']} "
            f"(fp32: F1 {doc['test']['model']['f1']['value']} AUROC {doc['test']['model']['auroc']['value']}); "
            f"labels agree {q['agreement_with_fp32']['label_agreement']:.2%}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(classify_app, name="classify")

    @app.command("label")
    def label_command(
        names: str = typer.Option("toxicity,hate,offensive", "--classifiers", "-c", help="Classifier name(s), comma-separated, or 'all'."),
        store: str = typer.Option(..., "--store", help="Label store: a Parquet file path or redis://host:port/db."),
        input_path: Path = typer.Option(None, "--input", "-i", help="Parquet or JSONL file of items (batch mode)."),
        stream: str = typer.Option(None, "--stream", help="Redis stream to consume (stream mode)."),
        redis_url: str = typer.Option("redis://127.0.0.1:6379/0", "--redis-url", help="Redis holding the stream."),
        group: str = typer.Option("assay-label", "--group", help="Consumer group (stream mode)."),
        consumer: str = typer.Option(None, "--consumer", help="Consumer name (default labeler-<pid>)."),
        id_field: str = typer.Option("id", "--id-field", help="Field holding the item id."),
        text_field: str = typer.Option("text", "--text-field", help="Field holding the text."),
        max_messages: int = typer.Option(None, "--max-messages", help="Stop after this many stream messages."),
        idle_exit_s: float = typer.Option(None, "--idle-exit", help="Stop after this many seconds without a stream message."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Label content at ingestion into the guard's label store (resumable; skips ids already labelled)."""
        from assay.classify.labeling import label_batch, label_stream

        chosen = _names(names)
        if (input_path is None) == (stream is None):
            raise BadInput("give exactly one of --input FILE (batch) or --stream NAME (Redis Streams)")
        if input_path is not None:
            from assay.classify.scoring import count_rows

            if not Path(input_path).is_file():
                raise BadInput(f"input file {input_path} does not exist")
            progress, task = _progress(count_rows(input_path), f"labelling with {', '.join(chosen)}")
            with progress:
                summary = label_batch(
                    chosen, input_path, store, id_field=id_field, text_field=text_field, on_progress=lambda n: progress.advance(task, n)
                )
        else:
            progress, task = _progress(max_messages, f"labelling stream {stream}")
            with progress:
                summary = label_stream(
                    chosen,
                    redis_url,
                    stream,
                    store,
                    group=group,
                    consumer=consumer,
                    id_field=id_field,
                    text_field=text_field,
                    max_messages=max_messages,
                    idle_exit_s=idle_exit_s,
                    on_progress=lambda n: progress.advance(task, n),
                )
        result = summary.to_dict()
        if as_json:
            typer.echo(dumps_json(result, indent=2))
            return
        typer.echo(
            f"labelled {result['labelled']} items ({result['skipped_already_labelled']} already labelled, {result['errors']} errors) "
            f"in {result['seconds']} s: {result['labelled_per_s']} items/s; version {result['version']}"
        )
        for example in result["error_examples"]:
            typer.echo(f"  {example}")
