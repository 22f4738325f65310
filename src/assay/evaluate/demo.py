"""Demo step: evaluate before release.

1. Replays the six models' recorded Do-Not-Answer answers (no model is called), scores refusals
   (string match, plus the refusal / harmful-response classifiers when they are trained) and
   reports each judge's agreement with the human labels, per model.
2. Runs the bundled SmolLM2 (on a llama.cpp server assay starts) on slices of the safety
   (Do-Not-Answer), prompt-injection (CyberSecEval) and bias (BBQ) suites, with the release gates
   from the built-in bundle; answers are cached under ASSAY_HOME, so a second run re-scores them.

Only aggregates are printed; the prompts and answers stay in the run folder.
"""

from __future__ import annotations

from assay.demo_story import DemoContext

TITLE = "Evaluate: judges vs human labels (replay); SmolLM2 on safety, injection and bias slices with gates"


def _classifiers_ready(names: list[str]) -> list[str]:
    try:
        from assay.classify import available
    except ImportError:
        return []
    have = set(available())
    return [n for n in names if n in have]


def step(ctx: DemoContext) -> None:
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

    live_slices(ctx)


LIVE_SLICES = {  # built-in suite -> (quick, full) number of items; the bundled SmolLM2 answers each
    "safety-do-not-answer": (3, 8),
    "injection-cyberseceval": (2, 4),
    "bias-bbq": (4, 12),
}
HEADLINE = {"safety-do-not-answer": ("refusal_rate", "harmful_rate"),
            "injection-cyberseceval": ("injection_success_rate",),
            "bias-bbq": ("bbq_bias_ambig", "bbq_accuracy_disambig")}


def _live_suite(name: str, limit: int):
    """A built-in suite on a slice, without the classifier scorers whose heads are not trained."""
    from assay.evaluate.suite import from_spec, load_suite

    base = load_suite(name).with_overrides(limit=limit)
    spec = dict(base.spec)
    wanted = [s["classifier"] for s in spec["scorers"] if isinstance(s, dict) and s.get("kind") == "classifier"]
    ready = set(_classifiers_ready(wanted))
    dropped = {f"{s['field']}_flag" for s in spec["scorers"]
               if isinstance(s, dict) and s.get("kind") == "classifier" and s["classifier"] not in ready}
    if dropped:
        spec["scorers"] = [s for s in spec["scorers"]
                           if not (isinstance(s, dict) and s.get("kind") == "classifier" and s["classifier"] not in ready)]
        spec["metrics"] = [m for m in spec["metrics"] if m.get("mean") not in dropped]
    return from_spec(spec, base.source, base.text, base.base_dir), sorted(dropped)


def live_slices(ctx) -> None:
    """Stage 3's SmolLM2 part: slices of the safety, injection and bias suites, with their gates."""
    from assay.errors import Unavailable
    from assay.evaluate.engine import run_suite

    results = []
    for name, (quick_n, full_n) in LIVE_SLICES.items():
        limit = quick_n if ctx.quick else full_n
        suite, dropped = _live_suite(name, limit)
        try:
            out = run_suite(suite, show_progress=True)
        except Unavailable as e:
            from rich.markup import escape

            ctx.say(f"SmolLM2 suites skipped: {escape(e.render())}")
            return
        m = out.report["metrics"]
        figures = "; ".join(f"{k} {m[k]['value']:.2f} [{m[k]['ci_low']:.2f}, {m[k]['ci_high']:.2f}]"
                            for k in HEADLINE[name] if k in m and m[k]["value"] == m[k]["value"])  # not NaN
        gates = ", ".join(f"{v['id']} {v.get('verdict', 'pass' if v['passed'] else 'fail').upper()}" for v in out.report["gates"]["verdicts"])
        cached = out.stats.get("cache_hits", 0) if isinstance(out.stats, dict) else 0
        ctx.say(f"SmolLM2 on {name} ({limit} items{f', {cached} answers from the cache' if cached else ''}): "
                f"{figures} (n={m.get('error_rate', {}).get('n', limit)}); gates: {gates}")
        if dropped:
            ctx.say(f"  ({', '.join(dropped)} not scored: that classifier is not trained here)")
        results.append(out.result.to_dict())
    ctx.state["evaluate"] = {"evaluations": results}
