"""The real flow, end to end through the CLI: MovieLens and Davidson registered, a LightGBM ranker
and a TF-IDF classifier trained from them, deployments checked under the bundle."""

from __future__ import annotations

import json

from assay.cli.main import main
from assay.govern.realflow import run_flow
from assay.govern.registry import Actor
from assay.store import open_store


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_real_flow(assay_home, data_dir, bundle_path, capsys, models_dir):
    store = open_store()
    flow = run_flow(store, Actor("erin", "engineer", "test"), data_dir, models_dir(assay_home / "models"), quick=True)
    assert flow.ranker_metrics["ndcg@10"] > 0.5 and flow.classifier_metrics["macro_f1"] > 0.4
    assert flow.davidson["restrictions"] == ["research_only"]

    tokens = {}
    for name, role in [("erin", "engineer"), ("alice", "approver"), ("bob", "approver")]:
        code, out = _cli(capsys, "token", "create", "--name", name, "--role", role, "--json")
        assert code == 0
        tokens[name] = json.loads(out)["token"]

    # the classifier trained on Davidson, to a recommendation surface: denied, with the path
    code, out = _cli(capsys, "deploy", "request", flow.classifier["id"], "--surface", "for_you", "--purpose",
                     "recommendation", "--bundle", str(bundle_path), "--token", tokens["erin"], "--json")
    assert code == 0
    clf_dep = json.loads(out)["id"]
    code, out = _cli(capsys, "deploy", "check", clf_dep, "--token", tokens["erin"], "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["allowed"] is False
    paths = [d["path"] for d in verdict["denials"] if d["check"] == "purposes"]
    assert any(p[0] == clf_dep and p[-1] == flow.davidson["id"] for p in paths), paths
    assert {"assay:purpose-limitation", "research-only-stays-in-research"} <= set(verdict["deciding"])
    code, out = _cli(capsys, "deploy", "check", clf_dep, "--token", tokens["erin"])
    assert code == 1 and "dataset:davidson-tweets@1" in out and "path:" in out

    # the ranker, with its passing evaluation and two approvals: allowed
    code, out = _cli(capsys, "deploy", "request", flow.ranker["id"], "--surface", "for_you", "--purpose",
                     "recommendation", "--bundle", str(bundle_path), "--token", tokens["erin"], "--json")
    dep = json.loads(out)["id"]
    code, out = _cli(capsys, "deploy", "approve", dep, "--token", tokens["erin"])
    assert code == 1  # an engineer cannot approve
    for approver in ("alice", "bob"):
        assert _cli(capsys, "deploy", "approve", dep, "--token", tokens[approver])[0] == 0
    code, out = _cli(capsys, "deploy", "check", dep, "--token", tokens["erin"], "--json")
    verdict = json.loads(out)
    assert code == 0 and verdict["allowed"] is True, verdict["denials"]
    assert verdict["checks"]["gates"]["passed"] and verdict["checks"]["weights"]["passed"]

    # one byte of the ranker's weights changes: denied at the hash check
    data = bytearray(flow.ranker_weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    flow.ranker_weights.write_bytes(bytes(data))
    code, out = _cli(capsys, "deploy", "check", dep, "--token", tokens["erin"], "--json")
    verdict = json.loads(out)
    assert code == 1 and verdict["deciding"] == ["assay:weights-hash"]
    assert "ranker.txt" in verdict["denials"][0]["reason"]

    code, out = _cli(capsys, "lineage", "why", flow.classifier["id"], "--purpose", "recommendation", "--json")
    assert json.loads(out)["purpose"]["blocked_by"][0]["asset"] == flow.davidson["id"]
    code, out = _cli(capsys, "bom", "export", flow.ranker["id"])
    bom = json.loads(out)
    assert code == 0 and bom["specVersion"] == "1.6"
    metrics = bom["metadata"]["component"]["modelCard"]["quantitativeAnalysis"]["performanceMetrics"]
    assert metrics[0]["type"] == "ndcg@10"
    assert any(c["bom-ref"] == flow.movielens["id"] for c in bom["components"])
