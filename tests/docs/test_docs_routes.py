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
    import os

    from assay.guard.cli import DEFAULT_BUNDLE, build_guard
    from assay.guard.http import create_app as guard_app
    from assay.server.app import create_app as control_app
    from assay.store import open_store
    from assay.trace.witness import Witness
    from assay.trace.witness import create_app as witness_app

    home = tmp_path_factory.mktemp("home")
    os.environ["ASSAY_HOME"] = str(home)
    store = open_store(f"sqlite:///{home / 'a.db'}")
    out = {"control": control_app(store), "guard": guard_app(build_guard(DEFAULT_BUNDLE, None), access=None),
           "witness": witness_app(Witness.init(home / "witness", "witness.example/docs"))}
    yield out
    store.close()


def _routes(app) -> list[tuple[str, set[str]]]:
    out = []
    for r in getattr(app, "routes", []):
        path = getattr(r, "path", None)
        if path is None:
            continue
        out.append((path, set(getattr(r, "methods", None) or {"GET"})))
    return out


def _same(doc: str, real: str) -> bool:
    norm = re.compile(r"\{[^}]*\}|<[^>]*>")
    d, r = norm.sub("{}", doc.rstrip("/")), norm.sub("{}", real.rstrip("/"))
    return d == r


def test_the_docs_name_routes():
    assert len(DOCUMENTED) >= 25, DOCUMENTED


@pytest.mark.parametrize(("where", "method", "path"), DOCUMENTED, ids=[f"{w} {m or ''} {p}" for w, m, p in DOCUMENTED])
def test_a_documented_route_exists(apps, where, method, path):
    kind = _which(where, path)
    app = apps.get(kind)
    assert app is not None, f"{where}: no {kind} app to check {path} against"
    routes = _routes(app)
    prefix_only = not any(_same(path, p) for p, _ in routes)
    if prefix_only and method is None and any(p.startswith(path.rstrip("/") + "/") for p, _ in routes):
        return  # a prefix such as `/api/v1` ("every /api/v1 route needs a token")
    matches = [m for p, m in routes if _same(path, p) or (p.startswith("/ui") and path.startswith("/ui"))]
    assert matches, f"{where}: the {kind} app serves no {path}"
    if method:
        assert any(method in m for m in matches), f"{where}: {path} takes {sorted(set().union(*matches))}, not {method}"
    if kind != "witness" and path.startswith(("/api/", "/v1/")):
        schema = app.openapi()["paths"]
        ops = [ops for p, ops in schema.items() if _same(path, p)]
        assert ops, f"{where}: {path} is served but missing from the {kind} app's OpenAPI schema"
        if method:
            assert any(method.lower() in o for o in ops), f"{where}: the OpenAPI schema has no {method} {path}"
