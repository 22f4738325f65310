"""The guard as an HTTP service (FastAPI on uvicorn, JSON through orjson).

    POST /v1/guard            {"request": {...}, "candidates": {...columns...} | [...records...]}
                              -> the slate (add "decisions": true to the body for the records)     viewer
    POST /v1/guard/feedback   {"item_id", "source", "model_version", "surface", "creator", "severe"}  engineer, rate-limited
                              -> the state of each breaker the harm report counted against
    POST /v1/guard/reload     {"bundle": "name in the bundle directory"}  -> swap atomically         admin
    GET  /v1/guard/status     bundle version/hash, breaker states (a page: ?breakers_after=&        viewer
                              breakers_limit=, at most 1,000), counters, decision queue
    GET  /metrics             Prometheus: breakers by kind and state, evictions, overflows          viewer
    GET  /healthz             liveness (no data)                                                     anyone

**Who may call.** Every route but ``/healthz`` (and the OpenAPI docs) needs ``Authorization:
Bearer <token>``, a token of the control plane (``assay token create --name N --role R``): the same
hashed tokens, principals and roles (viewer < engineer < approver < admin), checked by the control
plane's own ``authenticate``, so a token revoked or expired there stops working here. A token the
store has verified is remembered for ``ttl_s`` (10 s by default, keyed by its SHA-256, never the
secret): a revocation reaches a running guard within that time, and the hot route does not pay a
database query per request. Unknown tokens are remembered apart (2 s, at most 1,000), so made-up
tokens never push the valid ones out. Missing or unknown token: 401; a role below the route's: 403; the
token store down: 503.

**Reload** takes only a bundle inside the configured bundle directory (``--bundle-dir``), signed
with Ed25519 by one of the configured keys (``--pubkey``); it is compiled completely and then
swapped in with one reference assignment. Anything else is refused with a one-line reason that
never quotes the file, and the serving bundle is unchanged. Without a bundle directory and keys,
reload is off (403).

**Feedback** (a harm report opens breakers) needs the engineer role and is limited per principal
(a token bucket, ``feedback_per_s`` with bursts of ``feedback_burst``): 429 with Retry-After.

The request body is read as bytes (at most ``max_body_bytes``: 413) and decoded with orjson, and
the slate is encoded with orjson: FastAPI's pydantic validation would cost more than the guard
itself for 200 candidates. The guard validates the batch instead (a bad batch is a 400 naming the
field and row). ``POST /v1/guard`` is answered at the ASGI layer (:class:`GuardApp`), before
FastAPI's routing, request object and response classes, which cost about as much CPU as the guard
for a 200-candidate slate. Every other route (and the OpenAPI docs) is the FastAPI app.
"""

from __future__ import annotations

import hashlib
import json as jsonlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from assay.asgi import BodyDeadline
from assay.errors import AssayError, BadInput, Unavailable

# the role each route needs, in the control plane's order (viewer < engineer < approver < admin)
DECIDE_ROLE, STATUS_ROLE, FEEDBACK_ROLE, RELOAD_ROLE = "viewer", "viewer", "engineer", "admin"


class Denied(AssayError):
    """A request turned away before the guard looked at it: 401, 403, 413, 429, 503."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


_BEARER = (b"www-authenticate", b"Bearer")


@dataclass
class TokenAccess:
    """Bearer tokens checked by ``lookup`` (token -> an actor with ``name``, ``role`` and
    ``at_least(role)``, or None for an unknown, revoked or expired token): the control plane's
    ``token_actor`` on its store. Answers are remembered, keyed by the token's SHA-256: a verified
    token for ``ttl_s`` (at most ``max_cached`` of them), an unknown one for ``negative_ttl_s`` in a
    cache of its own (at most ``max_unknown_cached``), so that a flood of made-up tokens neither
    evicts the callers' valid tokens (each would cost a store query again) nor grows memory."""

    lookup: Callable[[str], Any]
    ttl_s: float = 10.0
    negative_ttl_s: float = 2.0
    max_cached: int = 10_000
    max_unknown_cached: int = 1_000
    clock: Callable[[], float] = time.monotonic
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _unknown: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def actor(self, token: str) -> Any:
        key = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self.clock()
        with self._lock:
            for cache in (self._cache, self._unknown):
                hit = cache.get(key)
                if hit is not None and hit[1] > now:
                    cache.move_to_end(key)
                    return hit[0]
        try:
            found = self.lookup(token)
        except Exception as e:  # the token store is down: the guard cannot tell who is calling
            raise Denied(503, f"the token store is unavailable ({type(e).__name__}); try again") from None
        with self._lock:
            self._cache.pop(key, None)
            self._unknown.pop(key, None)
            cache, ttl, most = ((self._cache, self.ttl_s, self.max_cached) if found is not None
                                else (self._unknown, self.negative_ttl_s, self.max_unknown_cached))
            cache[key] = (found, now + ttl)
            while len(cache) > most:
                cache.popitem(last=False)
        return found

    def require(self, authorization: str | None, role: str) -> Any:
        """The caller, or :class:`Denied` (401 without a valid token, 403 below ``role``)."""
        if not authorization:
            raise Denied(401, "missing API token: send 'Authorization: Bearer <token>' (assay token create)", (_BEARER,))
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > 512:
            raise Denied(401, "the Authorization header must be 'Bearer <token>'", (_BEARER,))
        who = self.actor(token)
        if who is None:
            raise Denied(401, "invalid, revoked or expired API token", (_BEARER,))
        if not who.at_least(role):
            raise Denied(403, f"{who.name} has role {who.role!r}; this needs {role!r} or higher")
        return who


@dataclass
class RateLimit:
    """A token bucket per principal: ``rate_per_s`` on average, bursts of ``burst``."""

    rate_per_s: float = 5.0
    burst: float = 20.0
    clock: Callable[[], float] = time.monotonic
    max_principals: int = 10_000
    _buckets: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, who: str) -> None:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(who, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.rate_per_s
                self._buckets[who] = (tokens, now)
                raise Denied(429, f"too many feedback reports from {who}: at most {self.rate_per_s:g}/s",
                             ((b"retry-after", str(max(1, int(wait + 0.999))).encode()),))
            self._buckets[who] = (tokens - 1.0, now)
            self._buckets.move_to_end(who)
            while len(self._buckets) > self.max_principals:
                self._buckets.popitem(last=False)


@dataclass
class ReloadPolicy:
    """Where reloadable bundles live and who must have signed them."""

    bundle_dir: Path
    public_keys: list[Any]  # Ed25519 public keys (paths or key objects)

    def load(self, name: Any) -> Any:
        """The bundle ``name`` (relative to the bundle directory), verified; :class:`Denied` or
        :class:`BadInput` with a one-line reason otherwise. Never quotes the file's content."""
        from assay.policy import load_bundle
        from assay.policy.signing import key_id, load_public_key, signature_path
        from assay.policy.source import PolicyError

        if not isinstance(name, str) or not name or len(name) > 255 or "\x00" in name:
            raise BadInput("reload needs bundle: the name of a bundle in the bundle directory (a string of 1-255 characters)")
        shown = repr(name[:80])
        root = self.bundle_dir.resolve()
        try:
            path = (root / name).resolve()
        except (OSError, RuntimeError, ValueError):
            raise Denied(403, f"reload refused: {shown} is not a bundle in the bundle directory") from None
        if path == root or not path.is_relative_to(root):
            raise Denied(403, f"reload refused: {shown} is outside the bundle directory")
        try:  # a name the file system refuses (a part over 255 bytes: ENAMETOOLONG) names no bundle
            if not path.exists():
                raise Denied(404, f"reload refused: there is no bundle {shown} in the bundle directory")
            if not (path.is_file() or path.is_dir()):
                raise Denied(403, f"reload refused: {shown} is not a file or folder")
            sig = signature_path(path)
            signed = sig.is_file()
        except OSError:
            raise Denied(404, f"reload refused: there is no bundle {shown} in the bundle directory") from None
        if not signed:
            raise Denied(403, f"reload refused: {shown} is not signed (no {sig.name})")
        try:
            signed_by = jsonlib.loads(sig.read_text(encoding="utf-8")).get("key_id")
        except (OSError, ValueError, AttributeError):
            raise Denied(403, f"reload refused: the signature file of {shown} is not a signature") from None
        keys = {key_id(k): k for k in (load_public_key(p) for p in self.public_keys)}
        key = keys.get(signed_by) if isinstance(signed_by, str) else None
        if key is None:
            raise Denied(403, f"reload refused: {shown} is not signed by a trusted key")
        try:
            return load_bundle(path, require_signature=True, public_key=key)
        except PolicyError as e:
            where = e.location
            if Path(where.file).name == sig.name:
                raise Denied(403, f"reload refused: the signature of {shown} does not verify (changed after signing, or forged)") from None
            raise BadInput(f"reload refused: {shown} is not a valid policy bundle (line {where.line}, column {where.column})") from None
        except (OSError, UnicodeError):
            raise BadInput(f"reload refused: {shown} cannot be read as a policy bundle") from None


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

    def __init__(self, api: FastAPI, guard: Any, access: TokenAccess | None, max_body_bytes: int,
                 body_timeout_s: float | None = None):
        self.api = api
        self.guard = guard
        self.access = access
        self.max_body_bytes = max_body_bytes
        # every route's body, this one's and FastAPI's, must arrive in time (ASSAY_BODY_TIMEOUT_S): 408
        self.entry = BodyDeadline(self._route, timeout_s=body_timeout_s)

    def __getattr__(self, name: str) -> Any:  # app.state, app.routes, app.openapi(), ...
        return getattr(self.api, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.entry(scope, receive, send)

    async def _route(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/guard" or scope["method"] != "POST":
            await self.api(scope, receive, send)
            return
        try:
            if self.access is not None:
                header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
                self.access.require(header.decode("latin-1") if header is not None else None, DECIDE_ROLE)
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise Denied(413, f"request body over {self.max_body_bytes} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            status, payload = _decide(self.guard, chunks[0] if len(chunks) == 1 else b"".join(chunks))
            headers: tuple[tuple[bytes, bytes], ...] = ()
        except Denied as e:
            status, payload, headers = e.status, orjson.dumps({"error": e.message}), e.headers
        await send({"type": "http.response.start", "status": status,
                    "headers": [_JSON_HEADERS, (b"content-length", str(len(payload)).encode()), *headers]})
        await send({"type": "http.response.body", "body": payload})


def create_app(guard: Any, *, access: TokenAccess | None, reload: ReloadPolicy | None = None,
               feedback_limit: RateLimit | None = None, max_body_bytes: int = 16 << 20,
               body_timeout_s: float | None = None) -> GuardApp:
    """The guard's HTTP app. ``access``: who may call (None only where a test or an embedding
    process has already decided that: every route is then open); ``reload``: where signed bundles
    may be reloaded from (None: reload is off); ``body_timeout_s``: how long a request's body may
    take to arrive (``ASSAY_BODY_TIMEOUT_S``, 30 s, when None)."""
    app = FastAPI(title="assay guard", version="1", docs_url="/docs", redoc_url=None)
    limit = feedback_limit or RateLimit()

    def json(body: Any, status: int = 200, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json",
                        headers={k.decode(): v.decode() for k, v in headers})

    def error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
        return json({"error": message}, status, headers)

    def caller(request: Request, role: str) -> Any:
        return None if access is None else access.require(request.headers.get("authorization"), role)

    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise Denied(413, f"request body over {max_body_bytes} bytes")
        return _json_object(raw)

    @app.post("/v1/guard")
    async def apply(request: Request) -> Response:
        """Documented here; served by :class:`GuardApp` before FastAPI sees the request."""
        try:
            caller(request, DECIDE_ROLE)
        except Denied as e:
            return error(e.status, e.message, e.headers)
        status, payload = _decide(guard, await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    @app.post("/v1/guard/feedback")
    async def feedback(request: Request) -> Response:
        try:
            # one validation for HTTP and stream reports
            from assay.guard.stream import apply_feedback

            who = caller(request, FEEDBACK_ROLE)
            limit.take(who.name if who is not None else "(open)")
            return json({"ok": True, "breakers": apply_feedback(guard, await _body(request))})
        except Denied as e:
            return error(e.status, e.message, e.headers)
        except BadInput as e:
            return error(400, e.message)

    @app.post("/v1/guard/reload")
    async def reload_bundle(request: Request) -> Response:
        try:
            caller(request, RELOAD_ROLE)
            if reload is None:
                raise Denied(403, "bundle reload is off on this server (start it with --bundle-dir and --pubkey)")
            body = await _body(request)
            bundle = reload.load(body.get("bundle"))
            state = guard.swap(bundle)  # compiled completely first; the serving bundle is unchanged if it fails
            return json({"bundle": state.bundle.name, "version": state.version, "hash": state.hash})
        except Denied as e:
            return error(e.status, e.message, e.headers)
        except BadInput as e:  # one line: never the file's content
            return error(400, e.message.splitlines()[0][:300] if e.message.startswith("reload refused") else
                         f"reload refused: {e.message.splitlines()[0][:200]}")

    @app.get("/v1/guard/status")
    async def status(request: Request, breakers_after: str | None = None, breakers_limit: int = 1000) -> Response:
        try:
            caller(request, STATUS_ROLE)
        except Denied as e:
            return error(e.status, e.message, e.headers)
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
    async def metrics(request: Request) -> Response:
        try:
            caller(request, STATUS_ROLE)  # a scraper holds a viewer token (Prometheus: authorization.credentials)
        except Denied as e:
            return error(e.status, e.message, e.headers)
        return Response(generate_latest(prometheus), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json({"ok": True})

    return GuardApp(app, guard, access, max_body_bytes, body_timeout_s)


def app_from_env() -> GuardApp:
    """The app factory each uvicorn worker process calls (``--workers N``): the guard is built in
    every worker from ``ASSAY_GUARD_BUNDLE``, ``ASSAY_GUARD_LABELS``, ``ASSAY_GUARD_DEADLINE_MS``;
    its access from ``ASSAY_GUARD_DB`` (the token store), ``ASSAY_GUARD_BUNDLE_DIR`` and
    ``ASSAY_GUARD_PUBKEYS`` (os.pathsep-separated) for reloads."""
    import os

    from assay.guard.cli import build_guard, token_access
    from assay.guard.core import freeze_startup_heap

    guard = build_guard(os.environ["ASSAY_GUARD_BUNDLE"], os.environ.get("ASSAY_GUARD_LABELS") or None,
                        deadline_ms=float(os.environ.get("ASSAY_GUARD_DEADLINE_MS", "50")))
    keys = [k for k in os.environ.get("ASSAY_GUARD_PUBKEYS", "").split(os.pathsep) if k]
    bundle_dir = os.environ.get("ASSAY_GUARD_BUNDLE_DIR") or None
    app = create_app(guard, access=token_access(os.environ.get("ASSAY_GUARD_DB") or None),
                     reload=ReloadPolicy(Path(bundle_dir), keys) if bundle_dir and keys else None,
                     feedback_limit=RateLimit(float(os.environ.get("ASSAY_GUARD_FEEDBACK_RATE", "5"))))
    freeze_startup_heap()
    return app


def _uvicorn_options() -> dict[str, Any]:
    import importlib.util

    return {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
            "access_log": False}


def serve(guard: Any, *, access: TokenAccess, reload: ReloadPolicy | None = None, feedback_limit: RateLimit | None = None,
          host: str = "127.0.0.1", port: int = 8787, log_level: str = "warning") -> None:
    import uvicorn

    from assay.guard.core import freeze_startup_heap

    app = create_app(guard, access=access, reload=reload, feedback_limit=feedback_limit)
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, log_level=log_level, **_uvicorn_options())


def serve_workers(*, bundle: str, labels: str | None, deadline_ms: float, workers: int, host: str, port: int,
                  db: str | None = None, bundle_dir: str | None = None, pubkeys: list[str] | None = None,
                  feedback_rate: float = 5.0, log_level: str = "warning") -> None:
    """Several worker processes on one port (uvicorn's process manager), one guard each."""
    import os

    import uvicorn

    os.environ["ASSAY_GUARD_BUNDLE"] = bundle
    os.environ["ASSAY_GUARD_LABELS"] = labels or ""
    os.environ["ASSAY_GUARD_DEADLINE_MS"] = str(deadline_ms)
    os.environ["ASSAY_GUARD_DB"] = db or ""
    os.environ["ASSAY_GUARD_BUNDLE_DIR"] = bundle_dir or ""
    os.environ["ASSAY_GUARD_PUBKEYS"] = os.pathsep.join(pubkeys or [])
    os.environ["ASSAY_GUARD_FEEDBACK_RATE"] = str(feedback_rate)
    uvicorn.run("assay.guard.http:app_from_env", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, **_uvicorn_options())
