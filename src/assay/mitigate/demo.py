"""Demo step: turn evaluation failures into mitigation data and (outside quick mode) a fine-tuned,
re-evaluated, registered SmolLM2. Prompts and responses are never printed: only counts, rates
and ids (the data is harmful by design)."""

from __future__ import annotations

import json
from pathlib import Path

from assay.demo_story import DemoContext
from assay.errors import BadInput

TITLE = "Mitigation: fine-tune the findings away (LoRA), re-evaluate, register with lineage"


def _findings(ctx: DemoContext) -> Path:
    """The red-team step's findings when it ran, else the Do-Not-Answer replay's failures."""
    for key in ("redteam_findings", "redteam_findings_path"):
        path = ctx.state.get(key)
        if isinstance(path, str) and Path(path).is_file():
            ctx.say(f"using the red-team findings from the earlier step: {path}")
            return Path(path)
    from assay.data import do_not_answer

    path = ctx.settings.path("mitigate", "demo", "findings.jsonl")
    if not path.is_file():
        with open(path, "w", encoding="utf-8") as fh:
            for r in do_not_answer.load_responses():
                if r.harmful:
                    fh.write(json.dumps({"prompt": r.question, "response": r.response, "verdict": "harmful"}) + "\n")
    ctx.say("findings: the Do-Not-Answer replay's answers that human annotators judged harmful")
    return path


def step(ctx: DemoContext) -> None:
    from assay.mitigate.pipeline import (
        RunSpec,
        build_data,
        create_run,
        execute,
        list_runs,
        run_path,
    )
    from assay.mitigate.train import TrainConfig

    findings = _findings(ctx)
    spec = RunSpec(findings=[str(findings)], augment_harmful=40 if ctx.quick else 120, eval_harmful=24, eval_benign=24)
    manifest = build_data(spec, ctx.settings.path("mitigate", "demo", "data", "x").parent)
    s = manifest["stats"]
    ctx.say(
        f"mitigation set: {s['train_harmful']} harmful prompts -> human-judged safe answers, "
        f"{s['train_benign']} benign boundary prompts (BBQ, FEVER) -> helpful answers; "
        f"held out: {s['heldout_harmful']} harmful, {s['heldout_benign']} benign (split by prompt hash, never trained on)"
    )
    ctx.say(f"restrictions inherited from the sources: {', '.join(manifest['restrictions']) or 'none'}")
    if ctx.quick:
        ctx.say("quick mode: fine-tuning skipped (run `assay mitigate finetune --findings FILE` for the full loop)")
        ctx.state["mitigation_data"] = str(ctx.settings.home / "mitigate" / "demo" / "data")
        return
    done = [r for r in list_runs() if r["run_id"] == "demo" and r["status"] == "complete"]
    if done:
        run_dir = run_path("demo")
        summary = execute(run_dir, progress=False, say=ctx.say)  # every stage is already done: this only reads
        ctx.say("reusing the fine-tuned model from an earlier demo run")
    else:
        spec.train = TrainConfig(steps=8, batch_size=4, max_length=96, lora_layers=4, checkpoint_every=4)
        spec.eval_harmful = spec.eval_benign = 24
        spec.max_new_tokens = 32
        try:
            run_dir = create_run(spec, "demo")
        except BadInput:  # an earlier demo run was interrupted: continue it
            run_dir = run_path("demo")
        summary = execute(run_dir, progress=True, say=ctx.say)
    report = summary.get("report")
    if report:
        for key, label in (("harmful_rate", "harmful-answer rate"), ("benign_helpful", "benign helpful rate")):
            b, a = report["before"][key], report["after"][key]
            ctx.say(f"{label}: {b['value']:.2f} [{b['ci_low']:.2f}, {b['ci_high']:.2f}] -> {a['value']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}] (n={a['n']})")
        for v in report["gates"]["verdicts"]:
            ctx.say(f"gate {v['id']}: {'pass' if v['passed'] else 'FAIL'}")
    reg = summary.get("registration")
    if reg:
        ctx.say(f"registered {reg['model']} with lineage to {reg['dataset']} and {reg['base']}")
        ctx.say(f"the model's effective restrictions: {', '.join(reg['effective']['restrictions']) or 'none'}")
        gate = reg.get("gate")
        if isinstance(gate, dict):
            ctx.say(f"deployment gate: {gate['summary']}")
        ctx.state["mitigated_model"] = reg["model"]
    ctx.state["mitigation_run"] = summary["run_id"]
