"""Demo step: red-team the filters and the recommender (rates only: no attack text is shown).

Quick mode: filter evasion on a small slice, and the shilling detectors on injected profiles.
Full mode adds the 3% shilling attack with retraining and mitigation on the reference
recommender, and an LLM red-team slice against the bundled SmolLM2."""

from __future__ import annotations

from typing import Any

TITLE = "Red team: filter evasion, shilling attacks and detectors (and LLM attacks in full mode)"


def step(ctx: Any) -> None:
    from assay.data import movielens
    from assay.redteam.filters import run_filters
    from assay.redteam.shilling import AttackConfig, evaluate_detectors, inject, to_matrix

    out = run_filters("profanity-check", kinds=("homoglyph", "zero_width", "leetspeak", "spacing"), limit=10 if ctx.quick else 50)
    for kind, v in out["perturbations"].items():
        ctx.say(f"filter evasion ({kind}): {v['without_normalisation']['classifier']['rate']:.0%} get past the filter "
                f"without normalisation, {v['with_normalisation']['classifier']['rate']:.0%} with it "
                f"(guard: {v['with_normalisation']['guard']['rate']:.0%})")
    data = movielens.load_latest_small()
    inj = inject(data.ratings, AttackConfig(kind="segment", attack_size=0.03), movies=data.movies)
    reports, _ = evaluate_detectors(to_matrix(inj.ratings), inj.fake_users)
    ctx.say(f"segment attack: {inj.fake_users.size} fake profiles (3% of users) pushing {inj.targets.size} films")
    ctx.say("detectors (AUROC / precision / recall): " + ", ".join(
        f"{r.name} {r.auroc:.2f}/{r.precision:.2f}/{r.recall:.2f}" for r in reports))
    if ctx.quick:
        return
    from assay.recsys.model import TrainConfig
    from assay.redteam.recsys import run_shilling

    rep = run_shilling(data, AttackConfig(kind="average", attack_size=0.03),
                       train_config=TrainConfig(factors=32, als_iterations=8, rounds=60, train_candidates=50, candidates=100),
                       max_users=150)
    ctx.say(f"average attack on the reference recommender: prediction shift {rep.attacked.prediction_shift:+.3f} "
            f"(control {rep.attacked.control_shift:+.3f}), after removing {rep.removed['profiles']} flagged profiles "
            f"{rep.mitigated.prediction_shift:+.3f}; HR@10 of targets {rep.attacked.hit_ratio:.3f} -> {rep.mitigated.hit_ratio:.3f}")
    from assay.errors import Unavailable
    from assay.redteam.llm import run_llm

    try:
        run = run_llm(["direct", "injection", "encoding"], limit_per_family=2)
    except Unavailable as e:
        ctx.say(f"LLM red team skipped: {e.render()}")
        return
    ctx.state["redteam_run"] = run.run_id
    for fam, r in run.summary["by_family"].items():
        ctx.say(f"LLM {fam}: attack success {r['asr']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}] over {r['n']}")
