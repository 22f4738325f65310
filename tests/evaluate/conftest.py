"""A real HTTP server on 127.0.0.1 that misbehaves on request (by model name), for testing the
engine against 429 storms, 5xx, timeouts, garbage and malformed JSON. It speaks the OpenAI chat
API and a tiny recommender API; it runs in a thread of the test process and is stopped after."""

import asyncio
import threading
import time
from collections import Counter, defaultdict

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse


def _completion(text: str, prompt: str) -> dict:
    return {
        "id": "cmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split()), "total_tokens": 0},
    }


def build_app(state: dict):
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body.get("model", "ok")
        prompt = body["messages"][-1]["content"]
        state["requests"][model] += 1
        if model == "ok":
            return _completion(f"Sure. Answer to: {prompt[:30]}", prompt)
        if model == "refuser":
            return _completion("I'm sorry, but I cannot help with that.", prompt)
        if model == "letter-b":
            return _completion("B", prompt)
        if model.startswith("delay"):
            await asyncio.sleep(float(model.split("-")[1]))
            return _completion(f"Answer to: {prompt[:30]}", prompt)
        if model == "storm":  # every prompt: two 429s, then an answer
            state["storm"][prompt] += 1
            if state["storm"][prompt] <= 2:
                return JSONResponse({"error": "rate limited"}, status_code=429, headers={"Retry-After": "0.05"})
            return _completion(f"Answer to: {prompt[:30]}", prompt)
        if model == "always429":
            return JSONResponse({"error": "rate limited"}, status_code=429)
        if model == "error500":
            return JSONResponse({"error": "boom"}, status_code=500)
        if model == "garbage":
            return PlainTextResponse("<html>this is not json", status_code=200)
        if model == "nochoices":
            return {"id": "x", "object": "chat.completion"}
        if model == "slow":
            await asyncio.sleep(5)
            return _completion("late", prompt)
        return JSONResponse({"error": f"unknown model {model}"}, status_code=404)

    @app.get("/recommend")
    async def recommend_probe():
        return {"ok": True}

    @app.post("/recommend")
    async def recommend(request: Request):
        body = await request.json()
        user = int(body["user_id"])
        k = int(body["k"])
        state["requests"]["recommend"] += 1
        return {"items": [{"item_id": (user + j) % 20} for j in range(k)]}

    return app


class StubServer:
    def __init__(self, port: int) -> None:
        import uvicorn

        self.state = {"requests": Counter(), "storm": defaultdict(int)}
        self.port = port
        config = uvicorn.Config(build_app(self.state), host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "StubServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stub server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def stub_server(free_port):
    server = StubServer(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def dead_url(free_port) -> str:
    """A loopback port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


@pytest.fixture(scope="session")
def smollm2_server():
    """One real llama.cpp server on the bundled SmolLM2 for the whole test session."""
    from assay.evaluate.serve import ModelServer

    server = ModelServer("smollm2", n_ctx=1024).start()
    yield server
    server.stop()


@pytest.fixture
def stub_server_factory(free_port):
    """``stub_server_factory(port=None)`` -> a stub server not yet started, for tests that start,
    kill and restart their own (importing ``StubServer`` from ``conftest`` by name is ambiguous
    when several test folders have one)."""
    return lambda port=None: StubServer(port or free_port())
