"""The control plane: one FastAPI app composed from the routers that are installed.

Every route requires a token with a role (``assay.server.auth.require_role``); errors that reach a
person become JSON ``{"error": ..., "hint": ...}`` with a 4xx status; ``/metrics`` serves
Prometheus metrics and ``/healthz`` says whether the store answers.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from assay import __version__
from assay.errors import AssayError, BadInput, Unavailable
from assay.store import Store, open_store

# Routers composed into the app, each module exposing ``router``; missing ones are skipped.
ROUTE_MODULES = [
    "assay.server.routes.govern",
    "assay.server.routes.guard",
    "assay.server.routes.trace",
    "assay.server.routes.evaluate",
    "assay.server.routes.redteam",
    "assay.server.routes.monitor",
    "assay.server.routes.explain",
    "assay.server.routes.mitigate",
    "assay.server.routes.dashboard",
]


class ErrorBody(dict):
    """``{"error": str, "hint": str | None}``"""


ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}, "hint": {"type": ["string", "null"]},
                                                 "errors": {"type": "array", "items": {"type": "string"}}},
                "required": ["error"]}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for code, text in [(400, "Bad input: what is wrong and where"), (401, "Missing or invalid API token"),
                       (403, "The token's role may not do this"), (404, "Unknown id"),
                       (409, "Refused: the request conflicts with the registry")]
}


def status_for(error: AssayError) -> int:
    from assay.govern.registry import Forbidden, NotFound

    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, BadInput):
        return 400
    if isinstance(error, Unavailable):
        return 503
    return 409


def _metrics():
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    requests = Counter("assay_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram("assay_http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry)
    return registry, requests, latency


def create_app(store: Store | None = None, db_url: str | None = None) -> FastAPI:
    """Build the app on ``store`` (or open the configured one)."""
    app = FastAPI(title="assay control plane", version=__version__,
                  description="Governance, guard and trace APIs of assay. Every route needs "
                              "`Authorization: Bearer <token>` (see `assay token create`).")
    app.state.store = store or open_store(db_url)
    registry, requests, latency = _metrics()
    app.state.metrics_registry = registry
    from assay.trace import telemetry

    # decisions by action/rule/surface, breaker states, queue depth and write latency, on the same /metrics
    app.state.trace_metrics = telemetry.metrics(registry)

    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        requests.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(AssayError)
    async def assay_error(_request: Request, error: AssayError):
        body: dict[str, Any] = {"error": error.message, "hint": error.hint}
        if getattr(error, "errors", None):
            body["errors"] = list(error.errors)
        return JSONResponse(body, status_code=status_for(error))

    @app.exception_handler(sa.exc.DataError)
    async def unstorable(_request: Request, error: sa.exc.DataError):
        # e.g. a NUL byte PostgreSQL cannot store in text: the input is wrong, not the server
        return JSONResponse({"error": f"a value cannot be stored: {str(error.orig).splitlines()[0]}", "hint": None},
                            status_code=400)

    @app.get("/healthz", tags=["ops"], responses={503: ERROR_RESPONSES[400] | {"description": "store unreachable"}})
    def healthz() -> dict[str, Any]:
        """Liveness and store reachability (no token needed)."""
        try:
            with app.state.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as e:  # report, do not crash
            return JSONResponse({"error": f"store unreachable: {e}", "hint": None}, status_code=503)
        return {"status": "ok", "version": __version__, "store": app.state.store.dialect}

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        """Prometheus metrics (no token needed)."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        # the app's HTTP metrics plus whatever other parts registered in the process-wide registry
        return Response(generate_latest(registry) + generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.state.routers = []
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        app.include_router(module.router, responses=ERROR_RESPONSES)
        app.state.routers.append(name)
    return app
