"""``assay mitigate finetune | build-data | export | resume | runs``.

Imports nothing heavy at module level: torch, transformers and peft load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from assay.errors import AssayError
from assay.files import dumps_json
from assay.mitigate.train import LORA_TARGETS

mitigate_app = typer.Typer(
    name="mitigate",
    help="Turn red-team findings and evaluation failures into a safer model: build mitigation data, "
    "LoRA fine-tune with checkpoints, re-evaluate before/after, register with lineage, gate.",
    no_args_is_help=True,
)

FINDINGS_HELP = "Red-team findings / evaluation JSONL (prompt, response, verdict); repeatable."


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(dumps_json(summary, indent=2, sort_keys=True, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    report = summary.get("report")
    if report:
        table = Table(title=f"mitigation run {summary['run_id']}: before / after (95% intervals)")
        for col in ("metric", "before", "after"):
            table.add_column(col, justify="right" if col != "metric" else "left")
        for key, label in (("harmful_rate", "harmful-answer rate (held-out harmful)"), ("benign_helpful", "helpful rate (held-out benign)"), ("benign_answer_match", "reference answer match (benign)")):
            cells = []
            for side in ("before", "after"):
                agg = report[side][key]
                cells.append(f"{agg['value']:.3f} [{agg['ci_low']:.3f}, {agg['ci_high']:.3f}] n={agg['n']}")
            table.add_row(label, *cells)
        console.print(table)
        for v in report["gates"]["verdicts"]:
            mark = "[green]pass[/]" if v["passed"] else "[red]FAIL[/]"
            console.print(f"gate {v['id']}: {mark} ({v['reason']})")
    for name, sides in (summary.get("suites") or {}).items():
        if "before" in sides and "after" in sides:
            keys = sorted(set(sides["before"]["metrics"]) & set(sides["after"]["metrics"]))
            shown = ", ".join(f"{k} {sides['before']['metrics'][k]:.3f}->{sides['after']['metrics'][k]:.3f}" for k in keys[:6])
            console.print(f"suite {name}: {shown}")
    train = summary.get("train")
    if train:
        console.print(f"training: {train['steps']} steps on {train['examples']} examples, median {train['median_step_s']:.2f}s/step, loss {train['first_loss']:.3f} -> {train['final_loss']:.3f}")
    dpo = summary.get("dpo")
    if dpo and dpo.get("losses"):
        margins = dpo.get("reward_margins") or [float("nan")]
        console.print(f"DPO: {dpo['steps']} steps on {dpo['pairs']} pairs, loss {dpo['losses'][0]:.3f} -> {dpo['losses'][-1]:.3f}, reward margin {margins[0]:.3f} -> {margins[-1]:.3f}")
    reg = summary.get("registration")
    if reg:
        console.print(f"registered {reg['model']} <- {reg['dataset']} + {reg['base']}; effective restrictions: {', '.join(reg['effective']['restrictions']) or 'none'}")
        gate = reg.get("gate")
        if isinstance(gate, dict):
            console.print(f"deployment gate: {gate['summary']}")
        elif gate:
            console.print(f"deployment gate: {gate}")
    console.print(f"merged weights: {summary.get('merged_dir')}")


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    _print_summary(summary, as_json)
    report = summary.get("report")
    if report and not report["gates"]["passed"]:
        failed = [v["id"] for v in report["gates"]["verdicts"] if not v["passed"]]
        raise AssayError(f"mitigation gates failed: {', '.join(failed)}", hint="see the before/after table; the model is registered but the gate says no")


@mitigate_app.command("finetune")
def finetune(
    findings: list[Path] = typer.Option(..., "--findings", "-f", help=FINDINGS_HELP),
    model: str = typer.Option("smollm2", "--model", help="'smollm2' (bundled GGUF), a .gguf file or a transformers model folder."),
    exclude: list[Path] = typer.Option(None, "--exclude", help="Evaluation prompts (JSONL/CSV) the gate uses; never trained on. Repeatable."),
    exclude_suite: list[str] = typer.Option(None, "--exclude-suite", help="Evaluation-engine suite (built-in name or YAML) whose prompts are never trained on. Repeatable."),
    suite: list[str] = typer.Option(None, "--suite", help="Evaluation-engine suite to re-run before/after (e.g. safety-do-not-answer, injection-cyberseceval, bias-bbq). Repeatable."),
    suite_limit: int = typer.Option(20, help="Items per --suite (the in-process target answers one prompt at a time)."),
    steps: int = typer.Option(60, help="Optimizer steps."),
    batch_size: int = typer.Option(8, help="Examples per step."),
    learning_rate: float = typer.Option(2e-3, "--lr", help="AdamW learning rate (LoRA; 2e-4 left the CPU-sized run unchanged)."),
    max_length: int = typer.Option(192, help="Token limit per example."),
    lora_r: int = typer.Option(8, help="LoRA rank."),
    lora_layers: int = typer.Option(8, help="Adapt only the top N decoder layers (0 = all)."),
    lora_modules: str = typer.Option(",".join(LORA_TARGETS), help="Comma-separated module names LoRA adapts (attention and MLP projections by default)."),
    checkpoint_every: int = typer.Option(10, help="Checkpoint every N steps (resume continues from the newest)."),
    dpo_steps: int = typer.Option(0, help="DPO steps (trl) after the supervised stage (0 = no DPO)."),
    dpo_batch_size: int = typer.Option(4, help="Preference pairs per DPO step."),
    dpo_lr: float = typer.Option(1e-4, "--dpo-lr", help="DPO learning rate (5e-4 made the CPU bench model refuse almost everything)."),
    dpo_beta: float = typer.Option(0.1, help="DPO beta (higher = stay closer to the supervised model)."),
    dpo_pairs: str = typer.Option("harmful", help="DPO pairs: 'harmful' (safe vs human-labelled harmful answer) or 'harmful+benign' (adds helpful vs refusal; measured to undo the supervised stage)."),
    augment: int = typer.Option(200, help="Extra Do-Not-Answer prompts with human-judged safe answers added to training."),
    benign_ratio: float = typer.Option(1.0, help="Benign boundary examples per harmful training example."),
    heldout_fraction: float = typer.Option(0.3, help="Share of prompts (by hash) held out from training."),
    eval_harmful: int = typer.Option(100, help="Held-out harmful prompts evaluated before/after."),
    eval_benign: int = typer.Option(100, help="Held-out benign prompts evaluated before/after."),
    max_new_tokens: int = typer.Option(48, help="Tokens generated per evaluation answer."),
    min_train: int = typer.Option(8, help="Fewest training rows accepted."),
    min_heldout: int = typer.Option(8, help="Fewest held-out prompts (each kind) accepted."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the before/after evaluation (and so the deployment gate)."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not touch the registry."),
    base_id: str = typer.Option(None, "--base-id", help="Registry id of the base model; its hashes must match the weights on disk."),
    bundle: Path = typer.Option(None, "--bundle", help="Policy bundle with the gates (default: the mitigation bundle shipped with assay)."),
    surface: str = typer.Option("research", help="Deployment surface submitted to the gate."),
    purpose: str = typer.Option("research", help="Deployment purpose submitted to the gate."),
    environment: str = typer.Option("staging", help="Deployment environment submitted to the gate."),
    data_purpose: list[str] = typer.Option(None, "--data-purpose", help="Purposes of the mitigation dataset (default research, safety_finetuning)."),
    restriction: list[str] = typer.Option(None, "--restriction", help="Extra restrictions on the mitigation dataset (e.g. research_only)."),
    device: str = typer.Option("auto", help="auto (GPU when present), cpu or cuda."),
    seed: int = typer.Option(0, help="Seed for the split samples, batch order and LoRA init."),
    run_id: str = typer.Option(None, "--run-id", help="Name the run (default: time + random suffix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Build mitigation data from findings, LoRA fine-tune, re-evaluate, register and gate."""
    from assay.mitigate.pipeline import RunSpec, create_run, execute
    from assay.mitigate.train import TrainConfig

    spec = RunSpec(
        model=model,
        findings=[str(p) for p in findings],
        exclude_files=[str(p) for p in exclude or []],
        exclude_suites=list(exclude_suite or []),
        suites=list(suite or []),
        suite_limit=suite_limit,
        heldout_fraction=heldout_fraction,
        augment_harmful=augment,
        benign_ratio=benign_ratio,
        min_train=min_train,
        min_heldout=min_heldout,
        eval_harmful=eval_harmful,
        eval_benign=eval_benign,
        evaluate=not no_eval,
        max_new_tokens=max_new_tokens,
        dpo_steps=dpo_steps,
        dpo_batch_size=dpo_batch_size,
        dpo_learning_rate=dpo_lr,
        dpo_beta=dpo_beta,
        dpo_pairs=dpo_pairs,
        train=TrainConfig(
            steps=steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            max_length=max_length,
            lora_r=lora_r,
            lora_alpha=2 * lora_r,
            lora_layers=lora_layers,
            lora_modules=lora_modules,
            checkpoint_every=checkpoint_every,
            seed=seed,
        ),
        register=not no_register,
        base_id=base_id,
        bundle=str(bundle) if bundle else None,
        deploy_surface=surface,
        deploy_purpose=purpose,
        deploy_environment=environment,
        data_purposes=list(data_purpose or []),
        data_restrictions=list(restriction or []),
        device=device,
        seed=seed,
    )
    console = _console()
    run_dir = create_run(spec, run_id)
    console.print(f"mitigation run {run_dir.name}: data in {run_dir / 'data'} (resume with `assay mitigate resume {run_dir.name}`)")
    summary = execute(run_dir, progress=not as_json, say=lambda text: console.print(text, highlight=False))
    _finish(summary, as_json)


@mitigate_app.command("resume")
def resume(
    run_id: str = typer.Argument(..., help="The run to continue (see `assay mitigate runs`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
) -> None:
    """Continue a killed or failed run from its last finished stage / training checkpoint."""
    from assay.mitigate.pipeline import execute, run_path

    console = _console()
    summary = execute(run_path(run_id), progress=not as_json, say=lambda text: console.print(text, highlight=False))
    _finish(summary, as_json)


@mitigate_app.command("build-data")
def build_data(
    findings: list[Path] = typer.Option(..., "--findings", "-f", help=FINDINGS_HELP),
    out: Path = typer.Option(..., "--out", help="Folder for train.jsonl, heldout_*.jsonl, eval_*.jsonl and manifest.json."),
    exclude: list[Path] = typer.Option(None, "--exclude", help="Evaluation prompts (JSONL/CSV) never trained on. Repeatable."),
    exclude_suite: list[str] = typer.Option(None, "--exclude-suite", help="Evaluation-engine suite whose prompts are never trained on."),
    augment: int = typer.Option(200, help="Extra Do-Not-Answer prompts with human-judged safe answers."),
    benign_ratio: float = typer.Option(1.0, help="Benign boundary examples per harmful training example."),
    heldout_fraction: float = typer.Option(0.3, help="Share of prompts (by hash) held out from training."),
    eval_harmful: int = typer.Option(100, help="Size of the held-out harmful evaluation sample."),
    eval_benign: int = typer.Option(100, help="Size of the held-out benign evaluation sample."),
    min_train: int = typer.Option(8, help="Fewest training rows accepted."),
    min_heldout: int = typer.Option(8, help="Fewest held-out prompts (each kind) accepted."),
    seed: int = typer.Option(0, help="Seed for sampling."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest's statistics as JSON."),
) -> None:
    """Only build the mitigation dataset (no model needed)."""
    from assay.mitigate.pipeline import RunSpec
    from assay.mitigate.pipeline import build_data as build

    spec = RunSpec(
        findings=[str(p) for p in findings],
        exclude_files=[str(p) for p in exclude or []],
        exclude_suites=list(exclude_suite or []),
        augment_harmful=augment,
        benign_ratio=benign_ratio,
        heldout_fraction=heldout_fraction,
        eval_harmful=eval_harmful,
        eval_benign=eval_benign,
        min_train=min_train,
        min_heldout=min_heldout,
        seed=seed,
    )
    manifest = build(spec, out)
    if as_json:
        typer.echo(dumps_json(manifest["stats"], indent=2, sort_keys=True))
        return
    stats = manifest["stats"]
    typer.echo(
        f"wrote {out}: {stats['train']} training rows ({stats['train_harmful']} harmful->safe, {stats['train_benign']} benign->helpful), "
        f"{stats['heldout_harmful']} held-out harmful, {stats['heldout_benign']} held-out benign; "
        f"{stats['excluded_by_eval_suites']} dropped as evaluation prompts; restrictions: {', '.join(manifest['restrictions']) or 'none'}"
    )


@mitigate_app.command("export")
def export_cmd(
    run_id: str = typer.Argument(None, help="A run whose adapter to merge (or use --adapter)."),
    adapter: Path = typer.Option(None, "--adapter", help="A saved LoRA adapter folder."),
    model: str = typer.Option("smollm2", "--model", help="Base model the adapter was trained on (with --adapter)."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: the run's merged/)."),
) -> None:
    """Merge a LoRA adapter into its base model and write safetensors weights."""
    from assay.errors import BadInput
    from assay.mitigate.export import export_adapter
    from assay.mitigate.model import resolve_model
    from assay.mitigate.pipeline import read_run, run_path

    if run_id:
        run_dir = run_path(run_id)
        base = resolve_model(read_run(run_dir)["spec"]["model"])
        adapter = run_dir / "adapter"
        out = out or run_dir / "merged"
    elif adapter is None or out is None:
        raise BadInput("give a run id, or --adapter and --out")
    else:
        base = resolve_model(model)
    hashes = export_adapter(base, adapter, out)
    for name, digest in hashes.items():
        typer.echo(f"{out / name}  sha256 {digest}")


@mitigate_app.command("runs")
def runs(as_json: bool = typer.Option(False, "--json")) -> None:
    """List mitigation runs and their status."""
    from assay.mitigate.pipeline import list_runs

    rows = list_runs()
    if as_json:
        typer.echo(dumps_json(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['run_id']}  {r['status']}")


def register(app: typer.Typer) -> None:
    app.add_typer(mitigate_app, name="mitigate")
