"""The control plane: one FastAPI app composed from the routers that are installed.

Every route requires a token with a role (``assay.server.auth.require_role``); every error is JSON
``{"error": ..., "hint": ...}`` (``errors`` lists each field when there are several) with a 4xx
status, never a traceback; ``/metrics`` serves Prometheus metrics and ``/healthz`` says whether
the store answers.

Before a request reaches a route (``Intake``): its body is read up to ``ASSAY_MAX_BODY_BYTES``
(default 4 MiB; more is a 413 before anything, authentication included, looks at it, and a
``Content-Length`` over the limit is refused without reading at all), a gzip body is inflated up to
the same limit (any other ``Content-Encoding`` is a 415), and the client's address is the socket's
peer unless that peer is a trusted proxy (``ASSAY_TRUSTED_PROXIES``, addresses or CIDR blocks),
in which case it is the nearest untrusted address in ``X-Forwarded-For``. Every refused mutation
(POST/PUT/PATCH/DELETE answered 4xx) is written to the audit log with its principal and outcome.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import time
import uuid
import zlib
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from assay import __version__
from assay.asgi import BodyDeadline
from assay.config import int_setting
from assay.errors import AssayError, BadInput, LocatedError, Unavailable
from assay.store import Store, open_store

log = logging.getLogger("assay.server")

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
MAX_BODY_BYTES = 4 << 20
MUTATING = ("POST", "PUT", "PATCH", "DELETE")


class ErrorBody(dict):
    """``{"error": str, "hint": str | None}``"""


ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}, "hint": {"type": ["string", "null"]},
                                                 "errors": {"type": "array", "items": {"type": "string"}}},
                "required": ["error"]}
ERROR_TEXTS = {400: "Bad input: what is wrong and where", 401: "Missing, invalid, expired or revoked API token",
               403: "The token's role or identity may not do this", 404: "Unknown id",
               408: "The request body did not arrive in time", 409: "Refused: the request conflicts with the registry",
               413: "The request body is larger than the server accepts",
               415: "The request body's Content-Encoding is not accepted (only gzip)",
               503: "A dependency is unavailable (the store, a schema folder)"}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for code, text in ERROR_TEXTS.items() if code in (400, 401, 403, 404, 409, 413, 415, 503)
}


def status_for(error: AssayError) -> int:
    from assay.govern.registry import Conflict, Forbidden, NotFound
    from assay.server.auth import Unauthorized

    if isinstance(error, NotFound):
        return 404
    if isinstance(error, Unauthorized):
        return 401
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, Conflict):
        return 409
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


# ---------------------------------------------------------------- intake: body limit, encodings, client address


def trusted_proxies(spec: str | None) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``ASSAY_TRUSTED_PROXIES``-style text (addresses or CIDR blocks, comma-separated) as networks."""
    out = []
    for part in (spec or "").replace(" ", ",").split(","):
        if part:
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise BadInput(f"trusted proxy {part!r} is not an IP address or CIDR block") from None
    return tuple(out)


def _is_trusted(host: str, proxies: tuple) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in proxies)


def client_address(peer: str, forwarded_for: list[str], proxies: tuple) -> str:
    """The socket's peer, unless it is a trusted proxy: then the nearest address in
    ``X-Forwarded-For`` (read right to left) that is not itself a trusted proxy."""
    if not proxies or not _is_trusted(peer, proxies):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a malformed chain is not believed
        if not _is_trusted(hop, proxies):
            return hop
    return hops[0] if hops else peer


def inflate(data: bytes, limit: int) -> bytes:
    """A gzip body (one member or several) inflated to at most ``limit`` bytes: ``OverflowError``
    beyond it (never more than ``limit + 1`` bytes are produced), ``zlib.error`` if it is not gzip."""
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += inflater.decompress(data, limit + 1 - len(out))
        if len(out) > limit or inflater.unconsumed_tail:
            raise OverflowError(limit)
        if not inflater.eof:
            raise zlib.error("the gzip stream is truncated")
        data = inflater.unused_data
        if not data:
            return bytes(out)


class Intake:
    """Pure ASGI middleware that runs before any route, dependency or authentication."""

    def __init__(self, app, *, max_body: int, proxies: tuple):
        self.app, self.max_body, self.proxies = app, max_body, proxies

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = [(k.lower(), v) for k, v in scope.get("headers", [])]
        peer = (scope.get("client") or ("unknown", 0))[0]
        forwarded = [v.decode("latin-1") for k, v in headers if k == b"x-forwarded-for"]
        host = client_address(peer, forwarded, self.proxies)
        # changed in place (not copied) so the outer metrics middleware still sees the matched route
        scope["client"] = (host, (scope.get("client") or (None, 0))[1])
        scope.setdefault("state", {})
        scope["state"]["client_host"] = host
        scope["state"]["peer"] = peer

        length = [v for k, v in headers if k == b"content-length"]
        try:
            declared = int(length[0]) if length else None
        except ValueError:
            return await self._refuse(scope, send, 400, "Content-Length is not a number", close=True)
        if declared is not None and declared > self.max_body:
            return await self._refuse(scope, send, 413, f"request body of {declared} bytes is larger than the limit of "
                                                        f"{self.max_body} bytes", close=True)
        encodings = [v.decode("latin-1").strip().lower() for k, v in headers if k == b"content-encoding"]
        encodings = [e for value in encodings for e in value.split(",") if e.strip() not in ("", "identity")]
        if len(encodings) > 1 or (encodings and encodings[0].strip() != "gzip"):
            return await self._refuse(scope, send, 415, f"Content-Encoding {', '.join(encodings)!r} is not accepted; "
                                                        "send the body plain or gzip-compressed", close=True)
        body = bytearray()
        while True:  # bounded in time by the BodyDeadline outside (a 408, then a disconnect here)
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await self._refuse(scope, send, 413, f"request body is larger than the limit of "
                                                            f"{self.max_body} bytes", close=True)
            if not message.get("more_body", False):
                break
        if encodings:
            try:
                plain = inflate(bytes(body), self.max_body)
            except OverflowError:
                return await self._refuse(scope, send, 413, f"the gzip body inflates to more than the limit of "
                                                            f"{self.max_body} bytes")
            except zlib.error as e:
                return await self._refuse(scope, send, 400, f"body is not valid gzip: {e}")
            body = bytearray(plain)
            scope["headers"] = [(k, v) for k, v in scope["headers"]
                                if k.lower() not in (b"content-encoding", b"content-length")]
            scope["headers"].append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, status: int, message: str, close: bool = False) -> None:
        await refuse(scope, send, status, message, close)


async def refuse(scope, send, status: int, message: str, close: bool = True) -> None:
    """The one error shape sent from the ASGI layer, before any route (audited like any refusal)."""
    from starlette.requests import Request as StarletteRequest

    request = StarletteRequest(scope)
    response = await error_response(request, status, message, None)
    if close:  # the unread body is not drained: the connection is closed instead
        response.headers["Connection"] = "close"
    await response(scope, _no_receive, send)


async def _no_receive():  # pragma: no cover - responses never read the request
    return {"type": "http.disconnect"}


# ---------------------------------------------------------------- one error shape, and refusals audited


def _storable(text: str, limit: int) -> str:
    """``text`` made safe for any store column (no NUL, no surrogates, no control characters)."""
    clean = "".join(c if c.isprintable() else "?" for c in str(text))
    return clean.encode("utf-8", "replace").decode("utf-8")[:limit]


def audit_refusal(store: Store, request: Request, status: int, message: str) -> None:
    """One audit row for a mutation that was refused, in its own transaction (the refused work
    was rolled back). Never raises: the refusal itself must still reach the client."""
    from assay.govern.tokens import ANONYMOUS
    from assay.server.auth import client_source
    from assay.store.schema import AuditEntry

    actor = getattr(request.state, "actor", None)
    route = request.scope.get("route")
    # the route as OpenAPI names it ({deployment_id}, not {deployment_id:path})
    path = getattr(route, "path_format", None) or getattr(route, "path", None) or request.url.path
    source = client_source(request, "ui" if path.startswith("/ui") else "http")
    try:
        with store.session() as s:
            s.add(AuditEntry(actor=_storable(actor.name if actor else ANONYMOUS, 255),
                             role=_storable(actor.role if actor else "-", 32), source=_storable(source, 255),
                             action=_storable(f"{request.method} {path}", 64), target=_storable(request.url.path, 512),
                             outcome=f"refused {status}", detail={"error": _storable(message, 500)}))
    except Exception:  # the store may be the reason for the refusal
        log.exception("could not audit a refused %s %s", request.method, request.url.path)


async def error_response(request: Request, status: int, message: str, hint: str | None,
                         errors: list[str] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error shape, ``{"error", "hint"[, "errors"]}``; refused mutations are audited."""
    body: dict[str, Any] = {"error": message, "hint": hint}
    if errors:
        body["errors"] = errors
    store = getattr(request.app.state, "store", None) if "app" in request.scope else None
    if request.method in MUTATING and 400 <= status < 500 and store is not None:
        await run_in_threadpool(audit_refusal, store, request, status, message)
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """The one error shape on ``app``: for any FastAPI app whose routes use ``require_role`` (its
    401 and 403 are ``AssayError``s) or raise ``AssayError``; refused mutations are audited when
    ``app.state.store`` is set."""
    from assay.govern.schemas import describe_errors
    from assay.server.auth import Unauthorized

    @app.exception_handler(AssayError)
    async def assay_error(request: Request, error: AssayError):
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
        message = f"{error.location}: {error.message}" if isinstance(error, LocatedError) else error.message
        return await error_response(request, status_for(error), message, error.hint,
                                    list(getattr(error, "errors", None) or []), headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        errors = describe_errors(list(error.errors()))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return await error_response(request, 400, errors[0] + more, "see the request schema at /docs", errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        message = error.detail if isinstance(error.detail, str) else ERROR_TEXTS.get(error.status_code, "refused")
        if error.status_code == 404 and message == "Not Found":
            message = f"no route {request.url.path[:200]!r}"
        elif message == "There was an error parsing the body":  # FastAPI's words for JSON it could not read
            message = "the body is not valid JSON, or nests too deep to read"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:200]!r}"
        return await error_response(request, error.status_code, message, None, headers=getattr(error, "headers", None))

    @app.exception_handler(sa.exc.DataError)
    async def unstorable(request: Request, error: sa.exc.DataError):
        # a value the database refused: the input is wrong, not the server
        return await error_response(request, 400, f"a value cannot be stored: {str(error.orig).splitlines()[0][:300]}", None)

    @app.exception_handler(sa.exc.IntegrityError)
    async def conflict(request: Request, error: sa.exc.IntegrityError):
        # a concurrent request wrote the same row first (e.g. the next version of an asset)
        return await error_response(request, 409, "the request conflicts with a change made at the same time",
                                    "send it again")

    @app.exception_handler(sa.exc.OperationalError)
    async def store_down(request: Request, error: sa.exc.OperationalError):
        log.error("store error on %s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"error": "the store is unavailable or busy", "hint": "try again shortly"}, status_code=503)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception):
        incident = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", incident, request.method, request.url.path)
        return JSONResponse({"error": f"internal error (incident {incident})",
                             "hint": "the server log has the details under this incident id"}, status_code=500)


def _openapi(app: FastAPI):
    """The generated schema with the one error shape: FastAPI's 422 becomes the documented 400."""
    from fastapi.openapi.utils import get_openapi

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                responses.pop("422", None)
                if "requestBody" in operation:
                    for code in ("400", "413", "415"):
                        responses.setdefault(code, {"description": ERROR_TEXTS[int(code)],
                                                    "content": {"application/json": {"schema": ERROR_SCHEMA}}})
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        _add_links(schema, app.state.openapi_links)
        app.openapi_schema = schema
        return schema

    return build


def _add_links(schema: dict[str, Any], links: dict) -> None:
    """OpenAPI links from the routers' ``OPENAPI_LINKS`` tables (by operationId, as the spec asks)."""
    paths = schema.get("paths", {})
    for (path, method, status), targets in links.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        for target, target_method, parameter, expression in targets:
            operation = paths.get(target, {}).get(target_method)
            if operation is None:
                continue
            name = f"{operation['operationId']}_{parameter}"
            response.setdefault("links", {})[name] = {"operationId": operation["operationId"],
                                                      "parameters": {parameter: expression}}


def create_app(store: Store | None = None, db_url: str | None = None, *, max_body_bytes: int | None = None,
               trusted: str | None = None, body_timeout_s: float | None = None) -> FastAPI:
    """Build the app on ``store`` (or open the configured one). ``max_body_bytes``, ``trusted``
    (proxies) and ``body_timeout_s`` default to ``ASSAY_MAX_BODY_BYTES``, ``ASSAY_TRUSTED_PROXIES``
    and ``ASSAY_BODY_TIMEOUT_S``."""
    app = FastAPI(title="assay control plane", version=__version__,
                  description="Governance, guard and trace APIs of assay. Every route needs "
                              "`Authorization: Bearer <token>` (see `assay token create`). Errors are "
                              '`{"error", "hint"}`.')
    app.state.store = store or open_store(db_url)
    app.state.max_body_bytes = max_body_bytes or int_setting("ASSAY_MAX_BODY_BYTES", MAX_BODY_BYTES)
    app.state.trusted_proxies = trusted_proxies(trusted if trusted is not None else os.environ.get("ASSAY_TRUSTED_PROXIES"))
    registry, requests, latency = _metrics()
    app.state.metrics_registry = registry
    from assay.trace import telemetry

    # decisions by action/rule/surface, breaker states, queue depth and write latency, on the same /metrics
    app.state.trace_metrics = telemetry.metrics(registry)

    app.add_middleware(Intake, max_body=app.state.max_body_bytes, proxies=app.state.trusted_proxies)

    @app.middleware("http")
    async def count(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        requests.labels(request.method, path, str(response.status_code)).inc()
        latency.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    # outermost: the body's deadline binds every reader inside (Intake, the metrics, the routes)
    app.add_middleware(BodyDeadline, timeout_s=body_timeout_s, refuse=refuse)
    install_error_handlers(app)

    @app.get("/healthz", tags=["ops"], responses={503: {"description": "store unreachable",
                                                        "content": {"application/json": {"schema": ERROR_SCHEMA}}}})
    def healthz() -> dict[str, Any]:
        """Liveness and store reachability (no token needed)."""
        try:
            with app.state.store.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except Exception as e:  # report, do not crash
            return JSONResponse({"error": f"store unreachable: {str(e).splitlines()[0][:200]}", "hint": None},
                                status_code=503)
        return {"status": "ok", "version": __version__, "store": app.state.store.dialect}

    @app.get("/metrics", tags=["ops"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    def metrics() -> Response:
        """Prometheus metrics (no token needed)."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        # the app's HTTP metrics plus whatever other parts registered in the process-wide registry
        return Response(generate_latest(registry) + generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.state.routers = []
    app.state.openapi_links = {}
    for name in ROUTE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        app.include_router(module.router, responses=ERROR_RESPONSES)
        app.state.routers.append(name)
        app.state.openapi_links.update(getattr(module, "OPENAPI_LINKS", {}))
    app.openapi = _openapi(app)
    return app
