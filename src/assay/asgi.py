"""What every HTTP service of assay shares at the ASGI layer: a deadline on reading the request
body.

uvicorn bounds how long an idle keep-alive connection may stay, but not how long a request's body
may take: a client that sends ``Content-Length: 1000000`` and then a byte a minute (or nothing)
holds a connection, and a worker's handler, for as long as it likes. :class:`BodyDeadline`
wraps ``receive`` so that the whole body must have arrived within ``ASSAY_BODY_TIMEOUT_S`` seconds
(30 by default) of the request's start; past that the client gets a 408 with ``Connection: close``
and the handler sees a disconnect. The control plane (``assay server``), the guard (``assay guard
serve``) and the trace witness (``assay trace witness``) all wrap their apps in it; it is a
foundation module so that the guard (an engine) and the trace (a foundation) may import it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from assay.config import int_setting

BODY_TIMEOUT_S = 30
MAX_BODY_TIMEOUT_S = 3600

# (scope, send, status, message) -> the refusal sent; the service decides the shape of its errors
Refusal = Callable[[dict, Callable[[dict], Awaitable[None]], int, str], Awaitable[None]]


def body_timeout_s() -> int:
    """``ASSAY_BODY_TIMEOUT_S`` (1-3,600 whole seconds; 30 when unset), or bad input naming it."""
    return int_setting("ASSAY_BODY_TIMEOUT_S", BODY_TIMEOUT_S, 1, MAX_BODY_TIMEOUT_S)


async def _send_refusal(send: Callable[[dict], Awaitable[None]], status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def json_refusal(scope: dict, send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    """``{"error": message}`` (the guard's error shape)."""
    await _send_refusal(send, status, json.dumps({"error": message}).encode(), b"application/json")


async def text_refusal(scope: dict, send: Callable[[dict], Awaitable[None]], status: int, message: str) -> None:
    """``message`` as one line of plain text (the witness's, as tlog-witness answers)."""
    await _send_refusal(send, status, f"{message}\n".encode(), b"text/plain; charset=utf-8")


class BodyDeadline:
    """ASGI middleware: the request body must arrive within ``timeout_s`` of the request's start.

    Only reads of the body are bounded: once its last part arrived, ``receive`` (which a streaming
    response awaits for a disconnect) passes through untouched. When the deadline passes while the
    app waits for more body, ``refuse`` sends 408 (with ``Connection: close``: the rest of the body
    is never read) unless a response has already started; the app is then told the client went
    away, whatever it sends afterwards is dropped, and the error it raises for the lost body
    (Starlette's ``ClientDisconnect``) ends here instead of in the server's log.
    """

    def __init__(self, app: Any, *, timeout_s: float | None = None, refuse: Refusal = json_refusal):
        self.app = app
        self.timeout_s = float(timeout_s if timeout_s is not None else body_timeout_s())
        if not self.timeout_s > 0:
            raise ValueError(f"the body timeout must be positive, got {timeout_s!r}")
        self.refuse = refuse

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        body_done = started = timed_out = False

        async def bounded_receive() -> dict:
            nonlocal body_done, timed_out
            if body_done or timed_out:
                return await receive() if body_done else {"type": "http.disconnect"}
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                if not started:
                    await self.refuse(scope, send, 408, f"the request body did not arrive within {self.timeout_s:g} s")
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if timed_out:
                return  # the 408 (or the response already under way) was the answer; the connection closes
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not timed_out:
                raise
