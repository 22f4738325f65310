"""One mitigation run, as resumable stages in a run folder under ``$ASSAY_HOME/mitigate/runs``:

1. ``data``      build the mitigation set from the findings (``data/``)
2. ``base``      hash the base model and check / make its registration
3. ``before``    evaluate the base model on the held-out sets (``before.json``)
4. ``train``     LoRA fine-tune with checkpoints (``checkpoints/``, ``adapter/``), then optionally
                 DPO on top of it with trl (``dpo/``, ``dpo.json``; ``dpo_steps`` > 0)
5. ``export``    merge the adapter, write safetensors (``merged/``)
6. ``after``     evaluate the merged weights, check the bundle's gates (``after.json``, and the run log ``runlog.jsonl``)
7. ``register``  weights + lineage + evaluation in the registry, submit to the deployment gate
                 (``registration.json``)

Each stage writes its output atomically and is skipped when that output exists, so
``assay mitigate resume RUN`` after a kill continues where the run stopped; registration is the
last stage, so a run that did not finish has registered nothing.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.config import settings
from assay.errors import BadInput
from assay.mitigate import dataset as ds
from assay.mitigate.model import BUNDLED_NAME, resolve_model
from assay.mitigate.train import TrainConfig
from assay.runlog import FILE_NAME as RUNLOG
from assay.runlog import read_runlog


@dataclass
class RunSpec:
    model: str = BUNDLED_NAME
    findings: list[str] = field(default_factory=list)
    exclude_files: list[str] = field(default_factory=list)
    exclude_suites: list[str] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)  # evaluation-engine suites re-run before/after
    suite_limit: int = 20
    heldout_fraction: float = 0.3
    augment_harmful: int = 200
    benign_ratio: float = 1.0
    min_train: int = 8
    min_heldout: int = 8
    eval_harmful: int = 100
    eval_benign: int = 100
    evaluate: bool = True
    max_new_tokens: int = 48
    generate_batch: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)
    dpo_steps: int = 0  # preference optimisation after the supervised stage (0 = none)
    dpo_batch_size: int = 4
    dpo_learning_rate: float = 1e-4
    dpo_beta: float = 0.1
    dpo_pairs: str = "harmful"  # harmful | harmful+benign (see assay.mitigate.dpo)
    register: bool = True
    base_id: str | None = None
    bundle: str | None = None
    deploy_surface: str = "research"
    deploy_purpose: str = "research"
    deploy_environment: str = "staging"
    data_purposes: list[str] = field(default_factory=list)
    data_restrictions: list[str] = field(default_factory=list)
    device: str = "auto"
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["train"] = self.train.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        data["train"] = TrainConfig(**data["train"])
        return cls(**data)


def runs_root() -> Path:
    return settings().home / "mitigate" / "runs"


def run_path(run_id: str) -> Path:
    path = runs_root() / run_id
    if not (path / "run.json").is_file():
        known = sorted(p.name for p in runs_root().glob("*") if (p / "run.json").is_file()) if runs_root().is_dir() else []
        raise BadInput(f"no mitigation run {run_id!r} under {runs_root()}", hint=f"known runs: {', '.join(known) or 'none'}")
    return path


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(path)


def _data_identity(run_dir: Path) -> dict[str, Any] | None:
    """The mitigation data's name and content hash: sha256 over its sorted (file, sha256) pairs,
    as ``evaluate.engine.dataset_identity`` hashes a dataset (None before the data exists)."""
    import hashlib

    path = run_dir / "data" / "manifest.json"
    if not path.is_file():
        return None
    pairs = sorted(json.loads(path.read_text()).get("files", {}).items())
    return {"name": f"mitigation-data:{run_dir.name}",
            "sha256": hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()}


def read_run(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text())


def _set_status(run_dir: Path, status: str, **extra: Any) -> None:
    meta = read_run(run_dir)
    meta["status"] = status
    meta.setdefault("history", []).append({"status": status, "at": time.time()})
    meta.update(extra)
    _write_json(run_dir / "run.json", meta)


def suite_prompts(names: list[str]) -> list[str]:
    """User prompts of evaluation-engine suites (built-in names or YAML paths), to keep out of training."""
    if not names:
        return []
    from assay.evaluate.engine import load_items
    from assay.evaluate.suite import load_suite

    prompts: list[str] = []
    for name in names:
        for item in load_items(load_suite(name)):
            prompts.extend(m["content"] for m in item.messages if m.get("role") == "user")
    return prompts


def build_data(spec: RunSpec, out_dir: Path) -> dict[str, Any]:
    """Stage 1: the mitigation set, its manifest and the evaluation samples in ``out_dir``."""
    findings, counts = ds.read_findings(spec.findings)
    # The suites re-run after training are evaluation suites too: never train on their prompts.
    suites = list(dict.fromkeys([*spec.exclude_suites, *spec.suites]))
    exclude = [p for f in spec.exclude_files for p in ds.read_prompts(f)] + suite_prompts(suites)
    mset = ds.build(
        findings,
        heldout_fraction=spec.heldout_fraction,
        augment_harmful=spec.augment_harmful,
        benign_ratio=spec.benign_ratio,
        heldout_benign=max(spec.eval_benign, spec.min_heldout),
        exclude=exclude,
        min_train=spec.min_train,
        min_heldout=spec.min_heldout,
        seed=spec.seed,
    )
    mset.stats["finding_rows"] = counts["rows"]
    mset.stats["finding_rows_passed"] = counts["passed"]
    mset.stats["excluded_eval_prompts"] = len(exclude)
    manifest = ds.write(mset, out_dir, findings_files=spec.findings, exclude_files=spec.exclude_files)
    rng = random.Random(spec.seed)
    for name, rows, n in (("eval_harmful", mset.heldout_harmful, spec.eval_harmful), ("eval_benign", mset.heldout_benign, spec.eval_benign)):
        sample = rng.sample(rows, min(n, len(rows)))
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in sample:
                fh.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
    return manifest


def create_run(spec: RunSpec, run_id: str | None = None) -> Path:
    """Make the run folder, build the data (bad input fails here, before any training) and
    record the base model's hashes."""
    spec.train.validate()
    if spec.dpo_steps:
        from assay.mitigate.dpo import PAIR_KINDS

        if spec.dpo_pairs not in PAIR_KINDS:
            raise BadInput(f"--dpo-pairs must be one of {', '.join(PAIR_KINDS)}, got {spec.dpo_pairs!r}")
    source = resolve_model(spec.model)
    if spec.evaluate:
        from assay.mitigate.reeval import require_classifiers

        require_classifiers()
    run_id = run_id or f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    run_dir = runs_root() / run_id
    if (run_dir / "run.json").exists():
        raise BadInput(f"mitigation run {run_id!r} already exists", hint=f"assay mitigate resume {run_id}")
    staging = run_dir.with_name(run_dir.name + ".building")
    import shutil

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        manifest = build_data(spec, staging / "data")
        meta = {
            "run_id": run_id,
            "created": time.time(),
            "status": "data",
            "spec": spec.to_dict(),
            "base": {"path": str(source.path), "kind": source.kind, "hashes": source.hashes()},
            "data_stats": manifest["stats"],
        }
        if spec.register:  # a base model that does not match its registration stops the run here
            meta["base_id"] = _base_registration(source, spec)
        _write_json(staging / "run.json", meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.rename(run_dir)
    return run_dir


Say = Callable[[str], None]


def execute(run_dir: Path, *, progress: bool = True, say: Say = print) -> dict[str, Any]:
    """Run (or continue) every stage that has not finished; returns the run's summary."""
    from assay.mitigate import export, reeval
    from assay.mitigate import train as trainer
    from assay.mitigate.model import load_model, pick_device

    meta = read_run(run_dir)
    spec = RunSpec.from_dict(meta["spec"])
    source = resolve_model(spec.model)
    if source.hashes() != meta["base"]["hashes"]:
        raise BadInput(
            f"base model {source.path} changed since run {meta['run_id']} started (weights hash differs)",
            hint="start a new run",
        )
    device = pick_device(spec.device)
    data_dir = run_dir / "data"
    train_rows = ds.read_examples(data_dir / "train.jsonl")
    eval_h = ds.read_examples(data_dir / "eval_harmful.jsonl")
    eval_b = ds.read_examples(data_dir / "eval_benign.jsonl")
    summary: dict[str, Any] = {"run_id": meta["run_id"], "run_dir": str(run_dir), "device": device}

    base_id = meta.get("base_id")
    if spec.register and base_id is None:
        base_id = _base_registration(source, spec)
        _set_status(run_dir, "base", base_id=base_id)
        say(f"base model {source.display_name} registered as {base_id}")

    model = tokenizer = None
    before_path = run_dir / "before.json"
    if spec.evaluate and not before_path.exists():
        model, tokenizer = load_model(source, device=device)
        say(f"evaluating the base model on {len(eval_h)} held-out harmful and {len(eval_b)} benign prompts")
        before = reeval.evaluate_model(model, tokenizer, eval_h, eval_b, max_new_tokens=spec.max_new_tokens, batch_size=spec.generate_batch, progress=progress, label="before:")
        _write_json(before_path, before)
        _set_status(run_dir, "before")

    merged_dir = run_dir / "merged"
    train_path = run_dir / "train.json"
    if not (merged_dir / "config.json").is_file():
        if not train_path.exists():
            if model is None:
                model, tokenizer = load_model(source, device=device)
            _set_status(run_dir, "training")
            latest = trainer.latest_checkpoint(run_dir / "checkpoints")
            if latest is not None:
                say(f"resuming training from {latest.name}")
            peft_model, result = trainer.train(model, tokenizer, train_rows, spec.train, run_dir, device=device, progress=progress)
            _write_json(
                train_path,
                {
                    "steps": result.steps_done,
                    "resumed_from": result.resumed_from,
                    "first_loss": result.first_loss,
                    "final_loss": result.final_loss,
                    "median_step_s": result.median_step_s,
                    "step_seconds": result.step_seconds,
                    "losses": [r["loss"] for r in trainer.read_log(run_dir) if "loss" in r],
                    "examples": len(train_rows),
                },
            )
            say(f"trained {result.steps_done} steps (resumed from {result.resumed_from}); loss {result.first_loss:.3f} -> {result.final_loss:.3f}")
        else:
            peft_model = None
        dpo_path = run_dir / "dpo.json"
        if spec.dpo_steps > 0 and not dpo_path.exists():
            from assay.mitigate import dpo

            if peft_model is None:  # resumed after the supervised stage finished
                from peft import PeftModel

                base_model, tokenizer = load_model(source, device=device)
                peft_model = PeftModel.from_pretrained(base_model, str(run_dir / "adapter"), is_trainable=True)
            pairs_path = data_dir / "dpo_pairs.jsonl"
            if not pairs_path.exists():
                dpo.write_pairs(dpo.build_pairs(train_rows, spec.findings, kinds=spec.dpo_pairs), pairs_path)
            pairs = dpo.read_pairs(pairs_path)
            _set_status(run_dir, "dpo")
            say(f"DPO on {len(pairs)} preference pairs, {spec.dpo_steps} steps (reference: the supervised model)")
            settings_ = dpo.DPOSettings(
                steps=spec.dpo_steps,
                batch_size=spec.dpo_batch_size,
                learning_rate=spec.dpo_learning_rate,
                beta=spec.dpo_beta,
                max_length=spec.train.max_length,
                checkpoint_every=spec.train.checkpoint_every,
                seed=spec.seed,
            )
            peft_model, dpo_log = dpo.train_dpo(peft_model, tokenizer, pairs, settings_, run_dir / "dpo", device=device, progress=progress)
            peft_model.save_pretrained(run_dir / "adapter-dpo")
            _write_json(dpo_path, dpo_log)
        if peft_model is not None:
            hashes = export.merge_model(peft_model, tokenizer, merged_dir)
        else:
            final_adapter = run_dir / ("adapter-dpo" if spec.dpo_steps > 0 else "adapter")
            hashes = export.export_adapter(source, final_adapter, merged_dir, device=device)
        _set_status(run_dir, "exported", merged_hashes=hashes)
        say(f"merged weights written to {merged_dir}")
    model = tokenizer = None  # free the base model before loading the merged one

    report_path = run_dir / RUNLOG  # the evaluation's record: assay.runlog, kind "mitigation"
    if spec.evaluate and not report_path.exists():
        merged, merged_tok = load_model(resolve_model(str(merged_dir)), device=device)
        say("evaluating the fine-tuned model on the same held-out prompts")
        after = reeval.evaluate_model(merged, merged_tok, eval_h, eval_b, max_new_tokens=spec.max_new_tokens, batch_size=spec.generate_batch, progress=progress, label="after:")
        _write_json(run_dir / "after.json", after)
        before = json.loads(before_path.read_text())
        metrics = reeval.comparison_metrics(before, after)
        evidence = reeval.comparison_evidence(before, after)
        gates = reeval.check_gates(metrics, spec.bundle, evidence=evidence, judges=reeval.metric_judges(before))
        report = {
            "metrics": metrics,
            "evidence": {"intervals": evidence[0], "n": evidence[1]},
            "corrected": {side: {k: doc[k].get("corrected") for k in ("harmful_rate", "benign_helpful")}
                          for side, doc in (("before", before), ("after", after))},
            "before": {k: before[k] for k in ("harmful_rate", "benign_helpful", "benign_answer_match")},
            "after": {k: after[k] for k in ("harmful_rate", "benign_helpful", "benign_answer_match")},
            "judge": after["judge"],
            "judges": {"before": before["judges"], "after": after["judges"]},
            "gates": gates,
        }
        merged_hashes = read_run(run_dir).get("merged_hashes") or {}
        reeval.write_runlog(report_path, meta, report, model_name=f"{resolve_model(spec.model).display_name}-mitigated",
                            model_hashes=merged_hashes, data=_data_identity(run_dir))
        _set_status(run_dir, "evaluated")
    if spec.evaluate and spec.suites:
        suites_path = run_dir / "suites.json"
        done = json.loads(suites_path.read_text()) if suites_path.exists() else {}
        for name in spec.suites:
            for side, weights in (("before", source), ("after", resolve_model(str(merged_dir)))):
                if side in done.get(name, {}):
                    continue
                say(f"suite {name} ({side}) through the evaluation engine, {spec.suite_limit} items")
                done.setdefault(name, {})[side] = run_engine_suite(name, weights, spec.suite_limit, progress)
                _write_json(suites_path, done)
        summary["suites"] = done
    if report_path.exists():
        summary["report"] = reeval.report_from_runlog(read_runlog(report_path))

    registration_path = run_dir / "registration.json"
    if spec.register and not registration_path.exists():
        registration = _register(run_dir, meta, spec, base_id, summary.get("report"))
        _write_json(registration_path, registration)
        say(f"registered {registration['model']} (trained on {registration['dataset']} and {registration['base']})")
    if registration_path.exists():
        summary["registration"] = json.loads(registration_path.read_text())
    if train_path.exists():
        summary["train"] = json.loads(train_path.read_text())
    if (run_dir / "dpo.json").exists():
        summary["dpo"] = json.loads((run_dir / "dpo.json").read_text())
    _set_status(run_dir, "complete")
    summary["status"] = "complete"
    summary["merged_dir"] = str(merged_dir)
    return summary


def run_engine_suite(name: str, weights: Any, limit: int, progress: bool) -> dict[str, Any]:
    """One evaluation-engine suite (safety, injection, bias, over-refusal, ...) on ``weights``
    through the engine's in-process transformers target; returns its metrics, intervals and gates."""
    from assay.evaluate.engine import run_suite
    from assay.evaluate.suite import load_suite
    from assay.mitigate.model import transformers_dir

    suite = load_suite(name).with_overrides(target={"kind": "transformers", "path": str(transformers_dir(weights))}, limit=limit)
    outcome = run_suite(suite, show_progress=progress)
    result = outcome.result
    return {
        "run_id": outcome.run_id,
        "metrics": dict(result.metrics),
        "intervals": {k: list(v) for k, v in result.intervals.items()},
        "n": dict(result.n),
        "gates": dict(result.gate_verdicts),
        "model_hashes": dict(result.model_hashes),
    }


def _base_registration(source: Any, spec: RunSpec) -> str:
    from assay.mitigate.lineage import DEFAULT_BASE_PURPOSES, check_base_registration

    return check_base_registration(source, spec.base_id, sorted({*DEFAULT_BASE_PURPOSES, spec.deploy_purpose}))


def _register(run_dir: Path, meta: dict[str, Any], spec: RunSpec, base_id: str | None, report: dict[str, Any] | None) -> dict[str, Any]:
    from assay.mitigate import lineage
    from assay.mitigate.reeval import DEFAULT_POLICY

    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    base_name = resolve_model(spec.model).display_name
    out = lineage.register_mitigation(
        run_id=meta["run_id"],
        base_id=base_id or _base_registration(resolve_model(spec.model), spec),
        data_dir=run_dir / "data",
        manifest=manifest,
        merged_dir=run_dir / "merged",
        model_name=f"{base_name}-mitigated",
        purposes=spec.data_purposes or None,
        restrictions=spec.data_restrictions or None,
    )
    if report is None:
        out["gate"] = "not submitted: the run was not evaluated (--no-eval)"
        return out
    metrics = report["metrics"]
    intervals = {k: tuple(v) for k, v in report["evidence"]["intervals"].items()}
    n = dict(report["evidence"]["n"])
    submitted = lineage.register_evaluation_and_submit(
        run_id=meta["run_id"],
        model_id=out["model"],
        model_hashes=out["model_files"],
        dataset_name=out["dataset"].split(":", 1)[1].rsplit("@", 1)[0],
        dataset_hash=out["dataset_hash"],
        metrics=metrics,
        intervals=intervals,
        n=n,
        gate_verdicts={v["id"]: v["passed"] for v in report["gates"]["verdicts"]},
        bundle_path=Path(spec.bundle) if spec.bundle else DEFAULT_POLICY,
        surface=spec.deploy_surface,
        purpose=spec.deploy_purpose,
        environment=spec.deploy_environment,
        report_path=str(run_dir / RUNLOG),
    )
    verdict = submitted["verdict"]
    out.update(
        evaluation=submitted["evaluation"],
        deployment=submitted["deployment"],
        gate={"allowed": verdict["allowed"], "summary": verdict["summary"], "deciding": verdict["deciding"], "verdict": verdict["id"]},
    )
    return out


def list_runs() -> list[dict[str, Any]]:
    root = runs_root()
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if (path / "run.json").is_file():
            meta = read_run(path)
            out.append({"run_id": meta["run_id"], "status": meta["status"], "created": meta["created"]})
    return out
