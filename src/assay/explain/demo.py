"""Demo step: why films were promoted (TreeSHAP over named signals), why A is above B, why the
guard dropped a film and what would have changed that, the transparency report of the surface,
and explanations sampled into the decision trace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

TITLE = "Explanations: named signals, guard counterfactuals, transparency report"

DEMO_BUNDLE = """\
bundle: explain-demo
version: "1"
attributes:
  rules:
    request.user.age: int
    item.labels.mature: double
    item.labels.violence: double
rules:
  - id: teen-mature-drop
    surface: [for_you]
    when: request.user.age < 18 && item.labels.mature >= 0.7
    action: drop
    reason: mature content is not recommended to minors
  - id: teen-violence-demote
    surface: [for_you]
    when: request.user.age < 18 && item.labels.violence >= 0.5
    action: demote(0.5)
    reason: violent content is shown less to minors
"""


def step(ctx: Any) -> None:
    import pyarrow.parquet as pq
    from rich.markup import escape

    from assay.errors import BadInput, Unavailable
    from assay.explain.guard import explain_guard
    from assay.explain.ranking import explain_request, top_signals, why_above
    from assay.explain.sampling import ExplanationSampler, attach, sample_into_trace
    from assay.explain.transparency import transparency, write_transparency
    from assay.policy import load_bundle
    from assay.records import Decision
    from assay.recsys.pipeline import load_served

    try:
        rec = load_served()
    except BadInput as e:
        raise Unavailable(
            f"no reference recommender to explain: {e.message}",
            hint="run the recsys step first: assay demo --only recsys --only explain",
        ) from e
    user = int(rec.state.user_ids[0])
    att, _cold = explain_request(rec, user)
    ctx.say(f"user {user}: top films and the signals that put them there ({rec.version})")
    for rank, item in enumerate(att.item_ids[:3], start=1):
        signals = ", ".join(
            f"{s['feature']} {s['contribution']:+.2f}" for s in top_signals(att, int(item), 3)
        )
        ctx.say(f"  {rank}. film {int(item)}: {signals}")
    pair = why_above(att, int(att.item_ids[0]), int(att.item_ids[4]))
    lead = pair.differences[0]
    ctx.say(
        f"why film {pair.item_a} is above film {pair.item_b}: score gap {pair.score_a - pair.score_b:+.3f}, led by {lead['feature']} ({lead['difference']:+.3f})"
    )

    bundle_path = ctx.settings.path("explain", "demo-bundle.yaml")
    bundle_path.write_text(DEMO_BUNDLE, encoding="utf-8")
    bundle = load_bundle(bundle_path)
    labels_path = ctx.state.get("recsys", {}).get("labels_path") or str(
        ctx.settings.path("labels", "movielens.parquet")
    )
    if not Path(labels_path).is_file():  # the recsys step did not run in this home: derive them now
        from assay.recsys.labels import safety_labels, write_labels
        from assay.recsys.pipeline import load_dataset

        write_labels(safety_labels(load_dataset("ml-latest-small")), labels_path)
    table = pq.read_table(labels_path, columns=["item_id", "mature", "violence"]).to_pandas()
    item = table.sort_values("mature", ascending=False).iloc[0]
    candidate = {
        "request": {"user": {"age": 15}},
        "item": {"labels": {"mature": float(item["mature"]), "violence": float(item["violence"])}},
    }
    exp = explain_guard(bundle, "for_you", candidate)
    ctx.say(f"guard on film {item['item_id']} for a 15-year-old:")
    for line in exp.text().splitlines():
        ctx.say("  " + escape(line))

    rep = transparency(rec, "for_you", k=10, n_users=30 if ctx.quick else 200)
    path = write_transparency(
        rep, rec, ctx.settings.path("reports", "transparency-for_you.html"), bundle
    )
    main = ", ".join(f"{n} {s * 100:.0f}%" for n, s in rep.main_parameters(3))
    ctx.say(f"transparency report -> {path} (main parameters: {main})")

    sampler = ExplanationSampler(rate=1.0 if ctx.quick else 0.1)
    request_id = f"demo-{user}-{int(time.time())}"
    decisions = [Decision(request_id, time.time(), "for_you", str(user), str(int(i)), r, r, "allow", model_versions=(rec.version,), score_before=float(att.scores[r]))
                 for r, i in enumerate(att.item_ids[:10])]  # fmt: skip
    from assay.trace import TraceLog

    explained = attach(decisions, att, sampler)
    log = TraceLog.open()
    try:
        n = sample_into_trace(log, decisions, att, sampler)
        ctx.say(
            f"{n} of {len(decisions)} decisions appended to the trace with an attribution (sample rate {sampler.rate:g})"
        )
        why = log.why(decisions[0].item_id, decisions[0].subject_id)
        if why and why.get("attribution"):
            top = sorted(why["attribution"].items(), key=lambda kv: -abs(kv[1]))[:3]
            ctx.say("trace why: " + ", ".join(f"{k} {v:+.3f}" for k, v in top))
    finally:
        log.close()
    ctx.state["explain"] = {
        "transparency_report": str(path),
        "bundle": str(bundle_path),
        "sampled_decisions": [d.to_dict() for d in explained],
    }
