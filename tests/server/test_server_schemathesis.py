"""The standing attack (``assay.server.attack``): schemathesis over the control plane's OpenAPI
schema, every operation with fitting and unfitting requests, then stateful scenarios along the
links between operations, on SQLite and on the real PostgreSQL. Zero 5xx, and every response
has a documented status, content type and shape. Bounded (a few examples per operation, a few
short scenarios) so it runs in `make test`; `assay bench govern` runs a longer one."""

from __future__ import annotations

import logging

import pytest

from assay.server.app import create_app
from assay.server.attack import attack, attack_store, seed
from assay.store import open_store


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"])
def test_no_request_gets_a_5xx_or_an_undocumented_answer(store_kind, request, caplog):
    caplog.set_level(logging.CRITICAL, logger="assay.server")
    url = request.getfixturevalue("pg_url") if store_kind == "postgres" else None
    result = attack_store(url, examples=3, scenarios=12, steps=5)
    assert result.server_errors == 0, result.as_dict()
    assert result.failures == [], "\n\n".join(result.failures)
    assert result.calls >= 200, result.as_dict()  # every operation was reached, not just planned
    assert result.calls - result.stateless_calls >= 30, result.as_dict()  # the stateful phase ran
    assert {200, 201, 400, 404} <= set(result.statuses), result.as_dict()  # past validation, into the handlers


@pytest.fixture
def seeded(tmp_path, assay_home, caplog):
    """A seeded store and an app on it, with the fuzzer's token: ``(app, token)``."""
    caplog.set_level(logging.CRITICAL, logger="assay.server")
    store = open_store()
    token = seed(store, tmp_path)
    yield create_app(store), token
    store.close()


def test_the_attack_sees_a_5xx_when_there_is_one(seeded):
    """The oracle can fail: a route that crashes is reported as a server error and a failure."""
    app, token = seeded

    @app.get("/api/v1/crash", tags=["test"])
    def crash() -> dict:
        raise RuntimeError("boom")

    result = attack(app, token, examples=1, scenarios=1, steps=2)
    assert result.server_errors >= 1 and any("/api/v1/crash" in f for f in result.failures), result.as_dict()


def test_the_attack_records_failed_checks_and_goes_on(seeded):
    """An undocumented status is a failed check (schemathesis raises a group of failures): it is
    recorded, and the other operations are still attacked."""
    from fastapi.responses import JSONResponse

    app, token = seeded

    @app.get("/api/v1/teapot", tags=["test"])
    def teapot() -> dict:
        return JSONResponse({"error": "I am a teapot", "hint": None}, status_code=418)

    result = attack(app, token, examples=1, scenarios=1, steps=2)
    assert any("/api/v1/teapot" in f and "418" in f for f in result.failures), result.failures
    assert result.statuses[201] >= 1  # and the run went on to the other operations
