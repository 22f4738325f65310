"""Every HTTP route the docs name exists, with the method they give it, in the app that serves it:
the control plane (``assay server``), the guard service (``assay guard serve``) or the trace
witness (``assay trace witness serve``). An API route must also be in the app's OpenAPI schema
(what a client generates its code from)."""

from __future__ import annotations

import re

import pytest
from docpages import PAGES, inline_code

ROUTE = re.compile(r"^(?:(GET|POST|PUT|PATCH|DELETE) )?(/[A-Za-z0-9_./{}<>()-]*)$")

# Paths the docs name that no assay app serves, and why.
NOT_OURS = {
    "/v1/chat/completions": "the OpenAI-compatible model server under test (llama.cpp, vLLM)",
    "/data/raw/orders.csv": "a file path in an OpenLineage example",
    "/dev/zero": "a device the bundle loader refuses",
}


def _documented() -> list[tuple[str, str | None, str]]:
    out = []
    for page in PAGES:
        for n, code in inline_code(page):
            m = ROUTE.match(code)
            if m and m.group(2) not in NOT_OURS and m.group(2) != "/":
                out.append((f"{page.name}:{n}", m.group(1), m.group(2)))
    return out


DOCUMENTED = _documented()


def _which(page: str, path: str) -> str:
    if path.startswith("/v1/guard"):
        return "guard"
    if path == "/add-checkpoint" or (path.endswith("/checkpoint") and path.startswith("/<")):
        return "witness"
    if page.startswith("guard.md") and path in ("/metrics", "/healthz"):
        return "guard"
    return "control"


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    from assay.guard.cli import DEFAULT_BUNDLE, build_guard
    from assay.guard.http import create_app as guard_app
    from assay.server.app import create_app as control_app
    from assay.store import open_store
    from assay.trace.witness import Witness
    from assay.trace.witness import create_app as witness_app

    home = tmp_path_factory.mktemp("home")  # every app gets its state explicitly: no setting is changed
    store = open_store(f"sqlite:///{home / 'a.db'}")
    out = {"control": control_app(store), "guard": guard_app(build_guard(DEFAULT_BUNDLE, None), access=None),
           "witness": witness_app(Witness.init(home / "witness", "witness.example/docs"))}
    yield out
    store.close()


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", path.rstrip("/")) or "/"


def _schema(app) -> dict[str, set[str]]:
    return {_norm(p): {m.upper() for m in ops} for p, ops in app.openapi()["paths"].items()}


def _starlette_routes(app) -> dict[str, set[str]]:
    return {_norm(r.path): set(r.methods or ()) for r in app.routes if hasattr(r, "path")}


def test_the_docs_name_routes():
    assert len(DOCUMENTED) >= 25, DOCUMENTED


@pytest.mark.parametrize(("where", "method", "path"), DOCUMENTED, ids=[f"{w} {m or ''} {p}" for w, m, p in DOCUMENTED])
def test_a_documented_route_exists(apps, where, method, path):
    from fastapi.testclient import TestClient

    kind = _which(where, path)
    app = apps[kind]
    if kind == "witness":  # plain-text C2SP routes: a Starlette app, no OpenAPI
        routes = _starlette_routes(app)
        assert _norm(path) in routes, f"{where}: the witness serves no {path} ({sorted(routes)})"
        assert method is None or method in routes[_norm(path)], f"{where}: the witness takes no {method} {path}"
        return
    schema = _schema(app)
    if _norm(path) in schema:
        assert method is None or method in schema[_norm(path)], (
            f"{where}: the {kind} app's OpenAPI schema has {path} with {sorted(schema[_norm(path)])}, not {method}")
        return
    if method is None and any(p.startswith(_norm(path) + "/") for p in schema):
        return  # a prefix such as `/api/v1` ("every /api/v1 route needs a token")
    assert not path.startswith(("/api/", "/v1/")), f"{where}: {path} is not in the {kind} app's OpenAPI schema"
    # pages and FastAPI's own routes (/ui/, /docs, /openapi.json) are outside the schema: ask the app
    with TestClient(app) as client:
        r = client.request(method or "GET", path, follow_redirects=False)
    assert r.status_code not in (404, 405), f"{where}: {method or 'GET'} {path} -> {r.status_code} from the {kind} app"
