"""Registry, lineage and the deployment gate against SQLite and the real PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from assay.errors import BadInput
from assay.govern.gate import approve_deployment, check_deployment, request_deployment, verdicts_for
from assay.govern.lineage import show, why
from assay.govern.propagation import LineageCycle
from assay.govern.registry import (
    Actor,
    Forbidden,
    NotFound,
    approve_transformation,
    record_run,
    register_dataset,
    register_evaluation,
    register_model,
    register_transformation,
    restriction_terms,
)
from assay.records import EvaluationResult
from assay.store.schema import Asset, AuditEntry, Run, RunIO, Verdict

ALICE = Actor("alice", "approver", "test")
BOB = Actor("bob", "approver", "test")


def _counts(store) -> dict[str, int]:
    with store.session() as s:
        return {t.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(t)) for t in (Asset, Run, RunIO, AuditEntry)}


@pytest.fixture
def world(store, engineer, files):
    ml = register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,5\n")),
                          purposes=["recommendation", "research"], licence="MovieLens-terms")
    dv = register_dataset(store, engineer, name="tweets", uri=str(files("tweets.csv", b"id,text\n1,hello\n")),
                          purposes=["safety_classification"], restrictions=["research_only"])
    ranker = register_model(store, engineer, name="ranker", weights=[files("ranker.txt", b"tree 1")],
                            trained_on=[ml["id"]], framework="lightgbm")
    clf = register_model(store, engineer, name="clf", weights=[files("clf.bin", b"coef 1")], trained_on=[dv["id"]],
                         framework="sklearn")
    return {"ml": ml, "dv": dv, "ranker": ranker, "clf": clf}


def test_registration_is_versioned_and_hashed(store, engineer, files, world):
    again = register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,4\n")),
                             purposes=["research"])
    assert world["ml"]["id"] == "dataset:ratings@1" and again["id"] == "dataset:ratings@2"
    assert again["content_hash"] != world["ml"]["content_hash"]
    assert world["ranker"]["files"][0]["sha256"] == __import__("hashlib").sha256(b"tree 1").hexdigest()
    with store.session() as s:
        assert s.get(Asset, "dataset:ratings@1").purposes == ["recommendation", "research"]  # v1 untouched


def test_consent_change_is_computed_not_copied(store, engineer, files, world):
    assert "recommendation" in show(store, world["ranker"]["id"])["effective"]["purposes"]
    register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,5\n")),
                     purposes=["research"])  # an ordinary new version: new data under its own terms
    assert show(store, world["ranker"]["id"])["effective"]["purposes"] == ["recommendation", "research"]
    newer = register_model(store, engineer, name="ranker2", weights=[files("r2.txt", b"tree 2")], trained_on=["dataset:ratings@2"])
    assert show(store, newer["id"])["effective"]["purposes"] == ["research"]
    assert show(store, world["ranker"]["id"])["effective"]["purposes"] == ["recommendation", "research"]  # unchanged by N

    withdrawn = register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,5\n")),
                                 purposes=["research"], withdrawal="users withdrew recommendation consent on 2026-03-01")
    assert withdrawn["spec"]["withdrawal"]["binds"] == ["dataset:ratings@1", "dataset:ratings@2"]
    eff = show(store, world["ranker"]["id"])["effective"]
    assert eff["purposes"] == ["research"]
    explained = why(store, world["ranker"]["id"], purpose="recommendation")["purpose"]
    blocker = explained["blocked_by"][0]
    assert not explained["allowed"] and blocker["asset"] == "dataset:ratings@1" and blocker["allows"] == ["research"]
    assert blocker["withdrawn_by"][0]["withdrawal"] == withdrawn["id"]
    assert blocker["withdrawn_by"][0]["removes_purposes"] == ["recommendation"]
    assert "2026-03-01" in blocker["withdrawn_by"][0]["reason"]
    with store.session() as s:
        assert s.get(Asset, "dataset:ratings@1").purposes == ["recommendation", "research"]  # the record is not rewritten
        audit = s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "withdraw_consent")).all()
    assert [a.target for a in audit] == [withdrawn["id"]]


def test_a_withdrawal_needs_a_reason_and_an_earlier_version(store, engineer, files, world):
    before = _counts(store)
    with pytest.raises(BadInput, match="no earlier version"):
        register_dataset(store, engineer, name="fresh", uri=str(files("f.csv", b"x\n")), purposes=["research"],
                         withdrawal="nothing to withdraw")
    with pytest.raises(BadInput, match="reason"):
        register_dataset(store, engineer, name="ratings", uri=str(files("f.csv", b"x\n")), purposes=["research"],
                         withdrawal="  ")
    assert _counts(store) == before


def test_unknown_ids_are_not_found_and_nothing_is_written(store, engineer, files, world):
    before = _counts(store)
    with pytest.raises(NotFound, match="no dataset 'dataset:nope@1'"):
        record_run(store, engineer, job_name="x", inputs=["dataset:nope@1"], outputs=[world["clf"]["id"]])
    with pytest.raises(NotFound):
        register_model(store, engineer, name="m2", weights=[files("m2.bin", b"w")], trained_on=["dataset:missing"])
    assert _counts(store) == before


def test_cycles_are_refused(store, engineer, files, world):
    derived = register_model(store, engineer, name="derived", weights=[files("d.bin", b"d")], trained_on=[world["ranker"]["id"]])
    before = _counts(store)
    with pytest.raises(LineageCycle) as e:
        record_run(store, engineer, job_name="loop", inputs=[derived["id"]], outputs=[world["ml"]["id"]])
    assert e.value.cycle[0] == world["ml"]["id"] and derived["id"] in e.value.cycle
    with pytest.raises(LineageCycle):
        record_run(store, engineer, job_name="self", inputs=[world["ml"]["id"]], outputs=[world["ml"]["id"]])
    assert _counts(store) == before


def test_evaluation_hash_mismatch_is_refused(store, engineer, world):
    bad = EvaluationResult(run_id="e", suite="s", target="t", metrics={"ndcg@10": 0.3}, intervals={}, n={},
                           gate_verdicts={}, dataset_hashes={}, model_hashes={"ranker.txt": "0" * 64})
    before = _counts(store)
    with pytest.raises(Exception, match="hash mismatch"):
        register_evaluation(store, engineer, bad, world["ranker"]["id"])
    assert _counts(store) == before


def test_an_evaluation_keeps_its_gate_outcomes_and_judges(store, engineer, world):
    """What the judges record beside a result (pass/fail/inconclusive per gate, the judge of each
    judged metric) is accepted, stored and read back; an outcome outside the three is refused."""
    sha = world["ranker"]["files"][0]["sha256"]

    def result(outcome: str) -> EvaluationResult:
        return EvaluationResult(
            run_id=f"e-{outcome}", suite="safety", target="ranker", metrics={"refusal_rate": 0.9},
            intervals={"refusal_rate": (0.8, 0.95)}, n={"refusal_rate": 60}, gate_verdicts={"refusal-floor": True},
            dataset_hashes={}, model_hashes={"ranker.txt": sha}, gate_outcomes={"refusal-floor": outcome},
            judges={"refusal_rate": {"judge": "refusal@sha256:0123456789abcdef", "validated": True}})

    asset = register_evaluation(store, engineer, result("inconclusive"), world["ranker"]["id"])
    with store.session() as s:
        stored = s.get(Asset, asset["id"]).spec["result"]
    assert stored["gate_outcomes"] == {"refusal-floor": "inconclusive"}
    assert stored["judges"]["refusal_rate"]["judge"].startswith("refusal@sha256:")
    before = _counts(store)
    with pytest.raises(BadInput, match="gate_outcomes"):
        register_evaluation(store, engineer, result("maybe"), world["ranker"]["id"])
    assert _counts(store) == before


def test_transformation_lift_needs_approval_and_is_recorded(store, engineer, files):
    kids = register_dataset(store, engineer, name="kids", uri=str(files("kids.csv", b"k\n")), purposes=["recommendation"],
                            restrictions=restriction_terms(contains_minors=True, region="eu"))
    t = register_transformation(store, engineer, name="k-anonymise", lifts=["contains_minors"])
    with pytest.raises(Forbidden, match="not approved"):
        register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[kids["id"]],
                       transformation=t["id"])
    with pytest.raises(Forbidden, match="may not approve"):
        approve_transformation(store, Actor("erin", "approver"), t["id"])  # its author
    with pytest.raises(Forbidden):
        approve_transformation(store, engineer, t["id"])  # role too low
    approve_transformation(store, ALICE, t["id"])
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[kids["id"]],
                       transformation=t["id"])
    assert show(store, m["id"])["effective"]["restrictions"] == ["region=eu"]
    explained = why(store, m["id"], restriction="contains_minors")["restriction"]
    assert explained["carried"] is False
    assert explained["lifted_by"][0]["transformation"] == t["id"] and explained["lifted_by"][0]["recorded_by"] == "erin"


def test_deployment_gate_end_to_end(store, engineer, bundle_path, world, files):
    denied = request_deployment(store, engineer, model=world["clf"]["id"], surface="for_you", purpose="recommendation",
                                bundle=bundle_path)
    approve_deployment(store, ALICE, denied["id"])
    approve_deployment(store, BOB, denied["id"])
    v = check_deployment(store, engineer, denied["id"])
    assert v["allowed"] is False
    assert "assay:purpose-limitation" in v["deciding"] and "research-only-stays-in-research" in v["deciding"]
    lineage_denial = next(d for d in v["denials"] if d["rule"] == "assay:purpose-limitation")
    assert lineage_denial["path"][0] == denied["id"] and lineage_denial["path"][-1] == world["dv"]["id"]

    dep = request_deployment(store, engineer, model=world["ranker"]["id"], surface="for_you", purpose="recommendation",
                             bundle=bundle_path)
    v = check_deployment(store, engineer, dep["id"])  # no evaluation, no approvals
    assert not v["allowed"] and {"ranker-ndcg", "assay:approvals"} <= set(v["deciding"])
    with pytest.raises(Forbidden, match="may not approve"):
        approve_deployment(store, Actor("erin", "admin"), dep["id"])  # the requester, even as admin
    with pytest.raises(Forbidden):
        approve_deployment(store, Actor("viv", "viewer"), dep["id"])
    approve_deployment(store, ALICE, dep["id"])
    with pytest.raises(Exception, match="already approved"):
        approve_deployment(store, ALICE, dep["id"])
    sha = world["ranker"]["files"][0]["sha256"]
    register_evaluation(store, engineer, EvaluationResult(
        run_id="e1", suite="ranking", target="ranker", metrics={"ndcg@10": 0.31}, intervals={"ndcg@10": (0.29, 0.33)},
        n={"ndcg@10": 100}, gate_verdicts={}, dataset_hashes={"ratings": world["ml"]["content_hash"]},
        model_hashes={"ranker.txt": sha}), world["ranker"]["id"])
    v = check_deployment(store, engineer, dep["id"])
    assert not v["allowed"] and v["deciding"] == ["assay:approvals"]  # one approver is not enough in production
    approve_deployment(store, BOB, dep["id"])
    v = check_deployment(store, engineer, dep["id"])
    assert v["allowed"] is True, v["denials"]
    assert v["trace"].startswith("appended to trace")  # the verdict is also a traced Event
    assert v["openlineage"].startswith("emitted to ")  # ... and an OpenLineage RunEvent
    from assay.govern.openlineage import verdict_run_event

    event = verdict_run_event(store, v)
    assert event["run"]["facets"]["assay_verdict"]["allowed"] is True
    assert event["eventType"] == "COMPLETE" and event["outputs"][0]["name"] == f"deployment/{dep['name']}"
    assert {"purpose-in-scope", "ranker-ndcg"} <= set(v["deciding"])

    files("ranker.txt", b"tree 2")  # one byte changed on disk
    v = check_deployment(store, engineer, dep["id"])
    assert not v["allowed"] and v["deciding"] == ["assay:weights-hash"]
    assert "weights changed after registration" in v["denials"][0]["reason"]

    recorded = verdicts_for(store, dep["id"])
    assert [r["allowed"] for r in recorded] == [False, False, True, False]
    with store.session() as s:
        assert {r.bundle_hash for r in s.scalars(sa.select(Verdict))} == {v["bundle_hash"]}
        actions = [a.action for a in s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]
    assert actions.count("deploy_check") == 5 and actions.count("approve_deployment") == 4


def test_changed_bundle_is_refused_at_check(store, engineer, bundle_path, world, tmp_path):
    dep = request_deployment(store, engineer, model=world["ranker"]["id"], surface="for_you", purpose="recommendation",
                             bundle=bundle_path)
    other = tmp_path / "other.yaml"
    other.write_text(bundle_path.read_text().replace("0.05", "0.5"))
    with pytest.raises(Exception, match="request the deployment again"):
        check_deployment(store, engineer, dep["id"], bundle_path=other)


def test_consent_withdrawal_changes_the_next_gate_verdict(store, engineer, bundle_path, world, files):
    dep = request_deployment(store, engineer, model=world["ranker"]["id"], surface="for_you", purpose="research",
                             environment="staging", bundle=bundle_path)
    approve_deployment(store, ALICE, dep["id"])
    sha = world["ranker"]["files"][0]["sha256"]
    register_evaluation(store, engineer, EvaluationResult(
        run_id="e1", suite="ranking", target="ranker", metrics={"ndcg@10": 0.31}, intervals={"ndcg@10": (0.28, 0.34)},
        n={"ndcg@10": 500}, gate_verdicts={}, dataset_hashes={}, model_hashes={"ranker.txt": sha}), world["ranker"]["id"])
    first = check_deployment(store, engineer, dep["id"])
    assert first["allowed"] is True, first["denials"]
    assert check_deployment(store, engineer, dep["id"])["allowed"] is True  # served from the lineage index
    register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,5\n")),
                     purposes=["recommendation"])  # an ordinary new version does not rewrite history
    assert check_deployment(store, engineer, dep["id"])["allowed"] is True
    register_dataset(store, engineer, name="ratings", uri=str(files("ratings.csv", b"u,i,r\n1,2,5\n")),
                     purposes=["recommendation"], withdrawal="research consent withdrawn")
    after = check_deployment(store, engineer, dep["id"])
    assert after["allowed"] is False and after["deciding"][0] == "assay:purpose-limitation"
    assert after["denials"][0]["path"][-1] == world["ml"]["id"]
    assert "dataset:ratings@3 withdrew it (research consent withdrawn)" in after["denials"][0]["reason"]


def test_an_evaluation_without_evidence_is_inconclusive_and_says_what_is_missing(store, engineer, bundle_path, world):
    """A gate on a metric registered without its n and interval is inconclusive: the deployment is
    denied, and the denial names the missing evidence."""
    dep = request_deployment(store, engineer, model=world["ranker"]["id"], surface="for_you", purpose="research",
                             environment="staging", bundle=bundle_path)
    approve_deployment(store, ALICE, dep["id"])
    sha = world["ranker"]["files"][0]["sha256"]
    register_evaluation(store, engineer, EvaluationResult(
        run_id="bare", suite="ranking", target="ranker", metrics={"ndcg@10": 0.31}, intervals={}, n={},
        gate_verdicts={}, dataset_hashes={}, model_hashes={"ranker.txt": sha}), world["ranker"]["id"])
    verdict = check_deployment(store, engineer, dep["id"])
    assert verdict["allowed"] is False
    gate = [d for d in verdict["denials"] if d["check"] == "gates"]
    assert gate and gate[0]["verdict"] == "inconclusive" and "evidence missing" in gate[0]["reason"]
    assert any("eval.n" in m for m in gate[0]["missing"])
