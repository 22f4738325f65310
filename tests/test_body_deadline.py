"""A request body must arrive in time on every HTTP service (``assay.asgi.BodyDeadline``).

A probe sent ``Content-Length: 1000`` and ten bytes, then nothing, to the control plane, the guard
and the witness: uvicorn has no body-read timeout, so the guard and the witness held the
connection and the handler for as long as the client liked (the control plane had a fixed 30 s of
its own). Each service now answers 408 with ``Connection: close`` after ``ASSAY_BODY_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest

from assay.asgi import BodyDeadline, body_timeout_s
from assay.errors import BadInput

SHORT = 0.3


async def _slow_post(app, path: str, headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, dict, bytes, float]:
    """POST ``path`` promising 1,000 bytes and sending 10: (status, headers, body, seconds taken)."""
    stalled = asyncio.Event()  # never set: the rest of the body never comes
    parts = iter([{"type": "http.request", "body": b'{"request"', "more_body": True}])
    sent: list[dict] = []

    async def receive() -> dict:
        part = next(parts, None)
        if part is not None:
            return part
        await stalled.wait()
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"test"), (b"content-length", b"1000"), (b"content-type", b"application/json"),
                         *headers],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80)}
    started = time.monotonic()
    await asyncio.wait_for(app(scope, receive, send), timeout=10)  # before the fix: waits here forever
    took = time.monotonic() - started
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body, took


def _guard():
    from assay.guard import Guard
    from assay.guard.cli import resolve_bundle_path
    from assay.policy import load_bundle
    from assay.store.labels import InMemoryLabelStore

    return Guard(load_bundle(resolve_bundle_path("builtin:feed")), InMemoryLabelStore())


def _witness(tmp_path):
    from assay.trace.witness import Witness

    return Witness.init(tmp_path / "w", "witness.example/w1")


def test_the_control_plane_answers_a_stalled_body_with_408(tmp_path):
    from assay.govern.registry import Actor
    from assay.server.app import create_app
    from assay.server.auth import create_token
    from assay.store import open_store

    store = open_store()
    token = create_token(store, Actor("root", "admin", "test"), name="erin", role="engineer")["token"]
    app = create_app(store, body_timeout_s=SHORT)
    status, headers, body, took = asyncio.run(_slow_post(app, "/api/v1/datasets",
                                                         [(b"authorization", f"Bearer {token}".encode())]))
    assert status == 408 and headers["connection"] == "close", (status, body)
    assert "did not arrive within 0.3 s" in orjson.loads(body)["error"]
    assert SHORT <= took < 5
    store.close()


@pytest.mark.parametrize("path", ["/v1/guard", "/v1/guard/feedback"])
def test_the_guard_answers_a_stalled_body_with_408(path):
    """``/v1/guard`` is served at the ASGI layer, the feedback route by FastAPI: both are bounded."""
    from assay.guard.http import create_app

    app = create_app(_guard(), access=None, body_timeout_s=SHORT)
    status, headers, body, took = asyncio.run(_slow_post(app, path))
    assert status == 408 and headers["connection"] == "close", (status, body)
    assert orjson.loads(body) == {"error": "the request body did not arrive within 0.3 s"}
    assert SHORT <= took < 5


def test_the_witness_answers_a_stalled_body_with_408(tmp_path):
    from assay.trace.witness import create_app

    status, headers, body, took = asyncio.run(_slow_post(create_app(_witness(tmp_path), body_timeout_s=SHORT),
                                                         "/add-checkpoint"))
    assert status == 408 and headers["connection"] == "close" and headers["content-type"].startswith("text/plain")
    assert body == b"the request body did not arrive within 0.3 s\n"
    assert SHORT <= took < 5


def test_a_stalled_body_over_a_real_socket_gets_408_and_the_connection_closes(tmp_path, serve_asgi):
    """The witness under uvicorn, as ``assay trace witness`` runs it: the stalled client is answered
    and disconnected, and the server goes on serving others."""
    import httpx

    from assay.trace.witness import create_app

    with serve_asgi(create_app(_witness(tmp_path), body_timeout_s=0.5)) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\nContent-Length: 60000\r\n\r\nold 0\n")
            started = time.monotonic()
            answer = b""
            while chunk := client.recv(65536):  # ends when the server closes the connection
                answer += chunk
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"connection: close" in answer.lower() and answer.endswith(b"did not arrive within 0.5 s\n")
        assert 0.4 <= took < 5
        assert httpx.get(f"http://127.0.0.1:{port}/{'0' * 64}/checkpoint", timeout=5).status_code == 404


def test_only_the_body_is_bounded_not_the_handler():
    """A body that arrived in time is served however long the handler takes after it (a slow
    route, or a streaming response waiting on ``receive`` for a disconnect, is not cut off)."""
    async def app(scope, receive, send):
        message = await receive()
        assert message == {"type": "http.request", "body": b"{}", "more_body": False}
        await asyncio.sleep(SHORT * 2)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(BodyDeadline(app, timeout_s=SHORT)({"type": "http", "method": "POST", "path": "/"}, receive, send))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"


def test_the_timeout_is_a_setting(monkeypatch):
    assert body_timeout_s() == 30
    monkeypatch.setenv("ASSAY_BODY_TIMEOUT_S", "7")
    assert body_timeout_s() == 7 and BodyDeadline(lambda *a: None).timeout_s == 7.0
    for bad in ("0", "soon", "100000"):
        monkeypatch.setenv("ASSAY_BODY_TIMEOUT_S", bad)
        with pytest.raises(BadInput, match="ASSAY_BODY_TIMEOUT_S"):
            body_timeout_s()
