"""Schemathesis against the control plane's OpenAPI schema: zero 5xx, zero schema violations.

Runs with an admin token (so generated requests get past auth and reach the handlers) on a
store that already holds a dataset, a model and a deployment. Bounded: a few examples per route.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from assay.govern.gate import request_deployment
from assay.govern.registry import Actor, register_dataset, register_model
from assay.server.app import create_app
from assay.server.auth import create_token
from assay.store import open_store

BUNDLE = Path(__file__).resolve().parents[2] / "src" / "assay" / "govern" / "default_bundle.yaml"


@pytest.fixture
def seeded_app(assay_home, tmp_path):
    store = open_store()
    eng = Actor("erin", "engineer")
    data = tmp_path / "d.csv"
    data.write_text("a\n1\n")
    weights = tmp_path / "m.bin"
    weights.write_bytes(b"w")
    ds = register_dataset(store, eng, name="d", uri=str(data), purposes=["recommendation"])
    m = register_model(store, eng, name="m", weights=[weights], trained_on=[ds["id"]])
    request_deployment(store, eng, model=m["id"], surface="for_you", purpose="recommendation", bundle=BUNDLE)
    app = create_app(store)
    app.state.admin_token = create_token(store, Actor("root", "admin"), name="fuzzer", role="admin")["token"]
    yield app
    store.close()


def test_api_conforms_to_its_schema(seeded_app):
    """Every operation, a few generated cases each (schemathesis' own pytest plugin is not
    compatible with this pytest, so the strategies are driven with hypothesis directly)."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", seeded_app)
    headers = {"Authorization": f"Bearer {seeded_app.state.admin_token}"}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=5, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            case.call_and_validate(headers=headers, checks=checks)

        run()
