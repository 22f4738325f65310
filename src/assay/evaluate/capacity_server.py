"""An OpenAI-compatible chat server whose capacity is known exactly, for ``assay bench eval``.

It has ``slots`` parallel slots (like vLLM's ``max_num_seqs`` or llama.cpp's ``--parallel``):
a request waits in a first-come-first-served queue for a free slot, then holds it for its
service time. The service time is drawn from a log-normal distribution (``median_ms``,
``sigma``) seeded by the request's prompt, so the same prompt costs the same whichever client
sends it, and the answer is a fixed function of the prompt. Given the prompt list, the best any
client can do is therefore computed, not measured (:func:`ideal_rate`): it is the rate of a
client that has every request queued at the server from the start.

    python -m assay.evaluate.capacity_server --port 8123 --slots 64 --median-ms 250 --sigma 0.3

A bare ASGI app on uvicorn (httptools, uvloop where available): this server's own work per
request stays far below the service time it simulates.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import math
import random
from typing import Any

MAX_BODY_BYTES = 1 << 20  # a chat request of the bench is a few hundred bytes


def service_time_s(prompt: str, median_ms: float, sigma: float) -> float:
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    return median_ms / 1000 * math.exp(sigma * random.Random(seed).gauss(0.0, 1.0))


def answer(prompt: str) -> str:
    """A fixed answer per prompt: about one in five is a refusal, so a refusal scorer has work."""
    h = hashlib.sha256(prompt.encode()).hexdigest()
    if int(h[:2], 16) < 51:
        return "I'm sorry, but I can't help with that."
    return f"Here is a short answer ({h[:12]})."


def ideal_rate(prompts: list[str], slots: int, median_ms: float, sigma: float) -> dict[str, float]:
    """The best throughput on ``prompts``: all requests queued at once, in order, served by
    ``slots`` slots first-come-first-served (the tail, when slots fall idle, included), and the
    steady-state rate ``slots / mean service time`` beside it."""
    times = [service_time_s(p, median_ms, sigma) for p in prompts]
    free = [0.0] * slots
    finish = 0.0
    for t in times:
        start = heapq.heappop(free)
        heapq.heappush(free, start + t)
        finish = max(finish, start + t)
    return {"ideal_items_per_s": len(times) / finish, "steady_state_rps": slots / (sum(times) / len(times)),
            "makespan_s": finish, "mean_service_ms": 1000 * sum(times) / len(times)}


def build_app(slots: int, median_ms: float, sigma: float) -> Any:
    state: dict[str, Any] = {"sem": None, "served": 0}

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES:
                return await _json(send, 413, {"error": {"message": f"request body over {MAX_BODY_BYTES} bytes"}})
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "GET" and path.endswith("/models"):
            return await _json(send, 200, {"object": "list", "data": [{"id": "bench", "object": "model", "owned_by": "assay"}]})
        if scope["method"] != "POST" or not path.endswith("/chat/completions"):
            return await _json(send, 404, {"error": {"message": f"no route {path}"}})
        try:
            request = json.loads(body)
            prompt = request["messages"][-1]["content"]
            if not isinstance(prompt, str):
                raise TypeError("content is not a string")
            prompt.encode()  # a lone surrogate cannot be hashed into a service time: 400, not 500
        except (ValueError, KeyError, IndexError, TypeError, RecursionError) as e:
            return await _json(send, 400, {"error": {"message": f"bad request: {e}"}})
        if state["sem"] is None:
            state["sem"] = asyncio.Semaphore(slots)
        async with state["sem"]:
            await asyncio.sleep(service_time_s(prompt, median_ms, sigma))
        state["served"] += 1
        text = answer(prompt)
        await _json(send, 200, {
            "id": f"cmpl-{state['served']}", "object": "chat.completion", "created": 0, "model": request.get("model", "bench"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()),
                      "total_tokens": len(prompt.split()) + len(text.split())},
        })  # fmt: skip

    return app


async def _json(send: Any, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--slots", type=int, default=64)
    p.add_argument("--median-ms", type=float, default=250.0)
    p.add_argument("--sigma", type=float, default=0.3)
    a = p.parse_args(argv)
    if a.slots < 1 or a.median_ms <= 0 or a.sigma < 0:
        p.error("--slots >= 1, --median-ms > 0 and --sigma >= 0")
    uvicorn.run(build_app(a.slots, a.median_ms, a.sigma), host="127.0.0.1", port=a.port, log_level="warning",
                access_log=False, http="httptools", lifespan="off", backlog=4096)


if __name__ == "__main__":
    main()
