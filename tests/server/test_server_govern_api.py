"""The control plane over HTTP: tokens, roles, audit, bad input, the governance flow."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import sqlalchemy as sa

from assay.server.auth import revoke_token
from assay.store.schema import ApiToken, Asset, AuditEntry

BUNDLE = Path(__file__).resolve().parents[2] / "src" / "assay" / "govern" / "default_bundle.yaml"


def _audit_count(api, outcome: str = "ok") -> int:
    """Audit rows of work that was done (``ok``), or with ``refused``, of attempts turned away."""
    with api.store.session() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.outcome.startswith(outcome)))


def test_health_metrics_and_openapi_need_no_token(api):
    assert api.get("/healthz").json()["status"] == "ok"
    api.get("/api/v1/assets")
    metrics = api.get("/metrics")
    assert metrics.status_code == 200 and "assay_http_requests_total" in metrics.text
    assert 'route="/api/v1/assets"' in metrics.text
    # the trace's serving metrics are exposed on the same endpoint
    for name in ("assay_decisions_total", "assay_trace_queue_depth", "assay_trace_write_seconds"):
        assert name in metrics.text
    spec = api.get("/openapi.json").json()
    assert "/api/v1/lineage" in spec["paths"] and "/api/v1/deployments/{deployment_id}/check" in spec["paths"]


def test_tokens_roles_and_reasons(api, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    body = {"name": "d", "uri": str(data), "purposes": ["research"]}
    r = api.post("/api/v1/datasets", json=body)
    assert r.status_code == 401 and "missing API token" in r.json()["error"]
    r = api.post("/api/v1/datasets", json=body, headers={"Authorization": "Bearer assay_wrong"})
    assert r.status_code == 401 and "invalid" in r.json()["error"]
    r = api.post("/api/v1/datasets", json=body, headers=api.headers_for("vera"))
    assert r.status_code == 403 and "vera has role 'viewer'" in r.json()["error"]
    assert api.get("/api/v1/audit", headers=api.headers_for("erin")).status_code == 403
    r = api.post("/api/v1/datasets", json=body, headers=api.headers_for("erin"))
    assert r.status_code == 201 and r.json()["id"] == "dataset:d@1"
    with api.store.session() as s:
        token_id = s.scalar(sa.select(ApiToken.id).where(ApiToken.name == "erin"))
        assert s.scalar(sa.select(ApiToken.token_hash).where(ApiToken.name == "erin")) == hashlib.sha256(
            api.tokens["erin"].encode()).hexdigest()  # only the hash is stored
    from assay.govern.registry import Actor

    revoke_token(api.store, Actor("root", "admin"), token_id)
    assert api.post("/api/v1/datasets", json=body, headers=api.headers_for("erin")).status_code == 401
    audit = api.get("/api/v1/audit", headers=api.headers_for("adam")).json()
    entry = next(a for a in audit if a["action"] == "register_dataset")
    assert entry["actor"] == "erin" and entry["role"] == "engineer" and entry["source"].startswith("http:")
    assert entry["target"] == "dataset:d@1" and entry["ts"]


def test_bad_input_gets_a_reason_and_writes_nothing(api, tmp_path):
    eng = api.headers_for("erin")
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    api.post("/api/v1/datasets", json={"name": "d", "uri": str(data), "purposes": ["research"]}, headers=eng)
    before = _audit_count(api)
    r = api.get("/api/v1/assets/dataset:nope@1", headers=eng)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = api.post("/api/v1/runs", json={"job_name": "x", "inputs": ["dataset:d@1"], "outputs": ["dataset:d@1"]}, headers=eng)
    assert r.status_code == 400 and "cycle" in r.json()["error"]
    r = api.post("/api/v1/lineage", content=b"{not json", headers=eng)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = api.post("/api/v1/lineage", json={"eventType": "COMPLETE", "run": {"runId": "x"}}, headers=eng)
    assert r.status_code == 400 and any("runId" in e for e in r.json()["errors"])
    r = api.post("/api/v1/datasets", json={"name": "bad name!", "uri": str(data)}, headers=eng)
    assert r.status_code == 400 and "is not valid: a name is" in r.json()["error"]
    missing = tmp_path / "no" / "such" / "path"
    r = api.post("/api/v1/datasets", json={"name": "x", "uri": str(missing)}, headers=eng)
    assert r.status_code == 400 and str(missing) in r.json()["error"]
    assert _audit_count(api) == before  # nothing was done ...
    assert _audit_count(api, "refused") == 5  # ... and every refused mutation is on record


def test_governance_flow_over_http(api, tmp_path):
    eng, alice, bob = api.headers_for("erin"), api.headers_for("alice"), api.headers_for("bob")
    (tmp_path / "ratings.csv").write_text("u,i,r\n1,2,5\n")
    (tmp_path / "w").mkdir()
    weights = tmp_path / "w" / "ranker.txt"
    weights.write_text("tree 1")
    ds = api.post("/api/v1/datasets", headers=eng, json={
        "name": "ratings", "uri": str(tmp_path / "ratings.csv"), "purposes": ["recommendation"],
        "region": "eu", "retention_days": 365}).json()
    assert ds["restrictions"] == ["region=eu", "retention_days=365"]
    model = api.post("/api/v1/models", headers=eng, json={
        "name": "ranker", "weights": [str(weights)], "trained_on": [ds["id"]], "framework": "lightgbm"}).json()
    sha = model["files"][0]["sha256"]
    r = api.post("/api/v1/evaluations", headers=eng, json={
        "model": model["id"], "run_id": "e1", "suite": "ranking", "target": "ranker", "metrics": {"ndcg@10": 0.2},
        "model_hashes": {"ranker.txt": "f" * 64}})
    assert r.status_code == 400 and "hash mismatch" in r.json()["error"]
    assert api.post("/api/v1/evaluations", headers=eng, json={
        "model": model["id"], "run_id": "e1", "suite": "ranking", "target": "ranker", "metrics": {"ndcg@10": 0.2},
        "intervals": {"ndcg@10": [0.1, 0.3]}, "n": {"ndcg@10": 500},  # the gate weighs n and the interval
        "model_hashes": {"ranker.txt": sha}}).status_code == 201
    dep = api.post("/api/v1/deployments", headers=alice, json={
        "model": model["id"], "surface": "for_you", "purpose": "recommendation",
        "bundle_files": {"bundle.yaml": BUNDLE.read_text()}})
    assert dep.status_code == 201, dep.text
    dep_id = dep.json()["id"]
    r = api.post(f"/api/v1/deployments/{dep_id}/approvals", headers=alice, json={})
    assert r.status_code == 403 and "may not approve" in r.json()["error"]
    assert api.post(f"/api/v1/deployments/{dep_id}/approvals", headers=eng, json={}).status_code == 403
    assert api.post(f"/api/v1/deployments/{dep_id}/approvals", headers=bob, json={"comment": "ok"}).status_code == 201
    verdict = api.post(f"/api/v1/deployments/{dep_id}/check", headers=eng).json()
    assert verdict["allowed"] is False and verdict["deciding"] == ["assay:approvals"]
    assert api.post(f"/api/v1/deployments/{dep_id}/approvals", headers=api.headers_for("adam"), json={}).status_code == 201
    verdict = api.post(f"/api/v1/deployments/{dep_id}/check", headers=eng).json()
    assert verdict["allowed"] is True, verdict["denials"]
    weights.write_text("tree 2")
    verdict = api.post(f"/api/v1/deployments/{dep_id}/check", headers=eng).json()
    assert verdict["allowed"] is False and verdict["deciding"] == ["assay:weights-hash"]
    listed = api.get(f"/api/v1/deployments/{dep_id}/verdicts", headers=api.headers_for("vera")).json()
    assert [v["allowed"] for v in listed] == [False, True, False]
    bom = api.get(f"/api/v1/bom/{model['id']}", headers=api.headers_for("vera")).json()
    assert bom["bomFormat"] == "CycloneDX" and bom["metadata"]["component"]["type"] == "machine-learning-model"
    why = api.get(f"/api/v1/why/{model['id']}", params={"purpose": "ads"}, headers=api.headers_for("vera")).json()
    assert why["purpose"]["blocked_by"][0]["asset"] == ds["id"]
    run_id = api.get(f"/api/v1/lineage/{model['id']}", headers=api.headers_for("vera")).json()["edges"][0]["run"].split("(")[-1][:-1]
    event = api.get(f"/api/v1/runs/{run_id}/openlineage", headers=api.headers_for("vera")).json()
    assert event["outputs"][0]["facets"]["datasetType"]["datasetType"] == "MODEL"
    # the event assay emits is accepted back by its own ingest endpoint
    event["run"]["runId"] = str(uuid.uuid4())
    assert api.post("/api/v1/lineage", json=event, headers=eng).status_code == 201
    with api.store.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Asset).where(Asset.kind == "model")) == 2


def test_reports_page_names_the_judge_of_each_metric(api, tmp_path):
    """The dashboard's reports page shows, next to every judged metric of a registered
    evaluation, the judge that made it and whether it was validated, and the gate outcomes."""
    from assay.govern.registry import Actor, register_dataset, register_evaluation, register_model
    from assay.records import EvaluationResult

    root = Actor("root", "admin", "test")

    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"weights")
    ds = register_dataset(api.store, root, name="prompts", uri=str(data), purposes=["research"])
    model = register_model(api.store, root, name="m", weights=[str(weights)], trained_on=[ds["id"]])
    sha = hashlib.sha256(b"weights").hexdigest()
    register_evaluation(api.store, root, EvaluationResult(
        run_id="r1", suite="safety", target="m", metrics={"refusal_rate": 0.9, "harmful_rate": 0.02},
        intervals={"refusal_rate": (0.85, 0.94), "harmful_rate": (0.01, 0.04)}, n={"refusal_rate": 400, "harmful_rate": 400},
        gate_verdicts={"g": False}, dataset_hashes={}, model_hashes={"w.bin": sha}, gate_outcomes={"g": "inconclusive"},
        judges={"refusal_rate": {"judge": "refusal@sha256:abc", "validated": True},
                "harmful_rate": {"judge": "my-harm@sha256:def", "validated": False}}), model["id"])
    api.post("/ui/login", data={"token": api.tokens["vera"]}, follow_redirects=False)
    page = api.get("/ui/reports")
    assert page.status_code == 200
    text = page.text
    assert "refusal@sha256:abc" in text and "my-harm@sha256:def, NOT VALIDATED" in text and "inconclusive" in text
