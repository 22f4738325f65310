"""The guard as an HTTP service (FastAPI on uvicorn, JSON through orjson).

    POST /v1/guard            {"request": {...}, "candidates": {...columns...} | [...records...]}
                              -> the slate (add "decisions": true to the body for the records)
    POST /v1/guard/feedback   {"item_id", "source", "model_version", "surface", "creator", "severe"}
                              -> the state of each breaker the harm report counted against
    POST /v1/guard/reload     {"bundle": "path"}  -> swap to a new bundle atomically
    GET  /v1/guard/status     bundle version/hash, breaker states (a page: ?breakers_after=&
                              breakers_limit=, at most 1,000), counters, decision queue
    GET  /metrics             Prometheus: breakers by kind and state, evictions, overflows
    GET  /healthz

The request body is read as bytes and decoded with orjson, and the slate is encoded with orjson:
FastAPI's pydantic validation would cost more than the guard itself for 200 candidates. The
guard validates the batch instead (a bad batch is a 400 naming what is wrong).

``POST /v1/guard`` is the hot route: it is answered at the ASGI layer (:class:`GuardApp`), before
FastAPI's routing, request object and response classes, which cost about as much CPU as the guard
itself for a 200-candidate slate. Every other route (and the OpenAPI docs) is the FastAPI app.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from assay.errors import BadInput, Unavailable


def _json_object(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, or a BadInput saying why not."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadInput(f"request body is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise BadInput("request body must be a JSON object")
    return body


def _decide(guard: Any, raw: bytes) -> tuple[int, bytes]:
    """One ``POST /v1/guard`` body -> (status, JSON bytes)."""
    try:
        body = _json_object(raw)
        req = body.get("request")
        if not isinstance(req, dict):
            raise BadInput("body.request must be an object with at least a surface")
        if "candidates" not in body:
            raise BadInput("body.candidates is required (columns or a list of objects)")
        slate = guard.apply(req, body["candidates"])
        return 200, orjson.dumps(slate.to_dict(decisions=bool(body.get("decisions"))), option=orjson.OPT_SERIALIZE_NUMPY)
    except Unavailable as e:
        return 503, orjson.dumps({"error": e.message})
    except BadInput as e:
        return 400, orjson.dumps({"error": e.message})


_JSON_HEADERS = (b"content-type", b"application/json")


class GuardApp:
    """The ASGI app: ``POST /v1/guard`` straight to the guard, everything else to FastAPI."""

    def __init__(self, api: FastAPI, guard: Any):
        self.api = api
        self.guard = guard

    def __getattr__(self, name: str) -> Any:  # app.state, app.routes, app.openapi(), ...
        return getattr(self.api, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/guard" or scope["method"] != "POST":
            await self.api(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        status, payload = _decide(self.guard, chunks[0] if len(chunks) == 1 else b"".join(chunks))
        await send({"type": "http.response.start", "status": status,
                    "headers": [_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


def create_app(guard: Any, *, reload_allowed: bool = True) -> GuardApp:
    app = FastAPI(title="assay guard", version="1", docs_url="/docs", redoc_url=None)

    def json(body: Any, status: int = 200) -> Response:
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json")

    def error(status: int, message: str) -> Response:
        return json({"error": message}, status)

    async def _body(request: Request) -> dict[str, Any]:
        return _json_object(await request.body())

    @app.post("/v1/guard")
    async def apply(request: Request) -> Response:
        """Documented here; served by :class:`GuardApp` before FastAPI sees the request."""
        status, payload = _decide(guard, await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    @app.post("/v1/guard/feedback")
    async def feedback(request: Request) -> Response:
        try:
            from assay.guard.stream import apply_feedback

            return json({"ok": True, "breakers": apply_feedback(guard, await _body(request))})
        except BadInput as e:
            return error(400, e.message)

    @app.post("/v1/guard/reload")
    async def reload(request: Request) -> Response:
        if not reload_allowed:
            return error(403, "bundle reload is disabled on this server")
        try:
            from assay.policy import load_bundle

            body = await _body(request)
            path = body.get("bundle")
            if not isinstance(path, str):
                raise BadInput("reload needs bundle (a path to a policy bundle)")
            state = guard.swap(load_bundle(path))
            return json({"bundle": state.bundle.name, "version": state.version, "hash": state.hash})
        except BadInput as e:  # PolicyError is a LocatedError: file:line:col in the message
            return error(400, e.render() if hasattr(e, "render") else e.message)

    @app.get("/v1/guard/status")
    async def status(breakers_after: str | None = None, breakers_limit: int = 1000) -> Response:
        state = guard.bundle
        sink = getattr(guard.sink, "stats", None)
        try:
            page = guard.breakers.page(after=breakers_after, limit=min(breakers_limit, 1000))
        except BadInput as e:
            return error(400, e.message)
        return json({
            "bundle": state.bundle.name, "version": state.version, "hash": state.hash,
            "surfaces": sorted(state.surfaces), "breakers": page["breakers"], "breakers_next": page["next"],
            "breakers_total": page["total"], "counters": dict(guard.counters),
            "decision_queue": sink.__dict__ if sink is not None else None,
        })

    prometheus = CollectorRegistry()
    guard.breakers.register_metrics(prometheus)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(prometheus), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json({"ok": True})

    return GuardApp(app, guard)


def app_from_env() -> GuardApp:
    """The app factory each uvicorn worker process calls (``--workers N``): the guard is built in
    every worker from ``ASSAY_GUARD_BUNDLE``, ``ASSAY_GUARD_LABELS`` and ``ASSAY_GUARD_DEADLINE_MS``."""
    import os

    from assay.guard.cli import build_guard
    from assay.guard.core import freeze_startup_heap

    guard = build_guard(os.environ["ASSAY_GUARD_BUNDLE"], os.environ.get("ASSAY_GUARD_LABELS") or None,
                        deadline_ms=float(os.environ.get("ASSAY_GUARD_DEADLINE_MS", "50")))
    app = create_app(guard)
    freeze_startup_heap()
    return app


def _uvicorn_options() -> dict[str, Any]:
    import importlib.util

    return {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "access_log": False}


def serve(guard: Any, *, host: str = "127.0.0.1", port: int = 8787, log_level: str = "warning") -> None:
    import uvicorn

    from assay.guard.core import freeze_startup_heap

    app = create_app(guard)
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, log_level=log_level, **_uvicorn_options())


def serve_workers(*, bundle: str, labels: str | None, deadline_ms: float, workers: int, host: str, port: int,
                  log_level: str = "warning") -> None:
    """Several worker processes on one port (uvicorn's process manager), one guard each."""
    import os

    import uvicorn

    os.environ["ASSAY_GUARD_BUNDLE"] = bundle
    os.environ["ASSAY_GUARD_LABELS"] = labels or ""
    os.environ["ASSAY_GUARD_DEADLINE_MS"] = str(deadline_ms)
    uvicorn.run("assay.guard.http:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, **_uvicorn_options())
