"""``assay redteam llm|filters|recsys|regress``. Imports cheaply: the work is imported inside
each command."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from assay.errors import EXIT_FAILED, BadInput
from assay.files import dumps_json

redteam_app = typer.Typer(help="Red-team LLMs, content filters and recommenders; keep regression suites of what broke them.",
                          no_args_is_help=True)


def _target(target_json: str | None, url: str | None, model: str, max_tokens: int) -> dict:
    if target_json:
        from assay.files import parse_json

        spec = parse_json(target_json, "--target-json")
        if not isinstance(spec, dict) or "kind" not in spec:
            raise BadInput("--target-json must be an object with a 'kind' (openai | llamacpp | transformers)")
        return spec
    params = {"max_tokens": max_tokens, "temperature": 0, "seed": 0}
    if url:
        return {"kind": "openai", "base_url": url, "model": model, "params": params}
    return {"kind": "llamacpp", "model": model, "params": params}


def _print(obj: dict, as_json: bool, table_title: str, rows: list[tuple]) -> None:
    if as_json:
        typer.echo(dumps_json(obj, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=table_title)
    for col in rows[0]:
        table.add_column(str(col))
    for r in rows[1:]:
        table.add_row(*[str(x) for x in r])
    Console().print(table)


def _asr_rows(summary: dict) -> list[tuple]:
    rows: list[tuple] = [("family / category", "ASR", "95% CI", "n", "unjudged", "errors")]
    for key, r in [*summary["by_family"].items(), *summary["by_category"].items()]:
        rows.append((key, f"{r['asr']:.2f}", f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]", r["n"], r["unjudged"], r["errors"]))
    return rows


@redteam_app.command("llm")
def llm_cmd(
    family: list[str] = typer.Option(None, "--family", "-f", help="Attack family (repeatable): direct, jailbreak, injection, encoding, multiturn, or any registered family (docs/extending.md). Default: the built-ins."),
    limit: int = typer.Option(10, "--limit", help="Attacks per family (seeded sample)."),
    seed: int = typer.Option(0, "--seed"),
    target_json: str = typer.Option(None, "--target-json", help="An evaluation target spec as JSON (any kind assay eval accepts)."),
    url: str = typer.Option(None, "--url", help="An OpenAI-compatible endpoint (instead of the bundled model)."),
    model: str = typer.Option("smollm2", "--model", help="Model name (bundled model for llama.cpp, or the endpoint's model)."),
    max_tokens: int = typer.Option(64, "--max-tokens"),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Attack an LLM through the evaluation engine; store findings; report ASR per family and category."""
    from assay.redteam.attacks import FAMILIES
    from assay.redteam.llm import run_llm

    if limit < 1:
        raise BadInput(f"--limit must be >= 1, got {limit}")
    run = run_llm(family or FAMILIES, _target(target_json, url, model, max_tokens), limit_per_family=limit, seed=seed,
                  show_progress=not as_json, progress=None if as_json else typer.echo)
    _print(run.to_dict(), as_json, f"red-team run {run.run_id} ({run.path})", _asr_rows(run.summary))


@redteam_app.command("filters")
def filters_cmd(
    filter_name: str = typer.Option("profanity-check", "--filter", help="profanity-check or an assay.classify classifier (toxicity, hate, ...)."),
    kind: list[str] = typer.Option(None, "--kind", "-k", help="Perturbation (repeatable); default all."),
    limit: int = typer.Option(100, "--limit", help="Flagged texts to perturb."),
    rate: float = typer.Option(0.6, "--rate", help="Share of words each perturbation touches."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """How often perturbed flagged content evades a filter and the guard's rules, with and without normalisation."""
    from assay.redteam.filters import run_filters
    from assay.redteam.perturb import PERTURBATIONS

    out = run_filters(filter_name, kinds=kind or PERTURBATIONS, limit=limit, rate=rate, seed=seed)
    rows: list[tuple] = [("perturbation", "evades filter (norm.)", "evades filter (raw)", "passes guard (norm.)", "passes guard (raw)")]
    for k, v in out["perturbations"].items():
        w, wo = v["with_normalisation"], v["without_normalisation"]
        rows.append((k, f"{w['classifier']['rate']:.2f}", f"{wo['classifier']['rate']:.2f}", f"{w['guard']['rate']:.2f}", f"{wo['guard']['rate']:.2f}"))
    _print(out, as_json, f"filter evasion: {filter_name} on {out['flagged']} flagged texts", rows)


@redteam_app.command("recsys")
def recsys_cmd(
    attack: str = typer.Option("average", "--attack", help="random | average | bandwagon | segment"),
    attack_size: float = typer.Option(0.03, "--attack-size", help="Fake profiles as a share of genuine users."),
    filler_size: float = typer.Option(0.02, "--filler-size", help="Filler items as a share of the catalogue."),
    targets: int = typer.Option(5, "--targets", help="Target items to push."),
    k: int = typer.Option(10, "--k", help="Slate length for the hit ratio."),
    max_users: int = typer.Option(200, "--max-users", help="Genuine users to measure on."),
    quick: bool = typer.Option(False, "--quick", help="A smaller recommender (faster, same procedure)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Shilling attack on the reference recommender: shift, hit ratio, detectors, mitigation."""
    from assay.data import movielens
    from assay.recsys.model import TrainConfig
    from assay.redteam.recsys import run_shilling
    from assay.redteam.shilling import AttackConfig

    cfg = TrainConfig(factors=32, als_iterations=8, rounds=60, train_candidates=50, candidates=100) if quick else TrainConfig()
    report = run_shilling(movielens.load_latest_small(), AttackConfig(attack, attack_size, filler_size, targets, seed=seed),
                          train_config=cfg, k=k, max_users=max_users, progress=None if as_json else typer.echo)
    out = report.to_dict()
    rows: list[tuple] = [("model", "prediction shift", "control shift", "raw shift", "rank pct", f"HR@{k}")]
    for name in ("clean", "attacked", "mitigated"):
        m = out[name]
        rows.append((name, f"{m['prediction_shift']:+.4f}", f"{m['control_shift']:+.4f}", f"{m['raw_score_shift']:+.4f}",
                     f"{m['rank_percentile']:.3f}", f"{m['hit_ratio']:.3f}"))
    rows += [(f"detector {d['name']}", f"AUROC {d['auroc']:.3f}", f"P {d['precision']:.2f}", f"R {d['recall']:.2f}",
              f"flagged {d['flagged']}", "") for d in out["detectors"]]
    _print(out, as_json, f"{attack} attack, {attack_size:.1%} of users", rows)


@redteam_app.command("regress")
def regress_cmd(
    from_run: str = typer.Option(None, "--from", help="Make a regression suite from this red-team run's successful attacks."),
    out: Path = typer.Option(None, "--out", help="Folder for the new regression suite (with --from)."),
    suite: Path = typer.Option(None, "--suite", help="Run this regression suite folder against a model."),
    target_json: str = typer.Option(None, "--target-json"),
    url: str = typer.Option(None, "--url"),
    model: str = typer.Option("smollm2", "--model"),
    max_tokens: int = typer.Option(64, "--max-tokens"),
    max_asr: float = typer.Option(None, "--max-asr", help="Exit 1 when the replayed attack success rate is above this."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Turn findings into a regression suite (--from RUN --out DIR), or replay one (--suite DIR)."""
    from assay.redteam.llm import run_regression, write_regression_suite

    if bool(from_run) == bool(suite):
        raise BadInput("give either --from RUN_ID (with --out DIR) to create a suite, or --suite DIR to run one")
    if from_run:
        if out is None:
            raise BadInput("--from needs --out DIR for the new regression suite")
        path = write_regression_suite(from_run, out)
        n = len(json.loads((path / "attacks.json").read_text())["attacks"])
        _print({"suite": str(path), "attacks": n}, as_json, "regression suite", [("suite", "attacks"), (str(path), n)])
        return
    explicit = target_json or url
    run = run_regression(suite, _target(target_json, url, model, max_tokens) if explicit else None,
                         show_progress=not as_json, progress=None if as_json else typer.echo)
    _print(run.to_dict(), as_json, f"regression run {run.run_id}", _asr_rows(run.summary))
    asr = run.summary["overall"]["asr"]
    if max_asr is not None and asr == asr and asr > max_asr:
        typer.echo(f"attack success rate {asr:.3f} is above --max-asr {max_asr}", err=True)
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(redteam_app, name="redteam")
