"""``assay recsys``: download MovieLens, train, evaluate, recommend, audit report, safety labels.

Imports cheaply: LightGBM, implicit and matplotlib load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from assay.errors import BadInput
from assay.files import dumps_json

recsys_app = typer.Typer(
    help="The reference recommender (ALS retrieval + LightGBM LambdaMART ranker on MovieLens).",
    no_args_is_help=True,
)


def _progress():
    from rich.console import Console

    console = Console(stderr=True)
    return console, (lambda msg: console.print(f"  {msg}", highlight=False))


def parse_history(text: str | None) -> list[tuple[int, float]] | None:
    """``"1:5,260:4.5"`` -> [(1, 5.0), (260, 4.5)]; ``""`` -> [] (an explicitly empty history)."""
    if text is None:
        return None
    out = []
    for part in [p for p in text.split(",") if p.strip()]:
        try:
            item, stars = part.split(":")
            out.append((int(item), float(stars)))
        except ValueError:
            raise BadInput(f"history entry {part!r} is not ITEM:STARS (e.g. 260:4.5)") from None
    return out


@recsys_app.command("download")
def download(
    name: str = typer.Argument(..., help="ml-100k, ml-1m or ml-25m"),
    url: str = typer.Option(None, help="A mirror URL (the checksums are still the official ones)."),
) -> None:
    """Download an official GroupLens archive and verify its size, md5 and sha256."""
    from assay.data import movielens

    path = movielens.fetch(name, url=url)
    typer.echo(f"{name}: verified {path}")


@recsys_app.command("train")
def train_cmd(
    dataset: str = typer.Option(
        "ml-latest-small", help="ml-latest-small, ml-100k, ml-1m, ml-25m, or a folder/zip path."
    ),
    users: int = typer.Option(None, help="Keep only the first N users (a quick run)."),
    seed: int = typer.Option(20261129, help="Seed for ALS and LightGBM (same seed, same files)."),
    rounds: int = typer.Option(None, help="Boosting rounds of the ranker (default: TrainConfig.rounds, 100)."),
    register: bool = typer.Option(
        True,
        "--register/--no-register",
        help="Register data, model and lineage in the governance registry.",
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Train the two-stage recommender on a per-user time split and save it under ASSAY_HOME."""
    from dataclasses import replace

    from assay.recsys.model import TrainConfig
    from assay.recsys.pipeline import train_and_save

    console, say = _progress()
    with console.status("training"):
        rec, _split, folder = train_and_save(
            dataset,
            users=users,
            # one default, in TrainConfig: the CLI's own 150 had drifted from it (issue #27)
            config=replace(TrainConfig(), seed=seed, rounds=TrainConfig().rounds if rounds is None else rounds),
            progress=say,
        )
    out = {
        "model": rec.version,
        "folder": str(folder),
        "files": rec.meta["files"],
        "train_s": rec.meta["train_s"],
        "training": rec.meta["training"],
    }
    if register:
        from assay.errors import Unavailable
        from assay.recsys.governance import register as register_model

        try:
            out["registry"] = register_model(rec, folder)
        except Unavailable as e:  # no governance part in this install: the model is still saved
            console.print(f"  not registered: {e.message}")
    if as_json:
        typer.echo(dumps_json(out, indent=2))
    else:
        typer.echo(f"trained {rec.version} in {rec.meta['train_s']:.1f}s -> {folder}")
        for f, h in rec.meta["files"].items():
            typer.echo(f"  {f}  sha256 {h}")
        if "registry" in out:
            typer.echo(f"  registered: {out['registry']['dataset']} -> {out['registry']['model']}")


@recsys_app.command("evaluate")
def evaluate_cmd(
    k: int = typer.Option(10, help="List length."),
    users: int = typer.Option(None, help="Evaluate only the first N users."),
    register: bool = typer.Option(
        False, "--register", help="Record the evaluation in the governance registry."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Offline evaluation on each user's held-out latest ratings: accuracy with intervals, exposure, Gini, APLT, user-group gap."""
    from assay.recsys.pipeline import evaluate_saved, load_served, model_folder

    console, _ = _progress()
    rec = load_served()
    with console.status("evaluating"):
        ev = evaluate_saved(rec, k=k, max_users=users)
    data = ev.to_dict()
    if register:
        from assay.recsys.governance import register as register_model

        data["registry"] = register_model(rec, model_folder(), evaluation=ev)
    if as_json:
        typer.echo(dumps_json(data, indent=2, default=float))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{rec.version} @ k={k}")
    table.add_column("metric")
    for s in ev.metrics:
        table.add_column(s, justify="right")
    for m in ev.metrics["ranker"]:
        table.add_row(
            m,
            *(
                f"{ev.metrics[s][m]['value']:.4f} [{ev.metrics[s][m]['ci_low']:.4f}, {ev.metrics[s][m]['ci_high']:.4f}]"
                for s in ev.metrics
            ),
        )
    Console().print(table)
    for name, a in {**ev.beyond, **ev.user_groups}.items():
        typer.echo(f"  {name}: {a['value']:.4f} [{a['ci_low']:.4f}, {a['ci_high']:.4f}]")


@recsys_app.command("recommend")
def recommend_cmd(
    user: int = typer.Argument(
        None, help="User id (omit for the non-personalised, cold-start slate)."
    ),
    k: int = typer.Option(10),
    history: str = typer.Option(
        None, help='Request-time history "ITEM:STARS,..." (folds the user in).'
    ),
    strict: bool = typer.Option(
        False, help="Refuse unknown users instead of serving the cold-start slate."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Top-k films for a user, with scores."""
    from assay.recsys.pipeline import load_served

    rec = load_served()
    slate = rec.recommend(user, k, history=parse_history(history), strict=strict)
    rows = [
        {"rank": r + 1, "item_id": int(i), "score": round(float(s), 6)}
        for r, (i, s) in enumerate(zip(slate.item_ids, slate.scores, strict=True))
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "user_id": user,
                    "model": rec.version,
                    "cold_start": slate.cold_start,
                    "items": rows,
                },
                indent=2,
            )
        )
        return
    typer.echo(
        f"{rec.version} for user {user}"
        + (" (cold start: popularity candidates, no personal signals)" if slate.cold_start else "")
    )
    for r in rows:
        typer.echo(f"  {r['rank']:>3}. {r['item_id']:>7}  {r['score']:+.4f}")


@recsys_app.command("report")
def report_cmd(
    out: Path = typer.Option(
        None, help="HTML file (default ASSAY_HOME/reports/recsys-audit.html)."
    ),
    k: int = typer.Option(10),
    robustness: Path = typer.Option(None, help="Red-team results JSON for the robustness section."),
    users: int = typer.Option(None, help="Evaluate only the first N users."),
) -> None:
    """Audit report (accuracy with intervals, item/user fairness, robustness) as one HTML file with plots."""
    from assay.config import settings
    from assay.recsys.audit import write_audit
    from assay.recsys.pipeline import evaluate_saved, load_served

    rec = load_served()
    ev = evaluate_saved(rec, k=k, max_users=users)
    path = write_audit(rec, ev, out or settings().path("reports", "recsys-audit.html"), robustness)
    typer.echo(f"wrote {path}")


@recsys_app.command("labels")
def labels_cmd(
    out: Path = typer.Option(
        None, help="Parquet file (default ASSAY_HOME/labels/movielens.parquet)."
    ),
    dataset: str = typer.Option("ml-latest-small"),
) -> None:
    """Export the metadata-derived safety labels (mature, violence, drugs, sexual, horror) for the guard's label store."""
    from assay.config import settings
    from assay.recsys.labels import safety_labels, write_labels
    from assay.recsys.pipeline import load_dataset

    labels = safety_labels(load_dataset(dataset))
    path = write_labels(labels, out or settings().path("labels", "movielens.parquet"))
    typer.echo(f"wrote {len(labels)} items -> {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(recsys_app, name="recsys")
