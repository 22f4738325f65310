"""Demo step: register MovieLens and Davidson with their purposes and restrictions, train a small
model from each, and show the deployment gate's verdicts with the lineage path that decided them.
(Only asset ids, purposes and metrics are shown; no tweet text.)"""

from __future__ import annotations

from pathlib import Path

TITLE = "Governance: purposes and restrictions follow the data into the models"


def step(ctx) -> None:
    from assay.errors import Unavailable
    from assay.govern.gate import approve_deployment, check_deployment, request_deployment
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
    bundle = Path(__file__).with_name("default_bundle.yaml")
    flow = run_flow(store, erin, ctx.settings.data_dir, ctx.settings.home / "govern" / "models", quick=ctx.quick)
    ctx.say(f"registered {flow.movielens['id']} purposes {flow.movielens['purposes']}")
    ctx.say(f"registered {flow.davidson['id']} purposes {flow.davidson['purposes']} "
            f"restrictions {flow.davidson['restrictions']}")
    ctx.say(f"trained {flow.ranker['id']} (LightGBM, held-out nDCG@10 {flow.ranker_metrics['ndcg@10']:.3f}) "
            f"and {flow.classifier['id']} (TF-IDF + logistic regression, macro-F1 {flow.classifier_metrics['macro_f1']:.3f})")

    explained = why(store, flow.classifier["id"], purpose="recommendation")["purpose"]
    blocker = explained["blocked_by"][0]
    ctx.say(f"may {flow.classifier['id']} be used for recommendation? no: {' <- '.join(blocker['path'])} "
            f"(that dataset allows only {blocker['allows']})")

    clf_dep = request_deployment(store, erin, model=flow.classifier["id"], surface="for_you", purpose="recommendation",
                                 bundle=bundle, environment="production")
    verdict = check_deployment(store, erin, clf_dep["id"])
    ctx.say(f"deploy {flow.classifier['id']} to for_you: {'ALLOW' if verdict['allowed'] else 'DENY'} "
            f"by {', '.join(verdict['deciding'])}")

    dep = request_deployment(store, erin, model=flow.ranker["id"], surface="for_you", purpose="recommendation",
                             bundle=bundle, environment="production")
    for approver in ("alice", "bob"):
        approve_deployment(store, Actor(approver, "approver", "demo"), dep["id"], "reviewed the evaluation")
    verdict = check_deployment(store, erin, dep["id"])
    ctx.say(f"deploy {flow.ranker['id']} to for_you with two approvals: {'ALLOW' if verdict['allowed'] else 'DENY'} "
            f"by {', '.join(verdict['deciding'])}; bundle {verdict['bundle_hash'][:12]}…; {verdict['trace']}")
    ctx.state["govern"] = {"ranker": flow.ranker["id"], "classifier": flow.classifier["id"],
                           "deployment": dep["id"], "verdict": verdict["id"], "bundle_hash": verdict["bundle_hash"],
                           "ranker_weights": str(flow.ranker_weights)}
