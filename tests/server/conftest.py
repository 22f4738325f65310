"""A control plane on a fresh store, with one token per role."""

from __future__ import annotations

import pytest

from assay.govern.registry import Actor
from assay.server.app import create_app
from assay.server.auth import create_token
from assay.store import open_store

ROOT_ACTOR = Actor("root", "admin", "test")


@pytest.fixture(params=["sqlite", "postgres"])
def api(request, assay_home, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setenv("ASSAY_DATA_ROOTS", str(tmp_path))  # the files tests register over HTTP live here

    store = open_store(None if request.param == "sqlite" else request.getfixturevalue("pg_url"))
    app = create_app(store)
    tokens = {}
    for name, role in [("vera", "viewer"), ("erin", "engineer"), ("alice", "approver"), ("bob", "approver"),
                       ("adam", "admin")]:
        tokens[name] = create_token(store, ROOT_ACTOR, name=name, role=role)["token"]
    client = TestClient(app)
    client.tokens = tokens
    client.store = store
    client.app_ = app

    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[name]}"}

    client.headers_for = auth
    yield client
    client.close()
    store.close()
