"""The trace routes in the real control-plane app (SQLite store, real tokens)."""

from __future__ import annotations

import pytest
from trace_helpers import make_decisions

from assay.trace import TraceLog, proofs
from assay.trace.checkpoint import Verifier


@pytest.fixture
def client(assay_home):
    from fastapi.testclient import TestClient

    from assay.govern.registry import Actor
    from assay.server.app import create_app
    from assay.server.auth import create_token
    from assay.store import open_store

    store = open_store(None)
    app = create_app(store)
    token = create_token(store, Actor("root", "admin", "test"), name="vera", role="viewer")["token"]
    with TraceLog.open() as log:
        log.append(make_decisions(30))
        log.append(make_decisions(5, start=30))
    with TestClient(app) as c:
        c.headers.update({"Authorization": f"Bearer {token}"})
        yield c
    store.close()


def test_trace_routes(client) -> None:
    r = client.get("/v1/trace/why", params={"item": "item6", "subject": "user6"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["action"] == "drop" and body["rules"][0]["id"] == "teen-mature-drop" and body["index"] == 6
    vkey = Verifier.parse(client.get("/v1/trace/checkpoint").json()["verifier_key"])
    assert "included" in proofs.check_bundle(body["proof"], vkey)

    r = client.get("/v1/trace/why", params={"item": "item6", "subject": "someone-else"})
    assert r.status_code == 404 and "no decision" in r.json()["error"]
    r = client.get("/v1/trace/why", params={"item": "item6", "subject": "user6", "at": "not a time"})
    assert r.status_code == 400 and "--at" in r.json()["error"]

    r = client.get("/v1/trace/aggregate", params={"by": ["surface", "action"]})
    assert r.status_code == 200 and sum(g["decisions"] for g in r.json()["groups"]) == 35
    assert client.get("/v1/trace/aggregate", params={"by": "colour"}).status_code == 400

    assert "included" in proofs.check_bundle(client.get("/v1/trace/proof/inclusion/3").json(), vkey)
    c = client.get("/v1/trace/proof/consistency", params={"old_size": 30, "new_size": 35}).json()
    assert "prefix" in proofs.check_bundle(c, vkey)
    assert client.get("/v1/trace/proof/inclusion/99").status_code == 400


def test_trace_routes_need_a_token(client) -> None:
    client.headers.pop("Authorization")
    assert client.get("/v1/trace/checkpoint").status_code == 401


def test_why_brings_model_lineage_from_the_registry(assay_home) -> None:
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from assay.govern import registry
    from assay.govern.registry import Actor
    from assay.server.app import create_app
    from assay.server.auth import create_token
    from assay.store import open_store

    store = open_store(None)
    root = Actor("root", "admin", "test")
    data = registry.register_dataset(store, root, name="interactions", uri="s3://bucket/interactions",
                                     purposes=["recommendation"], files=[{"path": "a.parquet", "sha256": "0" * 64, "size": 1}])
    model = registry.register_model(store, root, name="ranker", files=[{"path": "w.bin", "sha256": "1" * 64, "size": 1}],
                                    uri="s3://bucket/ranker", trained_on=[data["id"]], purposes=["recommendation"])
    token = create_token(store, root, name="vera", role="viewer")["token"]
    with TraceLog.open() as log:
        log.append([replace(d, model_versions=(model["id"],)) for d in make_decisions(4)])
    with TestClient(create_app(store)) as client:
        r = client.get("/v1/trace/why", params={"item": "item1", "subject": "user1"},
                       headers={"Authorization": f"Bearer {token}"})
    store.close()
    assert r.status_code == 200, r.text
    (entry,) = r.json()["models"]
    assert entry["version"] == model["id"]
    assert data["id"] in [node["id"] for node in entry["lineage"]["ancestry"]]
