"""Demo steps: register MovieLens and Davidson with their purposes and restrictions, train a small
model from each, and show the lineage verdict with the path that decides it (stage 1); later,
deploy through the purpose gate: one deployment denied with its lineage path, one allowed after
the release gates and two approvals (stage 4). (Only asset ids, purposes and metrics are shown;
no tweet text.)"""

from __future__ import annotations

from pathlib import Path

TITLE = "Governance: purposes and restrictions follow the data into the models"
DEPLOY_TITLE = "Deployment: release gates, approvals and the purpose gate over lineage"
BUNDLE = Path(__file__).with_name("default_bundle.yaml")


def step(ctx) -> None:
    from assay.errors import Unavailable
    from assay.govern.lineage import why
    from assay.govern.realflow import run_flow
    from assay.govern.registry import Actor
    from assay.store import open_store

    try:
        import lightgbm  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        raise Unavailable(f"the governance demo trains small models and needs {e.name}", hint="pip install 'assay[ml]'") from e
    store = open_store()
    erin = Actor("erin", "engineer", "demo")
    flow = run_flow(store, erin, ctx.settings.data_dir, ctx.settings.home / "govern" / "models", quick=ctx.quick)
    ctx.say(f"registered {flow.movielens['id']} purposes {flow.movielens['purposes']}")
    ctx.say(f"registered {flow.davidson['id']} purposes {flow.davidson['purposes']} "
            f"restrictions {flow.davidson['restrictions']}")
    ctx.say(f"trained {flow.ranker['id']} (LightGBM, held-out nDCG@10 {flow.ranker_metrics['ndcg@10']:.3f}) "
            f"and {flow.classifier['id']} (TF-IDF + logistic regression, macro-F1 {flow.classifier_metrics['macro_f1']:.3f})")

    explained = why(store, flow.classifier["id"], purpose="recommendation")["purpose"]
    blocker = explained["blocked_by"][0]
    ctx.say(f"lineage verdict: may {flow.classifier['id']} be used for recommendation? no: {' <- '.join(blocker['path'])} "
            f"(that dataset allows only {blocker['allows']})")
    ctx.state["govern"] = {"ranker": flow.ranker["id"], "classifier": flow.classifier["id"],
                           "ranker_weights": str(flow.ranker_weights),
                           "lineage_verdict": {"model": flow.classifier["id"], "purpose": "recommendation",
                                               "allowed": False, "path": list(blocker["path"])}}


def deploy(ctx) -> None:
    from assay.errors import Unavailable
    from assay.govern.gate import approve_deployment, check_deployment, request_deployment
    from assay.govern.registry import Actor
    from assay.store import open_store

    ids = ctx.state.get("govern") or {}
    if not ids.get("ranker"):
        raise Unavailable("no registered models to deploy", hint="run stage 1 first: assay demo --only govern")
    store = open_store()
    erin = Actor("erin", "engineer", "demo")
    clf_dep = request_deployment(store, erin, model=ids["classifier"], surface="for_you", purpose="recommendation",
                                 bundle=BUNDLE, environment="production")
    denied = check_deployment(store, erin, clf_dep["id"])
    ctx.say(f"deploy {ids['classifier']} to for_you: {'ALLOW' if denied['allowed'] else 'DENY'} "
            f"by {', '.join(denied['deciding'])}")
    lineage_denials = [d for d in denied["denials"] if len(d.get("path") or ()) > 2]  # the ones the data decides
    for d in lineage_denials[:2] or denied["denials"][:2]:
        reason = d["reason"] if d["reason"].startswith(d["rule"]) else f"{d['rule']}: {d['reason']}"
        ctx.say(f"  {reason}; lineage path {' <- '.join(d['path'])}")

    dep = request_deployment(store, erin, model=ids["ranker"], surface="for_you", purpose="recommendation",
                             bundle=BUNDLE, environment="production")
    before = check_deployment(store, erin, dep["id"])
    gates = (before["checks"].get("gates") or {}).get("verdicts") or []
    ctx.say("release gates on the ranker's registered evaluation: "
            + (", ".join(f"{g['id']} {'pass' if g['passed'] else 'FAIL'}" for g in gates) or "none apply"))
    ctx.say(f"without approvals: {'ALLOW' if before['allowed'] else 'DENY'} by {', '.join(before['deciding'])}")
    for approver in ("alice", "bob"):
        approve_deployment(store, Actor(approver, "approver", "demo"), dep["id"], "reviewed the evaluation")
    verdict = check_deployment(store, erin, dep["id"])
    ctx.say(f"with approvals from alice and bob: {'ALLOW' if verdict['allowed'] else 'DENY'} "
            f"by {', '.join(verdict['deciding'])}; bundle {verdict['bundle_hash'][:12]}…; {verdict['trace']}")
    ctx.state["govern"] = {**ids, "deployment": dep["id"], "verdict": verdict["id"], "allowed": verdict["allowed"],
                           "bundle_hash": verdict["bundle_hash"], "gates": [{"id": g["id"], "passed": g["passed"]} for g in gates],
                           "denied_deployment": clf_dep["id"], "denied_verdict": denied["id"],
                           "denied_by": list(denied["deciding"])}
