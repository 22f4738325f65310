"""Issue #20, case by case: input and identity nobody designed for. Each case was reproduced on
the control plane before it was hardened; each runs on SQLite and on the real PostgreSQL (the
``api`` fixture), and ends with the registry exactly as it was and still readable."""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from assay.govern.registry import Actor
from assay.server.auth import create_token
from assay.store.schema import Approval, Asset, AssetFile, AuditEntry, PolicyBundleRow

BUNDLE = Path(__file__).resolve().parents[2] / "src" / "assay" / "govern" / "default_bundle.yaml"
ROOT = Actor("root", "admin", "test")
ERROR_KEYS = {"error", "hint"}


def rows(api, table) -> int:
    with api.store.session() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(table))


def snapshot(api) -> tuple[int, ...]:
    """What a refused request must leave exactly as it was (the audit log grows by refusals only)."""
    with api.store.session() as s:
        done = s.scalar(sa.select(sa.func.count()).select_from(AuditEntry).where(AuditEntry.outcome == "ok"))
    return rows(api, Asset), rows(api, AssetFile), rows(api, Approval), rows(api, PolicyBundleRow), done


def refused(r, status: int, *words: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) >= ERROR_KEYS, body
    assert "\n" not in body["error"] and body["error"], body
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body


def everything_reads_back(api, model_id: str | None = None) -> None:
    """Listing, every asset, lineage, BOM, the deployment gate and the dashboard still answer."""
    viewer = api.headers_for("vera")
    listing = api.get("/api/v1/assets", headers=viewer)
    assert listing.status_code == 200, listing.text
    for kind in ("dataset", "model", "evaluation", "deployment"):
        assert api.get("/api/v1/assets", params={"kind": kind}, headers=viewer).status_code == 200
    for asset in listing.json():
        assert api.get(f"/api/v1/assets/{asset['id']}", headers=viewer).status_code == 200
        assert api.get(f"/api/v1/lineage/{asset['id']}", headers=viewer).status_code == 200
    if model_id:
        assert api.get(f"/api/v1/bom/{model_id}", headers=viewer).status_code == 200
    api.cookies.set("assay_token", api.tokens["vera"])
    for page in ("/ui/lineage", "/ui/reports", "/ui/deployments", "/ui/policies"):
        assert api.get(page).status_code == 200, page
    api.cookies.clear()


@pytest.fixture
def world(api, tmp_path):
    """A dataset, a model trained on it and a requested deployment, registered over HTTP."""
    eng = api.headers_for("erin")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ratings.csv").write_text("u,i,r\n1,2,5\n")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "ranker.txt").write_text("tree 1")
    ds = api.post("/api/v1/datasets", headers=eng, json={
        "name": "ratings", "uri": str(tmp_path / "data"), "purposes": ["recommendation"]})
    assert ds.status_code == 201, ds.text
    model = api.post("/api/v1/models", headers=eng, json={
        "name": "ranker", "weights": [str(tmp_path / "w" / "ranker.txt")], "trained_on": [ds.json()["id"]]})
    assert model.status_code == 201, model.text
    dep = api.post("/api/v1/deployments", headers=eng, json={
        "model": model.json()["id"], "surface": "for_you", "purpose": "recommendation",
        "bundle_files": {"bundle.yaml": BUNDLE.read_text()}})
    assert dep.status_code == 201, dep.text
    return {"dataset": ds.json(), "model": model.json(), "deployment": dep.json(), "dir": tmp_path}


# ---------------------------------------------------------------- 1. validate at the boundary


def _nested(depth: int) -> dict:
    doc: dict = {}
    cur = doc
    for _ in range(depth - 1):
        cur["a"] = {}
        cur = cur["a"]
    return doc


def test_a_deep_schema_is_refused_and_the_registry_keeps_listing(api, world):
    before = snapshot(api)
    body = {"name": "deep", "uri": str(world["dir"] / "data"), "schema": _nested(300)}
    refused(api.post("/api/v1/datasets", headers=api.headers_for("erin"), json=body), 400, "schema", "deeper than 32")
    assert snapshot(api) == before
    # as deep as the store allows is stored, listed, shown and rendered
    body["schema"] = _nested(32)
    ok = api.post("/api/v1/datasets", headers=api.headers_for("erin"), json=body)
    assert ok.status_code == 201, ok.text
    assert api.get(f"/api/v1/assets/{ok.json()['id']}", headers=api.headers_for("vera")).json()["spec"]["schema"] == _nested(32)
    everything_reads_back(api, world["model"]["id"])


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_a_non_finite_metric_is_refused_alike_on_both_stores(api, world, value):
    sha = world["model"]["files"][0]["sha256"]
    raw = json.dumps({"model": world["model"]["id"], "run_id": "e1", "suite": "s", "target": "t", "metrics": {"acc": 0},
                      "model_hashes": {"ranker.txt": sha}}).replace('"acc": 0', f'"acc": {value}')
    before = snapshot(api)
    r = api.post("/api/v1/evaluations", content=raw.encode(), headers={**api.headers_for("erin"), "content-type": "application/json"})
    refused(r, 400, "metrics.acc")
    assert snapshot(api) == before
    check = api.post(f"/api/v1/deployments/{world['deployment']['id']}/check", headers=api.headers_for("erin"))
    assert check.status_code == 200, check.text
    everything_reads_back(api, world["model"]["id"])


def test_a_nan_metric_from_the_command_line_exits_2_and_stores_nothing(world, tmp_path, capsys, api, monkeypatch):
    from assay.cli.main import main

    monkeypatch.setenv("ASSAY_DB_URL", api.store.url)  # the command line on the same store
    sha = world["model"]["files"][0]["sha256"]
    result = tmp_path / "result.json"
    text = json.dumps({"run_id": "e1", "suite": "s", "target": "t", "metrics": {"acc": float("nan")}, "intervals": {},
                       "n": {}, "gate_verdicts": {}, "dataset_hashes": {}, "model_hashes": {"ranker.txt": sha}})
    result.write_text(text)
    before = snapshot(api)
    assert main(["register", "evaluation", str(result), "--model", world["model"]["id"]]) == 2
    # refused where JSON is read (RFC 8259 has no NaN), pointing at the NaN itself
    assert f"result.json:1:{text.index('NaN') + 1}: evaluation result: not JSON: NaN is not a JSON number" in capsys.readouterr().err
    assert snapshot(api) == before


STRING_FIELDS = [
    ("/api/v1/datasets", {"name": "d2", "uri": "{data}", "owner": "x"}, ["name", "uri", "owner", "licence", "consent_scope"]),
    ("/api/v1/transformations", {"name": "t", "lifts": ["pii"], "description": "d"}, ["name", "description"]),
    ("/api/v1/runs", {"job_name": "j", "inputs": ["{dataset}"], "outputs": ["{model}"]}, ["job_name"]),
    ("/api/v1/deployments/{deployment}/approvals", {"comment": "c"}, ["comment"]),
    ("/api/v1/tokens", {"name": "n", "role": "viewer"}, ["name"]),
]


@pytest.mark.parametrize("bad", ["\ud800", "a\x00b"], ids=["lone-surrogate", "nul"])
def test_no_string_field_takes_a_lone_surrogate_or_nul(api, world, bad):
    """Sent as JSON escapes (``\\ud800``, ``\\u0000``): every field answers 400 naming itself."""
    fill = {"data": str(world["dir"] / "data"), "dataset": world["dataset"]["id"], "model": world["model"]["id"],
            "deployment": world["deployment"]["id"]}
    before = snapshot(api)
    for path, body, fields in STRING_FIELDS:
        who = "adam" if "tokens" in path or "approvals" in path else "erin"
        for field in fields:
            doc = {k: (v.format(**fill) if isinstance(v, str) else [x.format(**fill) for x in v]) for k, v in body.items()}
            doc[field] = "x" + bad
            raw = json.dumps(doc)  # ensure_ascii: the surrogate travels as the escape \ud800
            r = api.post(path.format(**fill), content=raw.encode(), headers={**api.headers_for(who), "content-type": "application/json"})
            refused(r, 400, field)
        # a surrogate or NUL inside a list or a JSON document, too
    as_json = {**api.headers_for("erin"), "content-type": "application/json"}
    r = api.post("/api/v1/datasets", headers=as_json,
                 content=json.dumps({"name": "d3", "uri": fill["data"], "schema": {"k": ["v" + bad]}}).encode())
    refused(r, 400, "schema")
    r = api.post("/api/v1/datasets", headers=as_json,
                 content=json.dumps({"name": "d3", "uri": fill["data"], "purposes": ["p" + bad]}).encode())
    refused(r, 400, "purposes")
    assert snapshot(api) == before
    everything_reads_back(api, world["model"]["id"])


def test_deep_lineage_bodies_and_odd_ids_are_4xx(api, world):
    eng = api.headers_for("erin")
    deep = "[" * 100_000 + "]" * 100_000
    refused(api.post("/api/v1/lineage", content=deep.encode(), headers=eng), 400)
    event = {"eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z", "producer": "x",
             "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
             "run": {"runId": "01890000-0000-7000-8000-000000000000", "facets": _nested(200)},
             "job": {"namespace": "n", "name": "j"}}
    refused(api.post("/api/v1/lineage", json=event, headers=eng), 400, "deeper than 32")
    for ref in ("%00", "x" * 600, "%ED%A0%80", "dataset:" + "%F0" * 3):
        r = api.get(f"/api/v1/assets/{ref}", headers=eng)
        assert r.status_code in (400, 404) and set(r.json()) >= ERROR_KEYS, (ref, r.status_code, r.text[:200])
    # an id of another kind is an unknown deployment, not a crash
    refused(api.get(f"/api/v1/deployments/{world['dataset']['id']}", headers=eng), 404, "no deployment")


def _run_event(run_id: str, inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> dict:
    return {"eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z", "producer": "https://example.com/etl",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": run_id}, "job": {"namespace": "etl", "name": "j"},
            "inputs": [{"namespace": ns, "name": n} for ns, n in inputs],
            "outputs": [{"namespace": ns, "name": n} for ns, n in outputs]}


def test_ids_with_a_slash_are_addressable_on_every_route_that_takes_them(api, world):
    """Names may hold '/', so ids may too; the deployment and transformation routes took a
    one-segment id, so a deployment of model 'team/ranker' was created (201) and then could never
    be read, approved or checked (404 'no route'), nor a transformation 'team/k-anon' approved."""
    eng, alice = api.headers_for("erin"), api.headers_for("alice")
    model = api.post("/api/v1/models", headers=eng, json={
        "name": "team/ranker", "weights": [str(world["dir"] / "w" / "ranker.txt")], "trained_on": [world["dataset"]["id"]]})
    assert model.status_code == 201, model.text
    dep = api.post("/api/v1/deployments", headers=eng, json={
        "model": model.json()["id"], "surface": "for_you", "purpose": "recommendation",
        "bundle_hash": world["deployment"]["spec"]["bundle_hash"]})
    assert dep.status_code == 201, dep.text
    dep_id = dep.json()["id"]
    assert "/" in dep_id
    assert api.get(f"/api/v1/deployments/{dep_id}", headers=eng).json()["id"] == dep_id
    assert api.post(f"/api/v1/deployments/{dep_id}/approvals", headers=alice, json={}).status_code == 201
    check = api.post(f"/api/v1/deployments/{dep_id}/check", headers=eng)
    assert check.status_code == 200, check.text
    verdicts = api.get(f"/api/v1/deployments/{dep_id}/verdicts", headers=eng)
    assert verdicts.status_code == 200 and len(verdicts.json()) == 1, verdicts.text
    refused(api.get(f"/api/v1/deployments/{dep_id}x/verdicts", headers=eng), 404)
    tf = api.post("/api/v1/transformations", headers=eng, json={"name": "team/k-anon", "lifts": ["pii"]})
    assert tf.status_code == 201 and "/" in tf.json()["id"], tf.text
    approved = api.post(f"/api/v1/transformations/{tf.json()['id']}/approve", headers=alice, json={})
    assert approved.status_code == 201 and approved.json()["approved"], approved.text


def test_why_on_a_long_chain_answers_every_blocker_with_bounded_paths(api, monkeypatch):
    """Every asset of a chain blocks a purpose none declares, each with a path back to it: the
    answer grew as N² (47 MB for a chain of 1,100 an engineer built in 30 s of OpenLineage
    events). Every blocker is still listed, nearest first; paths stop at the budget."""
    from assay.govern import lineage

    monkeypatch.setattr(lineage, "MAX_PATH_STEPS", 100)
    eng = api.headers_for("erin")
    n = 30
    for i in range(n):
        event = _run_event(f"01890000-0000-7000-8000-{i:012d}", [("chain", f"d{i}")], [("chain", f"d{i + 1}")])
        assert api.post("/api/v1/lineage", json=event, headers=eng).status_code == 201
    last = f"dataset:chain/d{n}@1"
    out = api.get(f"/api/v1/why/{last}", params={"purpose": "research", "restriction": "pii"}, headers=eng).json()
    blocked = out["purpose"]["blocked_by"]
    assert [b["asset"] for b in blocked] == [f"dataset:chain/d{i}@1" for i in range(n, -1, -1)]  # all, nearest first
    with_path = [b for b in blocked if not b.get("path_omitted")]
    # a path names the runs between assets: 1 + 3 + ... + 19 = 100 ids for the nearest ten
    assert sum(len(b["path"]) for b in with_path) <= 100 and len(with_path) == 10
    assert all(b["path"][0] == last and b["path"][-1] == b["asset"] for b in with_path)
    assert all(b["path"] == [] for b in blocked if b.get("path_omitted"))


def test_a_bom_too_large_to_validate_in_time_names_manifest_hashes_instead_of_files(api, world, monkeypatch):
    """A dataset manifest of 3,000 files made GET /api/v1/bom take 15 s (the CycloneDX validator
    compares components pairwise); one request may declare ten times as many. Past the bound the
    BOM still comes back, valid, with each asset's manifest hash and file count in place of its
    files; only a lineage of more assets than the bound is refused."""
    from assay.govern import bom

    monkeypatch.setattr(bom, "MAX_BOM_COMPONENTS", 12)
    eng, viewer = api.headers_for("erin"), api.headers_for("vera")
    files = [{"path": f"part-{i}.parquet", "sha256": f"{i:064x}", "size": 1} for i in range(10)]
    ds = api.post("/api/v1/datasets", headers=eng, json={"name": "parts", "uri": "s3://lake/parts", "files": files,
                                                          "purposes": ["recommendation"]})
    assert ds.status_code == 201, ds.text
    model = api.post("/api/v1/models", headers=eng, json={
        "name": "big", "weights": [str(world["dir"] / "w" / "ranker.txt")], "trained_on": [ds.json()["id"]]})
    assert model.status_code == 201, model.text
    got = api.get(f"/api/v1/bom/{model.json()['id']}", headers=viewer)
    assert got.status_code == 200, got.text
    doc = got.json()
    (dataset,) = [c for c in doc["components"] if c["bom-ref"] == ds.json()["id"]]
    props = {p["name"]: p["value"] for p in dataset["properties"]}
    assert "components" not in dataset and props["assay:files_omitted"] == "10"
    assert props["assay:manifest_sha256"] == ds.json()["content_hash"]
    small = api.get(f"/api/v1/bom/{world['model']['id']}", headers=viewer).json()  # under the bound: files listed
    assert any(c.get("components") for c in [small["metadata"]["component"], *small.get("components", [])])
    assert not any(p["name"] == "assay:files_omitted" for c in small.get("components", []) for p in c["properties"])
    monkeypatch.setattr(bom, "MAX_BOM_COMPONENTS", 1)
    refused(api.get(f"/api/v1/bom/{model.json()['id']}", headers=viewer), 400, "2 assets", "at most 1")


def test_dashboard_file_paths_that_name_no_file_are_404(api, assay_home):
    """A NUL byte in a run-log or report path made resolving it raise: a 500 for any viewer."""
    (assay_home / "reports").mkdir(parents=True, exist_ok=True)
    (assay_home / "reports" / "r.json").write_text("{}")
    api.cookies.set("assay_token", api.tokens["vera"])
    try:
        for path in ("/ui/runs/%00", "/ui/runs/runs/x%00/runlog.jsonl", "/ui/reports/%00", "/ui/reports/reports/r.json%00",
                     "/ui/reports/..%2F..%2Fetc%2Fpasswd", "/ui/runs/" + "a/" * 3000):
            r = api.get(path)
            assert r.status_code == 404, (path[:60], r.status_code, r.text[:200])
        assert api.get("/ui/reports/reports/r.json").status_code == 200
    finally:
        api.cookies.clear()


def test_a_run_with_a_lone_surrogate_in_a_name_reads_back_over_http(api):
    """OpenLineage names are kept exactly, a lone surrogate too; reading the run back was a 500
    (the response could not be encoded as UTF-8). It travels as the JSON escape it came in as."""
    run_id = "01890000-0000-7000-8000-0000000000aa"
    event = _run_event(run_id, [("n", "lone\ud800surrogate"), ("n", "nul\x00byte")], [("n", "out")])
    r = api.post("/api/v1/lineage", content=json.dumps(event).encode(),
                 headers={**api.headers_for("erin"), "content-type": "application/json"})
    assert r.status_code == 201, r.text
    back = api.get(f"/api/v1/runs/{run_id}/openlineage", headers=api.headers_for("vera"))
    assert back.status_code == 200, back.text[:300]
    assert back.headers["content-type"] == "application/json"
    names = {ds["name"] for ds in json.loads(back.content)["inputs"]}
    assert names == {"lone\ud800surrogate", "nul\x00byte"}


def test_an_openlineage_event_with_too_many_datasets_is_refused_before_it_holds_the_store(api):
    """20,000 inputs (under 1 MB) took about 40 s holding the lineage lock, every other write
    answering 503; an event names at most as many datasets as ``POST /api/v1/runs`` takes."""
    from assay.govern.schemas import MAX_LIST

    before = snapshot(api)
    for side in ("inputs", "outputs"):
        many = [("n", f"d{i}") for i in range(MAX_LIST + 1)]
        event = _run_event("01890000-0000-7000-8000-0000000000bb", many if side == "inputs" else [],
                           many if side == "outputs" else [("n", "out")])
        refused(api.post("/api/v1/lineage", json=event, headers=api.headers_for("erin")), 400, side, str(MAX_LIST))
    assert snapshot(api) == before
    event = _run_event("01890000-0000-7000-8000-0000000000cc", [("n", f"d{i}") for i in range(MAX_LIST)], [("n", "out")])
    assert api.post("/api/v1/lineage", json=event, headers=api.headers_for("erin")).status_code == 201


@pytest.mark.parametrize("names,word", [
    ({"a.yaml": "x", "a.yaml/b.yaml": "y"}, "folder"),
    ({"a\x00.yaml": "x"}, "bundle_files"),
    ({"a" * 300 + ".yaml": "x"}, "bundle_files"),
    ({"../up.yaml": "x"}, "bundle_files"),
    ({"/abs.yaml": "x"}, "bundle_files"),
    ({"A.yaml": "rules: []", "a.yaml": "rules: []"}, "case"),
    ({}, "empty"),
])
def test_bundle_file_names_that_cannot_be_written_are_400(api, world, names, word):
    before = snapshot(api)
    r = api.post("/api/v1/deployments", headers=api.headers_for("erin"), json={
        "model": world["model"]["id"], "surface": "s", "purpose": "recommendation", "bundle_files": names})
    refused(r, 400, word)
    assert snapshot(api) == before


def test_an_empty_folder_is_not_registered(api, tmp_path, capsys, monkeypatch):
    from assay.cli.main import main

    monkeypatch.setenv("ASSAY_DB_URL", api.store.url)
    (tmp_path / "empty").mkdir()
    before = snapshot(api)
    refused(api.post("/api/v1/datasets", headers=api.headers_for("erin"),
                     json={"name": "e", "uri": str(tmp_path / "empty")}), 400, "no files")
    assert main(["register", "dataset", "e", "--uri", str(tmp_path / "empty")]) == 2
    assert "no files" in capsys.readouterr().err
    assert main(["register", "dataset", "e", "--uri", "/etc"]) == 2  # ASSAY_DATA_ROOTS is set: it binds the CLI too
    assert "outside the data roots" in capsys.readouterr().err
    assert snapshot(api) == before


# ---------------------------------------------------------------- 2. files stay where they belong


def test_files_outside_the_data_roots_are_refused_naming_the_root(api, world, tmp_path):
    eng = api.headers_for("erin")
    before = snapshot(api)
    for uri in ("/etc", "/etc/passwd", str(tmp_path / ".." / ".." / "etc")):
        refused(api.post("/api/v1/datasets", headers=eng, json={"name": "x", "uri": uri}), 403, "outside the data roots",
                str(tmp_path))
    refused(api.post("/api/v1/models", headers=eng, json={"name": "m", "weights": ["/etc/passwd"]}), 403, "outside")
    refused(api.post("/api/v1/models", headers=eng, json={"name": "m", "uri": "/etc",
                                                          "files": [{"path": "passwd", "sha256": "0" * 64}]}), 403, "outside")
    # a symlink inside a root that points out of it is resolved first
    (tmp_path / "data" / "sneaky.csv").symlink_to("/etc/passwd")
    refused(api.post("/api/v1/datasets", headers=eng, json={"name": "x", "uri": str(tmp_path / "data")}), 403, "outside")
    (tmp_path / "data" / "sneaky.csv").unlink()
    # manifest paths stay inside their folder
    refused(api.post("/api/v1/models", headers=eng, json={
        "name": "m", "uri": str(world["dir"] / "w"), "files": [{"path": "../../../etc/shadow", "sha256": "0" * 64}]}),
        400, "files.0.path")
    assert snapshot(api) == before


def test_the_deploy_check_never_reads_or_hashes_a_file_outside_the_roots(api, world):
    import hashlib

    passwd_sha = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    weights = world["dir"] / "w" / "ranker.txt"
    weights.unlink()
    weights.symlink_to("/etc/passwd")  # swapped after registration
    with api.store.session() as s:  # and a row written before manifest paths were checked
        s.add(AssetFile(asset_id=world["model"]["id"], path="../../../../../../etc/hostname", sha256="1" * 64, size=1))
    r = api.post(f"/api/v1/deployments/{world['deployment']['id']}/check", headers=api.headers_for("erin"))
    assert r.status_code == 200, r.text
    problems = r.json()["checks"]["weights"]["problems"]
    assert r.json()["allowed"] is False and len(problems) == 2, problems
    assert any("outside the data roots" in p for p in problems) and any("not a path inside" in p for p in problems)
    assert passwd_sha not in r.text


def test_a_path_the_file_system_refuses_is_a_400_naming_the_field(api, world):
    """A probe: a name of 200 characters but 400 bytes (over the 255-byte limit of a file name)
    under a data root made stat raise ENAMETOOLONG: a traceback from `assay register dataset`,
    an unexpected error over HTTP. Now a 400 naming the field, nothing stored."""
    eng = api.headers_for("erin")
    long = str(world["dir"] / ("\u00e9" * 200))
    before = snapshot(api)
    refused(api.post("/api/v1/datasets", headers=eng, json={"name": "d2", "uri": long, "purposes": ["recommendation"]}),
            400, "dataset uri", "not a usable path")
    refused(api.post("/api/v1/models", headers=eng, json={"name": "m2", "weights": [long]}), 400, "not a usable path")
    assert snapshot(api) == before


# ---------------------------------------------------------------- 3. bounded parsing


LAUGHS = """rules:
  - {id: r, when: "true", action: drop}
tests:
  - name: t
    rules: {surface: x}
    expect: {action: drop}
    input:
      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
      b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
      c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
      d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
      e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
      f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
      g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
      h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
      i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_billion_laughs_bundle_is_refused_at_its_place(api, world):
    import time

    assert len(LAUGHS) < 1000
    before = snapshot(api)
    started = time.monotonic()
    r = api.post("/api/v1/deployments", headers=api.headers_for("erin"), json={
        "model": world["model"]["id"], "surface": "s", "purpose": "recommendation", "bundle_files": {"bomb.yaml": LAUGHS}})
    body = refused(r, 400, "bomb.yaml:12:", "YAML aliases")
    assert time.monotonic() - started < 10, "the expansion was bounded, not attempted"
    assert body["error"].split("bomb.yaml:")[1].split(":")[1].isdigit()  # file:line:column
    assert snapshot(api) == before


def test_an_empty_bundle_is_refused(api, world):
    for text in ("", "# nothing\n", "bundle: x\n", "tests: []\n"):
        r = api.post("/api/v1/deployments", headers=api.headers_for("erin"), json={
            "model": world["model"]["id"], "surface": "s", "purpose": "recommendation", "bundle_files": {"b.yaml": text}})
        refused(r, 400, "b.yaml:1:1", "empty")


@functools.lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """Half a megabyte that inflates to 512 MiB (the issue's case)."""
    return gzip.compress(b"{" + b" " * (512 << 20) + b"}", 9)


def test_request_bodies_are_bounded_before_authentication(api):
    big = b"{" + b" " * (5 << 20) + b"}"
    refused(api.post("/api/v1/datasets", content=big), 413, "larger than the limit")  # no token at all
    refused(api.post("/api/v1/datasets", content=big, headers=api.headers_for("erin")), 413)
    bomb = gzip_bomb()
    assert len(bomb) < 600_000
    refused(api.post("/api/v1/lineage", content=bomb, headers={**api.headers_for("erin"), "content-encoding": "gzip"}),
            413, "inflates")
    refused(api.post("/api/v1/lineage", content=b"x", headers={**api.headers_for("erin"), "content-encoding": "br"}), 415)
    refused(api.post("/api/v1/lineage", content=b"not gzip", headers={**api.headers_for("erin"), "content-encoding": "gzip"}),
            400, "gzip")
    # a small gzip body still works (the OpenLineage HTTP transport sends them)
    r = api.post("/api/v1/lineage", content=gzip.compress(b"{}"), headers={**api.headers_for("erin"), "content-encoding": "gzip"})
    assert r.status_code == 400 and "eventTime" in json.dumps(r.json()), r.text


# ---------------------------------------------------------------- 4. separation of duties


def test_an_admin_cannot_approve_their_own_deployment_with_minted_tokens(api, world):
    adam = api.headers_for("adam")
    dep = api.post("/api/v1/deployments", headers=adam, json={
        "model": world["model"]["id"], "surface": "home", "purpose": "recommendation",
        "bundle_files": {"bundle.yaml": BUNDLE.read_text()}}).json()["id"]
    minted = [api.post("/api/v1/tokens", headers=adam, json={"name": n, "role": "approver"}).json() for n in ("x1", "x2")]
    assert all(t["delegated_by"] == "adam" for t in minted)
    for t in minted:
        refused(api.post(f"/api/v1/deployments/{dep}/approvals", headers={"Authorization": f"Bearer {t['token']}"}, json={}),
                403, "minted by adam")
    verdict = api.post(f"/api/v1/deployments/{dep}/check", headers=api.headers_for("erin")).json()
    assert "assay:approvals" in verdict["deciding"] and verdict["checks"]["approvals"]["approvers"] == []


def test_tokens_an_admin_mints_for_others_count_as_that_admin(api, world):
    dep = world["deployment"]["id"]
    adam = api.headers_for("adam")
    minted = [api.post("/api/v1/tokens", headers=adam, json={"name": n, "role": "approver"}).json()["token"] for n in ("y1", "y2")]
    ok = api.post(f"/api/v1/deployments/{dep}/approvals", headers={"Authorization": f"Bearer {minted[0]}"}, json={})
    assert ok.status_code == 201 and ok.json()["approvals"] == ["adam"], ok.text
    refused(api.post(f"/api/v1/deployments/{dep}/approvals", headers={"Authorization": f"Bearer {minted[1]}"}, json={}),
            409, "adam (who minted y2's token) has already approved")
    refused(api.post(f"/api/v1/deployments/{dep}/approvals", headers=adam, json={}), 409, "already approved")
    # two people with their own tokens (minted by the operator on the server) are two approvals
    assert api.post(f"/api/v1/deployments/{dep}/approvals", headers=api.headers_for("alice"), json={}).status_code == 201
    verdict = api.post(f"/api/v1/deployments/{dep}/check", headers=api.headers_for("erin")).json()
    assert verdict["checks"]["approvals"]["approvers"] == ["adam", "alice"]
    assert "assay:approvals" not in verdict["deciding"]
    with api.store.session() as s:
        assert sorted(s.scalars(sa.select(Approval.accountable).where(Approval.subject_id == dep))) == ["adam", "alice"]


@pytest.mark.parametrize("name", ["anonymous", "Anonymous", "ANONYMOUS"])
def test_no_principal_may_be_named_as_the_audit_log_names_nobody(api, name, capsys, monkeypatch):
    """A probe: an admin could mint a token for 'anonymous', whose acts then read in the audit
    log like the refusals of requests without a token. Over HTTP a 400 naming the field, from
    the command line exit 2; no principal, no token either way."""
    from assay.cli.main import main
    from assay.store.schema import ApiToken, Principal

    before = rows(api, Principal), rows(api, ApiToken)
    refused(api.post("/api/v1/tokens", headers=api.headers_for("adam"), json={"name": name, "role": "viewer"}),
            400, "name", "reserved")
    monkeypatch.setenv("ASSAY_DB_URL", api.store.url)
    assert main(["token", "create", "--name", name, "--role", "viewer"]) == 2
    assert "reserved" in capsys.readouterr().err
    assert (rows(api, Principal), rows(api, ApiToken)) == before
    assert api.post("/api/v1/tokens", headers=api.headers_for("adam"), json={"name": "anonymous-bot", "role": "viewer"}).status_code == 201


def test_a_service_principal_never_approves_and_tokens_expire(api, world):
    svc = create_token(api.store, ROOT, name="ci-bot", role="approver", kind="service")["token"]
    refused(api.post(f"/api/v1/deployments/{world['deployment']['id']}/approvals",
                     headers={"Authorization": f"Bearer {svc}"}, json={}), 403, "service")
    short = create_token(api.store, ROOT, name="temp", role="viewer", expires_in_days=1)
    hdr = {"Authorization": f"Bearer {short['token']}"}
    assert api.get("/api/v1/whoami", headers=hdr).json()["name"] == "temp"
    from datetime import UTC, datetime, timedelta

    from assay.store.schema import ApiToken

    with api.store.session() as s:
        s.get(ApiToken, short["id"]).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    r = api.get("/api/v1/whoami", headers=hdr)
    refused(r, 401, "expired")
    assert r.headers["www-authenticate"] == "Bearer"
    refused(api.post("/api/v1/tokens", headers=api.headers_for("adam"), json={"name": "n", "role": "viewer",
                                                                           "expires_in_days": 10_000}), 400, "expires_in_days")
    listed = api.get("/api/v1/tokens", headers=api.headers_for("adam")).json()
    assert {t["name"] for t in listed} >= {"ci-bot", "temp", "vera"} and all("token" not in t for t in listed)
    assert all(t["expires_at"] for t in listed)


# ---------------------------------------------------------------- 5. audit


def test_every_refused_mutation_is_audited_with_principal_and_outcome(api, world):
    dep = world["deployment"]["id"]
    api.post(f"/api/v1/deployments/{dep}/approvals", headers=api.headers_for("erin"), json={})  # 403: engineer
    api.post(f"/api/v1/deployments/{dep}/approvals", headers={"Authorization": "Bearer assay_nope"}, json={})  # 401
    api.post("/api/v1/datasets", headers=api.headers_for("erin"), json={"name": "x", "uri": "/etc"})  # 403 outside
    api.post("/api/v1/datasets", content=b"{" + b" " * (5 << 20) + b"}")  # 413
    assert api.post(f"/api/v1/deployments/{dep}/approvals", headers=api.headers_for("bob"), json={}).status_code == 201
    audit = api.get("/api/v1/audit", headers=api.headers_for("adam")).json()
    outcomes = [(a["actor"], a["action"], a["outcome"]) for a in audit[:5]][::-1]
    assert outcomes == [
        ("erin", "POST /api/v1/deployments/{deployment_id}/approvals", "refused 403"),
        ("anonymous", "POST /api/v1/deployments/{deployment_id}/approvals", "refused 401"),
        ("erin", "POST /api/v1/datasets", "refused 403"),
        ("anonymous", "POST /api/v1/datasets", "refused 413"),
        ("bob", "approve_deployment", "ok"),
    ], outcomes
    assert "outside the data roots" in audit[2]["detail"]["error"]
    # the dashboard's refusals too: a failed login, an approval by someone who may not approve
    api.post("/ui/login", data={"token": "assay_guess"}, follow_redirects=False)
    api.cookies.set("assay_token", api.tokens["erin"])
    import hashlib

    csrf = hashlib.sha256(("csrf:" + api.tokens["erin"]).encode()).hexdigest()[:24]
    r = api.post("/ui/deployments/approve", data={"deployment": dep, "csrf": csrf})
    api.cookies.clear()
    assert r.status_code == 403 and "Refused" in r.text
    audit = api.get("/api/v1/audit", headers=api.headers_for("adam")).json()
    assert [(a["actor"], a["action"], a["outcome"], a["source"].split(":")[0]) for a in audit[:2]][::-1] == [
        ("anonymous", "POST /ui/login", "refused 401", "ui"),
        ("erin", "POST /ui/deployments/approve", "refused 403", "ui"),
    ]


def test_the_client_address_is_the_socket_unless_a_trusted_proxy_forwards_it(api):
    from fastapi.testclient import TestClient

    from assay.server.app import client_address, create_app, trusted_proxies

    proxies = trusted_proxies("10.0.0.0/8, 192.168.1.1")
    assert client_address("203.0.113.9", ["6.6.6.6"], proxies) == "203.0.113.9"  # not a proxy: header ignored
    assert client_address("10.1.2.3", ["6.6.6.6, 198.51.100.7"], proxies) == "198.51.100.7"  # nearest untrusted hop
    assert client_address("10.1.2.3", ["198.51.100.7, 10.9.9.9"], proxies) == "198.51.100.7"
    assert client_address("10.1.2.3", ["garbage"], proxies) == "10.1.2.3"
    assert client_address("10.1.2.3", [], proxies) == "10.1.2.3"

    def approve_from(app, peer):
        client = TestClient(app, client=(peer, 4444))
        r = client.post("/api/v1/deployments/nope/approvals", json={}, headers={**api.headers_for("bob"),
                                                                            "X-Forwarded-For": "6.6.6.6"})
        assert r.status_code == 404
        with api.store.session() as s:
            return s.scalar(sa.select(AuditEntry.source).order_by(AuditEntry.id.desc()).limit(1))

    assert approve_from(create_app(api.store, trusted=""), "203.0.113.9") == "http:203.0.113.9"
    assert approve_from(create_app(api.store, trusted="10.0.0.0/8"), "10.0.0.5") == "http:6.6.6.6 via 10.0.0.5"
    assert approve_from(create_app(api.store, trusted="10.0.0.0/8"), "203.0.113.9") == "http:203.0.113.9"


# ---------------------------------------------------------------- 6. one error shape


def test_every_error_has_the_documented_shape(api, world):
    eng = api.headers_for("erin")
    refused(api.get("/api/v1/no-such-route", headers=eng), 404, "no route")
    refused(api.delete("/api/v1/assets", headers=eng), 405, "DELETE")
    refused(api.get("/api/v1/assets"), 401, "missing API token")
    refused(api.get("/api/v1/audit", headers=eng), 403, "erin has role")
    refused(api.get("/api/v1/deployments/deployment:nope@1", headers=eng), 404, "nope")
    refused(api.post("/api/v1/tokens/0123456789abcdef/revoke", headers=api.headers_for("adam")), 404, "no token")
    refused(api.post("/api/v1/datasets", headers=eng, json={"name": "x"}), 400, "uri: Field required")
    refused(api.post("/api/v1/datasets", headers={**eng, "content-type": "application/json"}, content=b"{nope"), 400,
            "not valid JSON")
    refused(api.get("/api/v1/runs/run-nope/openlineage", headers=eng), 404, "no lineage run")
    refused(api.get("/api/v1/audit", params={"limit": 0}, headers=api.headers_for("adam")), 400, "limit")
    spec = api.get("/openapi.json").json()
    codes = {code for item in spec["paths"].values() for op in item.values() for code in op.get("responses", {})}
    assert "422" not in codes and "HTTPValidationError" not in spec.get("components", {}).get("schemas", {})


# ---------------------------------------------------------------- races and shutdown, on a real server


def _approve_concurrently(url: str, dep: str, tokens: list[str]) -> list[int]:
    import threading

    import httpx

    barrier = threading.Barrier(len(tokens))
    answers: list[tuple[int, dict]] = []

    def one(token: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            barrier.wait()
            r = client.post(f"/api/v1/deployments/{dep}/approvals", json={}, headers={"Authorization": f"Bearer {token}"})
            answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=one, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for status, body in answers:
        assert status == 201 or (set(body) >= ERROR_KEYS and "already approved" in body["error"]), (status, body)
    return sorted(status for status, _ in answers)


@pytest.mark.parametrize("store_kind", ["postgres", "sqlite"])
def test_simultaneous_approvals_by_one_person_are_one_201_and_409s(live_server, request, tmp_path, assay_home, store_kind):
    from assay.govern.gate import request_deployment
    from assay.govern.registry import register_dataset, register_model
    from assay.store import open_store

    url = request.getfixturevalue("pg_url") if store_kind == "postgres" else f"sqlite:///{assay_home / 'race.db'}"
    store = open_store(url)
    (tmp_path / "d.csv").write_text("a\n1\n")
    (tmp_path / "m.bin").write_bytes(b"w")
    eng = Actor("erin", "engineer")
    ds = register_dataset(store, eng, name="d", uri=str(tmp_path / "d.csv"), purposes=["recommendation"])
    model = register_model(store, eng, name="m", weights=[tmp_path / "m.bin"], trained_on=[ds["id"]])
    dep = request_deployment(store, eng, model=model["id"], surface="s", purpose="recommendation", bundle=BUNDLE)["id"]
    # eight tokens of one person: approvals are counted per principal, not per token
    tokens = [create_token(store, ROOT, name="carol", role="approver")["token"] for _ in range(8)]
    server = live_server(url)
    assert _approve_concurrently(server.url, dep, tokens) == [201] + [409] * 7
    # and eight different people at once are eight approvals
    people = [create_token(store, ROOT, name=f"p{i}", role="approver")["token"] for i in range(8)]
    assert _approve_concurrently(server.url, dep, people) == [201] * 8
    with store.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Approval).where(Approval.subject_id == dep)) == 9
    store.close()


def test_a_hundred_megabyte_body_is_refused_before_it_is_read(live_server, assay_home):
    import socket
    import time

    server = live_server(f"sqlite:///{assay_home / 'big.db'}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /api/v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 104857600\r\n\r\n")  # no token, and not one byte of the body
        answer = b""
        while chunk := sock.recv(65536):  # the server answers and closes the connection
            answer += chunk
        assert time.monotonic() - started < 5
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"error"' in answer.split("\r\n\r\n", 1)[1]


SLOW_SERVER = """
import sys, time
from assay.server.app import create_app
from assay.server.cli import serve
app = create_app(db_url=sys.argv[2])

@app.get("/busy-loop")
async def busy_loop():  # holds the event loop itself
    while True:
        sum(range(10000))

@app.get("/busy-thread")
def busy_thread():  # holds a worker thread
    time.sleep(3600)

serve(app, host="127.0.0.1", port=int(sys.argv[1]), stop_within=float(sys.argv[3]))
"""


@pytest.mark.parametrize("route", ["/busy-loop", "/busy-thread"])
def test_sigterm_stops_the_server_within_its_deadline_whatever_a_handler_does(spawn_server, tmp_path, assay_home, route):
    import signal
    import threading
    import time

    import httpx

    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    server = spawn_server(lambda port: [str(script), str(port), f"sqlite:///{assay_home / 'slow.db'}", "3"])
    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server goes away mid-request: that is the point
            httpx.get(server.url + route, timeout=60)

    threading.Thread(target=call, daemon=True).start()
    time.sleep(1.0)  # the handler is running
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=15)
    took = time.monotonic() - started
    assert took < 3 + 2, took  # the deadline, and a margin for a busy machine


def test_command_line_files_are_read_bounded_and_validated(api, world, tmp_path, capsys, monkeypatch):
    """`register evaluation` and `lineage ingest` read a regular file of bounded size, never a
    FIFO, and hold what they read to the same schema as the API."""
    from assay.cli.main import main

    monkeypatch.setenv("ASSAY_DB_URL", api.store.url)
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    before = snapshot(api)
    assert main(["register", "evaluation", str(fifo), "--model", world["model"]["id"]]) == 2
    assert "regular file" in capsys.readouterr().err
    assert main(["lineage", "ingest", str(fifo)]) == 2
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps({"eventType": "COMPLETE", "run": _nested(100)}))
    assert main(["lineage", "ingest", str(deep)]) == 2
    assert "deeper than 32" in capsys.readouterr().err
    sha = world["model"]["files"][0]["sha256"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"run_id": "e1", "suite": "s", "target": "t", "metrics": {"acc": 1}, "model_hashes": {"w": sha},
                               "extra": 1}))
    assert main(["register", "evaluation", str(bad), "--model", world["model"]["id"]]) == 2
    assert "extra: Extra inputs are not permitted" in capsys.readouterr().err
    assert snapshot(api) == before


def test_gzip_bodies_are_inflated_bounded_member_by_member():
    import zlib

    from assay.server.app import inflate

    assert inflate(gzip.compress(b"a" * 10) + gzip.compress(b"b" * 5), 15) == b"a" * 10 + b"b" * 5  # two members
    with pytest.raises(OverflowError):
        inflate(gzip.compress(b"a" * 10) + gzip.compress(b"b" * 6), 15)  # the second member crosses the limit
    with pytest.raises(OverflowError):
        inflate(gzip.compress(b" " * (64 << 20)), 1 << 20)
    with pytest.raises(zlib.error):
        inflate(gzip.compress(b"x" * 100)[:-9], 1000)  # truncated
    with pytest.raises(zlib.error):
        inflate(b"not gzip", 1000)


def test_asset_listings_come_a_bounded_page_at_a_time(api, world):
    """A probe: GET /api/v1/assets and /ui/lineage answered the whole registry at once (8.7 MB
    after a fuzzing run). The listing now pages (limit at most 1,000, the default; offset; a
    Link rel=next while more follow) and the lineage page shows 200 assets by default."""
    viewer = api.headers_for("vera")
    everything = api.get("/api/v1/assets", headers=viewer)
    assert everything.status_code == 200 and "link" not in everything.headers
    ids = [a["id"] for a in everything.json()]
    assert len(ids) == 3
    seen, url = [], "/api/v1/assets?limit=2"
    while url:
        page = api.get(url, headers=viewer)
        assert page.status_code == 200 and len(page.json()) <= 2, page.text
        seen += [a["id"] for a in page.json()]
        link = page.headers.get("link")
        url = link[1:link.index(">")] if link else None
    assert seen == ids
    assert [a["id"] for a in api.get("/api/v1/assets", params={"kind": "model", "limit": 1}, headers=viewer).json()] == [world["model"]["id"]]
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**63}, {"limit": "x"}):
        refused(api.get("/api/v1/assets", params=params, headers=viewer), 400, "query.limit" if "limit" in params else "query.offset")

    api.cookies.set("assay_token", api.tokens["vera"])
    first = api.get("/ui/lineage", params={"limit": 2})
    assert first.status_code == 200 and "Assets 1–2 of 3" in first.text and 'offset=2&amp;limit=2" rel="next"' in first.text
    last = api.get("/ui/lineage", params={"offset": 2, "limit": 2})
    assert "Assets 3–3 of 3" in last.text and 'rel="next"' not in last.text and "offset=0&amp;limit=2" in last.text
    whole = api.get("/ui/lineage")
    assert whole.status_code == 200 and "lineage-page" not in whole.text and all(i in whole.text for i in ids)
    assert api.get("/ui/lineage", params={"limit": 1001}).status_code == 400
    api.cookies.clear()


def test_the_deployments_and_evaluations_pages_come_a_bounded_page_at_a_time(api, world):
    """A probe: /ui/deployments (reading each deployment's view and verdicts) and the evaluations
    on /ui/reports listed the whole registry at once. Both page now, like /ui/lineage (offset,
    limit at most 1,000; 100 deployments and 200 evaluations by default), and the runs page's
    title no longer carries a copy of the evaluations table."""
    eng = api.headers_for("erin")
    sha = world["model"]["files"][0]["sha256"]
    for k in range(2):
        assert api.post("/api/v1/deployments", headers=eng, json={
            "model": world["model"]["id"], "surface": f"s{k}", "purpose": "recommendation",
            "bundle_files": {"bundle.yaml": BUNDLE.read_text()}}).status_code == 201
    for k in range(3):
        r = api.post("/api/v1/evaluations", headers=eng, json={
            "model": world["model"]["id"], "run_id": f"e{k}", "suite": "s", "target": "t", "metrics": {"acc": 0.5},
            "model_hashes": {"ranker.txt": sha}})
        assert r.status_code == 201, r.text
    api.cookies.set("assay_token", api.tokens["vera"])
    for path, noun, anchor in (("/ui/deployments", "Deployments", "deployments-page"),
                               ("/ui/reports", "Evaluations", "evaluations-page")):
        first = api.get(path, params={"limit": 2})
        assert first.status_code == 200 and f"{noun} 1–2 of 3" in first.text, first.text[:300]
        assert f'{path}?offset=2&amp;limit=2" rel="next"' in first.text
        last = api.get(path, params={"offset": 2, "limit": 2})
        assert f"{noun} 3–3 of 3" in last.text and 'rel="next"' not in last.text and f"{path}?offset=0&amp;limit=2" in last.text
        whole = api.get(path)
        assert whole.status_code == 200 and anchor not in whole.text
        for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 2**63}):
            assert api.get(path, params=params).status_code == 400, (path, params)
    rows = api.get("/ui/deployments", params={"limit": 2}).text.count('class="approve"')
    assert rows == 2
    page = api.get("/ui/reports", params={"limit": 1}).text
    assert page.count('<table id="evaluations">') == 1 and "<title>Runs · assay</title>" in page
    assert page.split('<table id="evaluations">')[1].split("</table>")[0].count("<tr><td") == 1
    api.cookies.clear()
