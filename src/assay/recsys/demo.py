"""Demo step: train (or reuse) the reference recommender, evaluate it offline, export the
metadata-derived safety labels for the guard, register it with lineage, write the audit report."""

from __future__ import annotations

from typing import Any

TITLE = "Reference recommender: train, evaluate, register, audit"


def step(ctx: Any) -> None:
    from assay.errors import AssayError
    from assay.recsys.audit import write_audit
    from assay.recsys.labels import LABELS, safety_labels, write_labels
    from assay.recsys.model import TrainConfig
    from assay.recsys.pipeline import (
        evaluate_saved,
        load_dataset,
        load_served,
        model_folder,
        quick_config,
        train_and_save,
    )

    users = 150 if ctx.quick else None
    rec = None
    if (model_folder() / "model.json").exists():
        try:
            rec = load_served()
            if rec.meta.get("dataset", {}).get("users") != users:
                rec = None
            else:
                ctx.say(f"reusing {rec.version} (every file's sha256 matches its record)")
        except AssayError as e:
            ctx.say(f"not reusing the saved model: {e.message}")
            rec = None
    if rec is None:
        ctx.say(
            "training ALS retrieval + LightGBM LambdaMART ranker on MovieLens ml-latest-small"
            + (f" (first {users} users)" if users else "")
        )
        rec, _split, _folder = train_and_save(
            "ml-latest-small",
            users=users,
            config=quick_config() if ctx.quick else TrainConfig(),
            progress=ctx.say,
        )
        ctx.say(
            f"trained {rec.version} in {rec.meta['train_s']:.1f}s; files hashed: {', '.join(rec.meta['files'])}"
        )
    ev = evaluate_saved(
        rec, k=10, resamples=100 if ctx.quick else 500, max_users=100 if ctx.quick else None
    )
    for system in ("ranker", "retrieval", "popularity"):
        m = ev.metrics[system]["ndcg"]
        ctx.say(f"NDCG@10 {system:<10} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
    ctx.say(
        f"Gini {ev.beyond['gini']['value']:.3f}, APLT {ev.beyond['aplt']['value']:.3f}; active-vs-light NDCG gap {ev.user_groups.get('gap', {}).get('value', float('nan')):.3f}"
    )

    data = load_dataset("ml-latest-small")
    labels = safety_labels(data)
    labels_path = write_labels(labels, ctx.settings.path("labels", "movielens.parquet"))
    ctx.say(
        f"safety labels ({', '.join(LABELS)}) derived from genres and tags for {len(labels)} films -> {labels_path}"
    )
    ctx.say(
        f"{int((labels['mature'] >= 0.7).sum())} films have mature >= 0.7 (metadata heuristic, documented in docs/recsys.md)"
    )

    registry: dict[str, Any] = {}
    try:
        from assay.recsys.governance import register

        registry = register(rec, model_folder(), evaluation=ev)
        ctx.say(
            f"registered {registry['dataset']} -> {registry['model']} -> {registry['evaluation']}"
        )
    except AssayError as e:
        ctx.say(f"registration skipped: {e.message}")
    report = write_audit(rec, ev, ctx.settings.path("reports", "recsys-audit.html"))
    ctx.say(f"audit report -> {report}")
    ctx.state["recsys"] = {
        "model_folder": str(model_folder()), "version": rec.version, "model_files": rec.files(),
        "labels_path": str(labels_path), "label_names": list(LABELS), "registry": registry, "audit_report": str(report),
    }  # fmt: skip
