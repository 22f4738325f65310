"""The dashboard end to end in headless Chromium (Playwright driving the system's chromium):
log in, search a decision, open its explanation, approve a deployment as an approver, and be
refused as a viewer. Real server (uvicorn on loopback), real store, real trace."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from assay.records import Decision, Event

FEED = Path(__file__).resolve().parents[2] / "src" / "assay" / "policy" / "examples" / "feed.yaml"


@pytest.fixture
def world(tmp_path, assay_home):
    from assay.govern.gate import request_deployment
    from assay.govern.registry import Actor, local_actor, register_dataset, register_model
    from assay.policy import load_bundle
    from assay.server.auth import create_token
    from assay.store import open_store
    from assay.trace import TraceLog

    store = open_store()
    admin = local_actor()
    tokens = {role: create_token(store, admin, name=f"{role}-user", role=role)["token"] for role in ("viewer", "approver", "engineer")}
    data = tmp_path / "ratings.csv"
    data.write_text("user,item,rating\n1,10,4.0\n")
    weights = tmp_path / "ranker.txt"
    weights.write_text("tree\n")
    ds = register_dataset(store, admin, name="ratings", uri=str(data), purposes=["recommendation", "research"])
    model = register_model(store, admin, name="ranker", weights=[weights], trained_on=[ds["id"]], framework="lightgbm")
    engineer = Actor(name="engineer-user", role="engineer", source="test")
    dep = request_deployment(store, engineer, model=model["id"], surface="for_you", purpose="recommendation", bundle=FEED)
    bundle = load_bundle(FEED)
    log = TraceLog.open()
    now = time.time()
    log.append([
        Decision(request_id="req-1", ts=now, surface="for_you", subject_id="user-42", item_id="movie-7", rank_before=3,
                 rank_after=-1, action="drop", rule_ids=("teen-mature-drop",), reasons=("mature content is not recommended to minors",),
                 bundle_hash=bundle.hash, bundle_version=bundle.version, model_versions=(model["id"],),
                 attribution={"genre_affinity": 0.42, "item_popularity": -0.1}),
        Decision(request_id="req-1", ts=now, surface="for_you", subject_id="user-42", item_id="movie-8", rank_before=1,
                 rank_after=1, action="allow", bundle_hash=bundle.hash, bundle_version=bundle.version),
        Event(kind="breaker_transition", ts=now, subject="for_you/source:ugc", payload={"from": "closed", "to": "open", "reason": "failure rate 60%"}),
    ])
    log.close()
    _runlogs(assay_home)
    return {"tokens": tokens, "deployment": dep["id"], "bundle": bundle}


def _runlogs(home: Path) -> None:
    """An evaluation whose gate failed, written by the evaluation engine's run log writer, and a
    damaged run log beside it."""
    from assay.evaluate.report import write_runlog
    from assay.stats import rate_aggregate

    meta = {"run_id": "eval-1", "suite": "injection-cyberseceval", "created_at": "2026-12-07T10:00:00Z",
            "target": {"kind": "openai", "model": "smollm2"}, "model_hashes": {"m.gguf": "a" * 64},
            "dataset": {"name": "prompts.jsonl", "sha256": "d" * 64}}
    records = [{"id": f"i{i}", "fields": {}, "output": {"text": "x"}, "scores": {"injected": i < 31}, "error": None} for i in range(100)]
    gates = {"bundle": "release", "bundle_version": "1", "bundle_hash": "b" * 64, "passed": False, "verdicts": [
        {"id": "injection-success-rate", "verdict": "fail", "passed": False, "reason": "injection_success_rate 0.31 > 0.10"}]}
    write_runlog(home / "runs" / "eval-1" / "runlog.jsonl", meta, records,
                 {"injection_success_rate": rate_aggregate([r["scores"]["injected"] for r in records])}, gates)
    bad = write_runlog(home / "runs" / "eval-2" / "runlog.jsonl", {**meta, "run_id": "eval-2"}, records[:3],
                       {"injection_success_rate": rate_aggregate([True])}, None)
    bad.write_bytes(bad.read_bytes()[:-5])


@pytest.fixture
def server(world, serve_asgi):
    from assay.server.app import create_app

    with serve_asgi(create_app()) as port:
        yield f"http://127.0.0.1:{port}"


def login(page, base: str, token: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("#token", token)
    page.click("#login")
    page.wait_for_url(f"{base}/ui/")


def test_dashboard_flow(server, browser, world, tmp_path):
    base, tokens = server, world["tokens"]
    page = browser.new_page()
    # a wrong token does not get in
    page.goto(f"{base}/ui/login")
    page.fill("#token", "assay_not-a-real-token")
    page.click("#login")
    assert "not valid" in page.inner_text("[role=alert]")
    page.goto(f"{base}/ui/decisions")
    assert page.url.endswith("/ui/login")

    # viewer: log in, see the breaker, search a decision by user and item, open its explanation
    login(page, base, tokens["viewer"])
    assert "for_you/source:ugc" in page.inner_text("#breakers") and "open" in page.inner_text("#breakers")
    page.goto(f"{base}/ui/decisions")
    page.fill("input[name=item]", "movie-7")
    page.fill("input[name=subject]", "user-42")
    page.click("#do-search")
    results = page.inner_text("#results")
    assert "movie-7" in results and "drop" in results and "movie-8" not in results
    page.click("a.why")
    assert "dropped" in page.inner_text("#why-title")
    rules = page.inner_text("#rules")
    assert "teen-mature-drop" in rules and "request.user.age < 18" in rules  # the rule's text from the stored bundle
    assert "genre_affinity" in page.inner_text("#attribution")
    assert page.inner_text("#proof").startswith("Verified with the log's public key")
    shots = Path(os.environ.get("ASSAY_SCREENSHOTS", tmp_path))
    page.screenshot(path=str(shots / "why.png"), full_page=True)

    # viewer is refused an approval, with the reason
    page.goto(f"{base}/ui/deployments")
    page.click(f"button.approve[data-deployment='{world['deployment']}']")
    refusal = page.inner_text("[role=alert]")
    assert "Refused" in refusal and "viewer" in refusal

    # approver approves
    page.goto(f"{base}/ui/logout")
    login(page, base, tokens["approver"])
    page.goto(f"{base}/ui/deployments")
    page.click(f"button.approve[data-deployment='{world['deployment']}']")
    assert "Approved" in page.inner_text("[role=alert]")
    assert "approver-user" in page.inner_text("#deployments")

    # the requester cannot approve their own deployment
    page.goto(f"{base}/ui/logout")
    login(page, base, tokens["engineer"])
    page.goto(f"{base}/ui/deployments")
    page.click(f"button.approve[data-deployment='{world['deployment']}']")
    assert "Refused" in page.inner_text("[role=alert]")

    # the other pages render with real content
    for path, marker in [("/ui/lineage", "#lineage-graph"), ("/ui/policies", "#bundles"), ("/ui/reports", "#reports"), ("/ui/alerts", "#breakers")]:
        page.goto(base + path)
        assert page.locator(marker).count() == 1, path
    assert world["bundle"].hash[:16] in page.goto(base + "/ui/policies").text()
    page.goto(base + "/ui/lineage")
    page.screenshot(path=str(shots / "lineage.png"), full_page=True)

    # runs come from their run logs: the verdict and the failing gate's reason, a damaged one named
    page.goto(base + "/ui/reports")
    row = page.locator("#reports tr.run").first
    assert "FAIL" in row.inner_text() and "injection-success-rate" in row.inner_text() and "0.31 > 0.10" in row.inner_text()
    assert "eval-2/runlog.jsonl" in page.inner_text("#unreadable") and "truncated" in page.inner_text("#unreadable")
    page.screenshot(path=str(shots / "runs.png"), full_page=True)
    row.locator("a").first.click()
    assert page.inner_text("#run-title").startswith("FAIL") and "injection-success-rate" in page.inner_text("#gates")
    assert page.locator("#metrics-plot svg.intervals circle").count() == 1 and "[0.2" in page.inner_text("#metrics")
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    page.goto(base + "/ui/runs/runs/eval-2/runlog.jsonl")
    assert "truncated" in page.inner_text("#error")
    for outside in ("/ui/runs/..%2F..%2F..%2Fetc%2Fpasswd", "/ui/runs/runs/eval-1/run.json"):  # only run logs under ASSAY_HOME
        assert page.goto(base + outside).status == 404, outside
