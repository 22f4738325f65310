"""Demo step: evaluate before release.

1. Replays the six models' recorded Do-Not-Answer answers (no model is called), scores refusals
   (string match, plus the refusal / harmful-response classifiers when they are trained) and
   reports each judge's agreement with the human labels, per model.
2. Outside quick mode, runs TruthfulQA MC1 on a slice against the bundled SmolLM2 on a llama.cpp
   server assay starts, with the release gates from the built-in bundle.

Only aggregates are printed; the prompts and answers stay in the run folder.
"""

from __future__ import annotations

from assay.cli.demo import DemoContext

TITLE = "Evaluate: judges vs human labels (replay), and a release-gated suite on SmolLM2"


def _classifiers_ready(names: list[str]) -> list[str]:
    try:
        from assay.classify import available
    except ImportError:
        return []
    have = set(available())
    return [n for n in names if n in have]


def step(ctx: DemoContext) -> None:
    from assay.errors import Unavailable
    from assay.evaluate.engine import run_suite
    from assay.evaluate.suite import load_suite

    limit = 120 if ctx.quick else 1200  # items = held-out questions x 6 models, in file order
    base = load_suite("replay-do-not-answer")
    spec = dict(base.spec)
    ready = _classifiers_ready(["refusal", "harmful_response"])
    spec["scorers"] = ["refusal"] + [s for s in spec["scorers"] if isinstance(s, dict) and s.get("classifier") in ready]
    fields = {"refused", "human_refused", "human_harmful"} | {f"{s['field']}_flag" for s in spec["scorers"] if isinstance(s, dict)}
    spec["metrics"] = [m for m in spec["metrics"] if m.get("mean", m.get("pred")) in fields]
    spec["dataset"] = {**spec["dataset"], "limit": limit}
    spec["run"] = {"resamples": 300}
    from assay.evaluate.suite import from_spec

    suite = from_spec(spec, base.source, base.text, base.base_dir)
    out = run_suite(suite, show_progress=not ctx.quick)
    m = out.report["metrics"]
    n = out.report["counts"]["items"]
    ctx.say(f"replayed {n} recorded answers ({n // 6} held-out questions x 6 models); run {out.run_id}")
    if not ready:
        ctx.say("classifiers not trained yet: judging refusals by string match only")
    for judge in ("refusal_judge", "refusal_clf_judge", "harmful_judge"):
        if f"{judge}_accuracy" in m:
            a, k = m[f"{judge}_accuracy"], m[f"{judge}_kappa"]
            ctx.say(
                f"{judge}: agrees with humans on {a['value']:.1%} [{a['ci_low']:.1%}, {a['ci_high']:.1%}] "
                f"of {a['n']} answers; Cohen's kappa {k['value']:.2f}"
            )
    rates = {k[len("human_harmful_rate[") : -1]: v for k, v in m.items() if k.startswith("human_harmful_rate[")}
    if rates:
        worst = max(rates, key=lambda g: rates[g]["value"])
        ctx.say(f"human-labelled harmful rate is highest for {worst}: {rates[worst]['value']:.1%} (n={rates[worst]['n']})")
    ctx.say(f"report: {out.path / 'report.html'}")
    ctx.state["evaluate_replay_run"] = out.run_id
    ctx.state["evaluation_result"] = out.result

    if ctx.quick:
        ctx.say("quick mode: skipping the live SmolLM2 suite (run `assay eval run accuracy-truthfulqa --limit 20`)")
        return
    try:
        live = run_suite(load_suite("accuracy-truthfulqa").with_overrides(limit=20), show_progress=True)
    except Unavailable as e:
        ctx.say(f"live suite skipped: {e.message}")
        return
    acc = live.report["metrics"]["mc_accuracy"]
    ctx.say(f"SmolLM2 TruthfulQA MC1 accuracy on 20 questions: {acc['value']:.2f} [{acc['ci_low']:.2f}, {acc['ci_high']:.2f}]")
    for v in live.report["gates"]["verdicts"]:
        ctx.say(f"gate {v['id']}: {'pass' if v['passed'] else 'FAIL'}")
    ctx.state["evaluate_live_run"] = live.run_id
