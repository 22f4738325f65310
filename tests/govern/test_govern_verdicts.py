"""Issue #25, one test per report: verdicts that agree with the lineage (versions and withdrawals),
cycles refused on write and survived on read, denial paths that carry their restriction, weights
checked as a deployment loads them, and OpenLineage names and idempotent re-ingestion. SQLite and
the real PostgreSQL."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import sqlalchemy as sa

from assay.govern import openlineage as ol
from assay.govern.bom import export_bom
from assay.govern.gate import approve_deployment, check_deployment, request_deployment
from assay.govern.lineage import overview, show, why
from assay.govern.propagation import LineageCycle
from assay.govern.registry import (
    Actor,
    approve_transformation,
    record_run,
    register_dataset,
    register_model,
    register_transformation,
    run_view,
)
from assay.store.schema import Asset, AuditEntry, Run, RunIO, Verdict

ALICE = Actor("alice", "approver", "test")


def _counts(store) -> dict[str, int]:
    with store.session() as s:
        return {t.__tablename__: s.scalar(sa.select(sa.func.count()).select_from(t)) for t in (Asset, Run, RunIO)}


def _staged(store, engineer, model_id, purpose, bundle_path, surface="feed"):
    dep = request_deployment(store, engineer, model=model_id, surface=surface, purpose=purpose, environment="staging",
                             bundle=bundle_path)
    approve_deployment(store, ALICE, dep["id"])
    return dep["id"]


def _lineage_denials(verdict):
    return [d for d in verdict["denials"] if d["check"] in ("purposes", "lineage")]


# ---------------------------------------------------------------- 1. versions and withdrawals


def test_an_unrelated_model_never_changes_a_verdict(store, engineer, files, bundle_path):
    """The issue's repro: a withdrawn purpose came back once a model was trained on the newer version."""
    a1 = register_dataset(store, engineer, name="a", uri=str(files("a.csv", b"x\n1\n")), purposes=["ads", "research"])
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[a1["id"]])
    a2 = register_dataset(store, engineer, name="a", uri=str(files("a.csv", b"x\n1\n")), purposes=["research"],
                          restrictions=["contains_minors"], withdrawal="ads consent withdrawn; minors found in the data")
    dep = _staged(store, engineer, m["id"], "ads", bundle_path)
    before = check_deployment(store, engineer, dep)
    explained = why(store, m["id"], purpose="ads")["purpose"]
    assert before["allowed"] is False and explained["allowed"] is False
    assert {"assay:purpose-limitation", "minors-data-not-for-ads"} <= set(before["deciding"])

    register_model(store, engineer, name="n", weights=[files("n.bin", b"n")], trained_on=[a2["id"]])
    after = check_deployment(store, engineer, dep)
    assert after["allowed"] is False and after["deciding"] == before["deciding"]
    assert _lineage_denials(after) == _lineage_denials(before)
    assert why(store, m["id"], purpose="ads")["purpose"] == explained
    assert show(store, m["id"])["effective"] == {"purposes": ["research"], "restrictions": ["contains_minors"]}


def test_an_ordinary_new_version_does_not_rewrite_history(store, engineer, files, bundle_path):
    a1 = register_dataset(store, engineer, name="a", uri=str(files("a.csv", b"x\n1\n")), purposes=["ads", "research"])
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[a1["id"]])
    register_dataset(store, engineer, name="a", uri=str(files("a.csv", b"x\n2\n")), purposes=["research"],
                     restrictions=["contains_minors"])
    dep = _staged(store, engineer, m["id"], "ads", bundle_path)
    verdict = check_deployment(store, engineer, dep)
    assert verdict["checks"]["purposes"]["allowed"] is True  # only the gates/approvals may still deny
    assert why(store, m["id"], purpose="ads")["purpose"]["allowed"] is True
    bom = export_bom(store, m["id"])
    props = {p["name"]: p["value"] for c in bom["components"] if c["bom-ref"] == a1["id"] for p in c["properties"]}
    assert props["assay:purposes"] == "ads,research" and "assay:withdrawn_by" not in props


def test_the_bom_follows_a_withdrawal(store, engineer, files):
    a1 = register_dataset(store, engineer, name="a", uri=str(files("a.csv", b"x\n1\n")), purposes=["ads", "research"])
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[a1["id"]])
    w = register_dataset(store, engineer, name="a", uri=str(files("a.csv", b"x\n1\n")), purposes=["research"],
                         withdrawal="ads consent withdrawn")
    bom = export_bom(store, m["id"])
    props = {p["name"]: p["value"] for c in bom["components"] if c["bom-ref"] == a1["id"] for p in c["properties"]}
    assert props["assay:purposes"] == "research" and props["assay:effective_purposes"] == "research"
    assert props["assay:withdrawn_by"] == f"{w['id']}: ads consent withdrawn"
    model_props = {p["name"]: p["value"] for p in bom["metadata"]["component"]["properties"]}
    assert model_props["assay:effective_purposes"] == "research"


# ---------------------------------------------------------------- 2. the lineage stays a DAG


def test_a_reused_run_id_cannot_close_a_cycle(store, engineer, files):
    ds = {n: register_dataset(store, engineer, name=n, uri=str(files(f"{n}.csv", n.encode())), purposes=["research"])["id"]
          for n in ("a", "b", "c", "x")}
    record_run(store, engineer, job_name="r", inputs=[ds["a"]], outputs=[ds["b"]], run_id="R")
    record_run(store, engineer, job_name="s", inputs=[ds["b"]], outputs=[ds["c"]], run_id="S")
    before = _counts(store)
    with pytest.raises(LineageCycle) as e:  # R would now also read c, which is made from R's output b
        record_run(store, engineer, job_name="r", inputs=[ds["c"]], outputs=[ds["x"]], run_id="R")
    assert e.value.cycle == [ds["b"], "run:S", ds["c"], "run:R", ds["b"]]
    assert "dataset:b@1 -> run:S -> dataset:c@1 -> run:R -> dataset:b@1" in e.value.message
    with pytest.raises(LineageCycle):
        record_run(store, engineer, job_name="r", inputs=[], outputs=[ds["a"]], run_id="R")  # R reads a already
    assert _counts(store) == before
    again = record_run(store, engineer, job_name="r", inputs=[ds["a"]], outputs=[ds["b"]], run_id="R")
    assert again["inputs"] == [ds["a"]] and _counts(store) == before  # repeating a run changes nothing


def _event(run_id, inputs, outputs, event_type="COMPLETE", job="etl"):
    return {"eventType": event_type, "eventTime": "2026-11-29T19:00:00Z", "producer": "https://example.com/etl",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": run_id}, "job": {"namespace": "etl", "name": job},
            "inputs": [{"namespace": ns, "name": n} for ns, n in inputs],
            "outputs": [{"namespace": ns, "name": n} for ns, n in outputs]}


def test_openlineage_start_and_complete_cannot_close_a_cycle(store, engineer):
    run_id = str(uuid.uuid4())
    ol.ingest(store, engineer, _event(run_id, [("w", "a")], [("w", "b")], "START"))
    before = _counts(store)
    with pytest.raises(LineageCycle) as e:
        ol.ingest(store, engineer, _event(run_id, [("w", "b")], [("w", "a")]))
    assert e.value.cycle[0] == e.value.cycle[-1] == "dataset:w/b@1" and f"run:{run_id}" in e.value.cycle
    assert _counts(store) == before


def test_a_job_that_reads_and_writes_one_table_is_one_run_and_idempotent(store, engineer):
    run_id = str(uuid.uuid4())
    orders = [("postgres://db:5432", "public.orders")]
    start = ol.ingest(store, engineer, _event(run_id, orders, orders, "START"))
    assert start["inputs"] == ["dataset:postgres://db:5432/public.orders@1"]
    assert start["outputs"] == ["dataset:postgres://db:5432/public.orders@2"]
    counts = _counts(store)
    for event_type in ("RUNNING", "COMPLETE", "COMPLETE"):
        run = ol.ingest(store, engineer, _event(run_id, orders, orders, event_type))
        assert (run["inputs"], run["outputs"]) == (start["inputs"], start["outputs"])
    assert _counts(store) == counts and run["state"] == "COMPLETE"


def _cyclic_store(store, engineer, files):
    """What older code let in: a -> b -> c -> b, and a model trained on c."""
    ds = {n: register_dataset(store, engineer, name=n, uri=str(files(f"{n}.csv", n.encode())), purposes=["research"],
                              restrictions=["research_only"] if n == "a" else [])["id"] for n in "abc"}
    record_run(store, engineer, job_name="ab", inputs=[ds["a"]], outputs=[ds["b"]], run_id="ab")
    record_run(store, engineer, job_name="bc", inputs=[ds["b"]], outputs=[ds["c"]], run_id="bc")
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[ds["c"]])
    with store.session() as s:  # written behind the registry's back, as the old run-id reuse did
        s.add(Run(id="cb", job_name="cb", created_by="old"))
        s.flush()
        s.add(RunIO(run_id="cb", asset_id=ds["c"], direction="input"))
        s.add(RunIO(run_id="cb", asset_id=ds["b"], direction="output"))
    return ds, m


def test_reads_answer_a_store_that_already_has_a_cycle(store, engineer, files, bundle_path):
    ds, m = _cyclic_store(store, engineer, files)
    shown = show(store, m["id"])
    assert shown["cycle"][0] == shown["cycle"][-1] and ds["b"] in shown["cycle"] and ds["c"] in shown["cycle"]
    assert shown["effective"] == {"purposes": ["research"], "restrictions": ["research_only"]}
    explained = why(store, m["id"], purpose="ads", restriction="research_only")
    assert explained["purpose"]["allowed"] is False and explained["restriction"]["carried"] is True
    assert explained["restriction"]["from"][0]["asset"] == ds["a"]
    dep = _staged(store, engineer, m["id"], "research", bundle_path, surface="research")
    verdict = check_deployment(store, engineer, dep)
    assert verdict["allowed"] is False and "assay:lineage-cycle" in verdict["deciding"]
    cycle_denial = next(d for d in verdict["denials"] if d["rule"] == "assay:lineage-cycle")
    assert cycle_denial["cycle"] == shown["cycle"]
    with store.session() as s:
        assert s.get(Verdict, verdict["id"]) is not None  # stored, like every verdict
    assert export_bom(store, m["id"])["metadata"]["component"]["name"] == "m"
    assert next(a for a in overview(store)["assets"] if a["id"] == m["id"])["purposes"] == ["research"]
    with pytest.raises(LineageCycle):  # and no write adds to it
        record_run(store, engineer, job_name="x", inputs=[m["id"]], outputs=[ds["a"]])


def test_reads_answer_odd_stored_terms(store, engineer, files):
    odd = register_dataset(store, engineer, name="odd", uri=str(files("o.csv", b"o")), purposes=["research"])
    with store.session() as s:  # as another writer might have left them
        s.get(Asset, odd["id"]).purposes = [3, "research"]
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[odd["id"]])
    assert show(store, m["id"])["effective"]["purposes"] == ["3", "research"]


# ---------------------------------------------------------------- 3. denial paths carry their restriction


def test_each_denial_path_carries_the_restriction_it_is_about(store, engineer, files, bundle_path):
    """d carries contains_minors and research_only; x lifts the first, y the second, the model
    reads both. Both restrictions reach the model, each only through the step that did not lift it."""
    d = register_dataset(store, engineer, name="d", uri=str(files("d.csv", b"d")), purposes=["ads", "research"],
                         restrictions=["contains_minors", "research_only"])
    lifts = {}
    for name, lifted in (("x", "contains_minors"), ("y", "research_only")):
        t = register_transformation(store, engineer, name=f"lift-{name}", lifts=[lifted])
        approve_transformation(store, ALICE, t["id"])
        derived = register_dataset(store, engineer, name=name, uri=str(files(f"{name}.csv", name.encode())),
                                   purposes=["ads", "research"])
        run = record_run(store, engineer, job_name=f"make-{name}", inputs=[d["id"]], outputs=[derived["id"]],
                         transformation_id=t["id"])
        lifts[run["id"]] = lifted
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=["dataset:x@1", "dataset:y@1"])
    dep = _staged(store, engineer, m["id"], "ads", bundle_path)
    verdict = check_deployment(store, engineer, dep)
    by_rule = {d_["rule"]: d_ for d_ in verdict["denials"] if d_.get("about")}
    assert set(by_rule) == {"minors-data-not-for-ads", "research-only-stays-in-research"}
    assert by_rule["minors-data-not-for-ads"]["about"] == ["contains_minors"]
    assert by_rule["research-only-stays-in-research"]["about"] == ["research_only"]
    for denial in by_rule.values():
        (restriction,) = denial["about"]
        runs = [p.rsplit("(", 1)[-1].rstrip(")") for p in denial["path"] if p.startswith("run:")]
        assert denial["path"][0] == dep and denial["path"][-1] == d["id"]
        assert all(lifts.get(r) != restriction for r in runs), denial
        assert denial["paths"][restriction] == denial["path"]
        source = why(store, m["id"], restriction=restriction)["restriction"]["from"][0]
        assert [dep, *source["path"]] == denial["path"]  # the gate and `why` give the same path


# ---------------------------------------------------------------- 4. weights as a deployment loads them


def _weights_denials(verdict):
    return [d["reason"] for d in verdict["denials"] if d["rule"] == "assay:weights-hash"]


def test_a_repointed_link_is_a_change_of_weights(store, engineer, tmp_path, bundle_path):
    (tmp_path / "v1.bin").write_bytes(b"weights one")
    (tmp_path / "v2.bin").write_bytes(b"weights two")
    (tmp_path / "copy.bin").write_bytes(b"weights one")
    link = tmp_path / "current.bin"
    link.symlink_to(tmp_path / "v1.bin")
    m = register_model(store, engineer, name="m", weights=[link])
    assert m["uri"] == str(tmp_path) and m["files"][0]["path"] == "current.bin"
    assert m["spec"]["weights"]["targets"] == {"current.bin": os.path.realpath(tmp_path / "v1.bin")}
    dep = _staged(store, engineer, m["id"], "research", bundle_path)
    assert _weights_denials(check_deployment(store, engineer, dep)) == []
    link.unlink()
    link.symlink_to(tmp_path / "v2.bin")
    reasons = _weights_denials(check_deployment(store, engineer, dep))
    assert any("now resolves to" in r and "v2.bin" in r for r in reasons) and any("sha256" in r for r in reasons)
    link.unlink()
    link.symlink_to(tmp_path / "copy.bin")  # the same bytes elsewhere: still not what was registered
    reasons = _weights_denials(check_deployment(store, engineer, dep))
    assert len(reasons) == 1 and "a change of target is a change of weights" in reasons[0]
    link.unlink()
    link.symlink_to(tmp_path / "v1.bin")
    assert _weights_denials(check_deployment(store, engineer, dep)) == []


def test_a_folder_is_every_file_under_it(store, engineer, tmp_path, bundle_path):
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.safetensors").write_bytes(b"w" * 100)
    m = register_model(store, engineer, name="m", weights=[folder])
    assert [f["path"] for f in m["files"]] == ["config.json", "sub/weights.safetensors"]
    dep = _staged(store, engineer, m["id"], "research", bundle_path)
    assert _weights_denials(check_deployment(store, engineer, dep)) == []
    (folder / "sub" / "adapter.bin").write_bytes(b"a")
    assert any("not registered: sub/adapter.bin" in r for r in _weights_denials(check_deployment(store, engineer, dep)))
    (folder / "sub" / "adapter.bin").unlink()
    (folder / "config.json").write_text('{"layers": 2}')
    assert any("config.json" in r and "sha256" in r for r in _weights_denials(check_deployment(store, engineer, dep)))


def test_weights_outside_the_model_folder_or_missing_are_bad_input(store, engineer, tmp_path):
    from assay.errors import BadInput

    (tmp_path / "a").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "w.bin").write_bytes(b"w")
    before = _counts(store)
    with pytest.raises(BadInput, match="not under the model folder"):
        register_model(store, engineer, name="m", weights=[tmp_path / "w.bin"], uri=str(tmp_path / "a"))
    with pytest.raises(BadInput, match="has no files"):
        register_model(store, engineer, name="m", weights=[tmp_path / "empty"])
    with pytest.raises(BadInput, match="does not exist"):
        register_model(store, engineer, name="m", weights=[tmp_path / "nope.bin"])
    assert _counts(store) == before


# ---------------------------------------------------------------- 5. OpenLineage names and idempotence

NAMES = [
    ("file", "/data/raw/orders.csv"),
    ("s3://lake", "events/date=2026-11-29/part-0000.parquet"),
    ("abfss://c@acct.dfs.core.windows.net", "tables/orders"),
    ("bigquery", "project.dataset.table"),
    ("kafka://broker:9092", "user events"),
    ("file", "données/été.csv"),
    ("", ""),
    ("x", "a/b@2#frag?q=1"),
    ("file", "/" + "deep/" * 400 + "file.parquet"),  # 2,000+ characters
    ("n", "tab\there\nnewline"),
    ("n", "nul\x00byte"),
    ("n", "lone\ud800surrogate"),
]


@pytest.mark.parametrize(("namespace", "name"), NAMES, ids=range(len(NAMES)))
def test_every_schema_valid_name_is_accepted_and_round_trips(store, engineer, namespace, name):
    run_id = str(uuid.uuid4())
    event = _event(run_id, [(namespace, name)], [(namespace, name + ".out")])
    ol.validate(event)
    first = ol.ingest(store, engineer, event)
    counts = _counts(store)
    assert ol.ingest(store, engineer, event) == first and _counts(store) == counts  # the same event again
    emitted = ol.run_event(store, run_id)
    assert emitted["inputs"][0]["namespace"] == namespace and emitted["inputs"][0]["name"] == name
    assert emitted["outputs"][0]["name"] == name + ".out"
    with store.session() as s:  # a second run reading the output resolves to the same asset
        out_id = first["outputs"][0]
        assert s.get(Asset, out_id) is not None and len(out_id) <= 512
    second = ol.ingest(store, engineer, _event(str(uuid.uuid4()), [(namespace, name + ".out")], [("n", "next")]))
    assert second["inputs"] == [out_id]


def test_a_name_that_collides_with_an_assay_id_gets_its_own(store, engineer, files):
    register_dataset(store, engineer, name="file/x", uri=str(files("x.csv", b"x")), purposes=["research"])
    run = ol.ingest(store, engineer, _event(str(uuid.uuid4()), [], [("file", "x")]))
    assert run["outputs"][0] != "dataset:file/x@1" and run["outputs"][0].startswith("dataset:file/x#")


def test_non_finite_numbers_are_bad_input(store, engineer):
    from assay.errors import BadInput

    event = _event(str(uuid.uuid4()), [], [("n", "x")])
    event["run"]["facets"] = {"x": {"_producer": "https://x", "_schemaURL": "https://x/s.json", "v": float("nan")}}
    with pytest.raises(BadInput, match="NaN"):
        ol.ingest(store, engineer, event)


def test_ingesting_what_assay_emitted_changes_nothing(store, engineer, files, bundle_path):
    kids = register_dataset(store, engineer, name="kids", uri=str(files("k.csv", b"k")), purposes=["research"],
                            restrictions=["contains_minors"])
    t = register_transformation(store, engineer, name="anon", lifts=["contains_minors"])
    approve_transformation(store, ALICE, t["id"])
    m = register_model(store, engineer, name="m", weights=[files("m.bin", b"m")], trained_on=[kids["id"]],
                       transformation=t["id"])
    dep = _staged(store, engineer, m["id"], "research", bundle_path, surface="research")
    verdict = check_deployment(store, engineer, dep)
    with store.session() as s:
        run_ids = s.scalars(sa.select(Run.id)).all()
    events = [ol.run_event(store, r) for r in run_ids] + [ol.verdict_run_event(store, verdict)]
    counts = _counts(store)
    with store.session() as s:
        runs_before = {r: run_view(s, s.get(Run, r)) for r in run_ids}
    for event in events + events:
        out = ol.ingest(store, engineer, json.loads(json.dumps(event)))
        assert out["id"] in run_ids or out.get("unchanged")
    assert _counts(store) == counts
    with store.session() as s:
        assert {r: run_view(s, s.get(Run, r)) for r in run_ids} == runs_before
        ingests = s.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.action == "openlineage_ingest"))
    assert ingests == 2 * (len(events) - 1)  # every post is audited; the verdict's is a no-op


# ---------------------------------------------------------------- over HTTP: the API and the dashboard


def test_the_api_and_the_dashboard_show_the_same_terms(store, engineer, files):
    from fastapi.testclient import TestClient

    from assay.server.app import create_app
    from assay.server.auth import create_token

    _, m = _cyclic_store(store, engineer, files)  # a store older code left with a cycle: still readable
    a1 = register_dataset(store, engineer, name="ads", uri=str(files("ads.csv", b"a")), purposes=["ads", "research"])
    n = register_model(store, engineer, name="n", weights=[files("n.bin", b"n")], trained_on=[a1["id"]])
    token = create_token(store, Actor("root", "admin", "test"), name="erin", role="engineer")["token"]
    client = TestClient(create_app(store))
    auth = {"Authorization": f"Bearer {token}"}
    withdrawal = client.post("/api/v1/datasets", headers=auth, json={
        "name": "ads", "uri": "s3://bucket/ads.csv", "purposes": ["research"], "withdrawal": "ads consent withdrawn",
        "files": [{"path": "ads.csv", "sha256": "0" * 64, "size": 1}]})
    assert withdrawal.status_code == 201, withdrawal.text
    assert client.get(f"/api/v1/lineage/{n['id']}", headers=auth).json()["effective"]["purposes"] == ["research"]
    why_n = client.get(f"/api/v1/why/{n['id']}", headers=auth, params={"purpose": "ads"}).json()
    assert why_n["purpose"]["blocked_by"][0]["withdrawn_by"][0]["withdrawal"] == withdrawal.json()["id"]
    refused = client.post("/api/v1/runs", headers=auth, json={"job_name": "loop", "inputs": [n["id"]], "outputs": [a1["id"]]})
    assert refused.status_code == 400 and "cycle" in refused.json()["error"]

    client.cookies.set("assay_token", token)
    page = client.get("/ui/lineage")
    assert page.status_code == 200 and 'id="lineage-graph"' in page.text
    rows = {a["id"]: a for a in overview(store)["assets"]}
    assert rows[n["id"]]["purposes"] == ["research"] and rows[m["id"]]["restrictions"] == ["research_only"]
    row = page.text.split(f'<td class="mono">{n["id"]}</td>', 1)[1].split("</tr>", 1)[0]
    assert "<td>research</td>" in row  # what the page shows is the computation's answer
    client.close()


def test_odd_openlineage_names_over_http(store, engineer):
    from fastapi.testclient import TestClient

    from assay.server.app import create_app
    from assay.server.auth import create_token

    token = create_token(store, Actor("root", "admin", "test"), name="pipeline", role="engineer")["token"]
    client = TestClient(create_app(store))
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    run_id = str(uuid.uuid4())
    event = _event(run_id, [("file", "/data/raw/orders.csv"), ("n", "nul\x00and\ud800")], [("file", "/data/out/x" * 60)])
    body = json.dumps(event)  # \u0000 and \ud800 travel as JSON escapes
    for _ in range(2):
        r = client.post("/api/v1/lineage", headers=auth, content=body)
        assert r.status_code == 201, r.text
    assert r.json()["inputs"][0] == "dataset:file//data/raw/orders.csv@1"
    bad = client.post("/api/v1/lineage", headers=auth, content=body.replace('"COMPLETE"', '"COMPLETE", "x": NaN'))
    assert bad.status_code == 400
    client.close()
