"""Targets: what an evaluation asks. An OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp,
hosted APIs), the bundled SmolLM2 on a llama.cpp server that assay starts itself, an in-process
transformers model, recorded responses (replay) and recommenders (a Python callable or an HTTP
endpoint returning ranked lists).

Every call returns an :class:`Output` or raises :class:`TargetError` with a short ``kind``
(``timeout``, ``http_429``, ``http_5xx``, ``http_4xx``, ``connect``, ``malformed``, ``invalid``)
that the report counts per item.

Target kinds are registered by name in :data:`TARGETS` (``@register_target("kind")`` on a
:class:`Target` subclass, or on a factory that returns one; a suite's ``target`` options are its
keyword arguments); ``assay.testing.check_target`` checks a new one (docs/extending.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import math
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from assay.errors import BadInput, Unavailable
from assay.evaluate.concurrency import AdaptiveLimiter
from assay.evaluate.items import EvalItem
from assay.plugins import Registry, check_factory


@dataclass
class Output:
    text: str | None = None
    logprobs: list[float] | None = None  # one total log-likelihood per text (loglik task)
    ranked: list[Any] | None = None  # recommend task
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_s: float = 0.0
    attempts: int = 1
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class TargetError(Exception):
    def __init__(self, kind: str, message: str, attempts: int = 1):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.attempts = attempts


@dataclass
class TargetStats:
    requests: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


class Target:
    """Base: ``call`` one item; ``start``/``close`` around a run."""

    kind = "base"
    name = "target"
    default_concurrency = 1

    def __init__(self) -> None:
        self.stats = TargetStats()

    def fingerprint(self) -> dict[str, Any]:
        """Identity for the response cache and the report (no secrets)."""
        return {"kind": self.kind, "name": self.name}

    def model_hashes(self) -> dict[str, str]:
        return {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def call(self, item: EvalItem) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_target(name: str, obj: Any) -> None:
    check_factory(obj, Target, "a target is a Target subclass or a factory returning one")


TARGETS: Registry[Any] = Registry("target kind", "assay.targets", _check_target)
register_target = TARGETS.register  # the decorator: @register_target("kind")


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP


class OpenAIChatTarget(Target):
    """Async client for ``/v1/chat/completions`` (and ``/v1/completions`` with echo+logprobs for
    log-likelihood), with AIMD concurrency, retries with full jitter, and per-request timeouts."""

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        params: dict[str, Any] | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        initial_concurrency: int = 8,
        max_concurrency: int = 64,
        backoff_base_s: float = 0.25,
        backoff_cap_s: float = 8.0,
        price_input_per_mtok: float = 0.0,
        price_output_per_mtok: float = 0.0,
        dead_after: int = 8,
    ) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.params = dict(params or {})
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.initial_concurrency = int(initial_concurrency)
        self.max_concurrency = int(max_concurrency)
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.price_in = price_input_per_mtok
        self.price_out = price_output_per_mtok
        self.dead_after = dead_after
        self.limiter: AdaptiveLimiter | None = None
        self._client = None
        self._connect_failures_in_a_row = 0
        self._successes = 0
        self._rng = random.Random(0)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "base_url": self.base_url, "model": self.model, "params": self.params}

    def _open_session(self) -> None:
        """An aiohttp session with room for the limiter's whole window. aiohttp rather than httpx:
        httpcore's pool scans every connection for every request, which at 128 connections cost
        about 10 ms of CPU a request here (0.4 ms with aiohttp) and capped a 64-slot server at
        a quarter of its capacity."""
        import aiohttp

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=self.max_concurrency + 4),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(5.0, self.timeout_s)),
        )
        self.limiter = AdaptiveLimiter(initial=min(self.initial_concurrency, self.max_concurrency), maximum=self.max_concurrency)

    async def _probe(self, url: str, what: str, hint: str | None = None) -> None:
        """Fail fast and clearly when nothing listens at ``url``: any HTTP answer means reachable;
        a slow answer is not proof of death (per-request timeouts take over)."""
        import aiohttp

        try:
            async with self._client.get(url, timeout=aiohttp.ClientTimeout(total=min(10.0, self.timeout_s))) as resp:
                await resp.read()
        except aiohttp.ClientConnectorError as e:
            await self.close()
            raise Unavailable(f"{what} {url.rsplit('/models', 1)[0]} is unreachable: {e}", hint=hint) from None
        except (TimeoutError, aiohttp.ClientError):
            pass

    async def start(self) -> None:
        self._open_session()
        await self._probe(f"{self.base_url}/models", "model endpoint",
                          hint="start the server (e.g. `assay models serve smollm2`) or fix target.base_url")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_cap_s)
        return self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt))

    async def _post(self, path: str, payload: dict[str, Any]) -> tuple[dict[str, Any], int, float]:
        """POST with retries; returns (json, attempts, latency of the successful attempt)."""
        import aiohttp

        assert self._client is not None and self.limiter is not None, "target not started"
        last: TargetError | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            retry_after = None
            await self.limiter.acquire()
            outcome = "neutral"
            started = time.perf_counter()
            try:
                self.stats.requests += 1
                async with self._client.post(f"{self.base_url}{path}", json=payload) as resp:
                    raw = await resp.read()
                    status, retry_header = resp.status, resp.headers.get("retry-after", "")
                latency = time.perf_counter() - started
                text = raw.decode("utf-8", "replace")
                if status == 429 or status >= 500:
                    outcome = "overload"
                    kind = "http_429" if status == 429 else "http_5xx"
                    last = TargetError(kind, f"HTTP {status}: {text[:200]}", attempt + 1)
                    try:
                        retry_after = float(retry_header)
                    except ValueError:
                        retry_after = None
                elif status >= 400:
                    raise TargetError("http_4xx", f"HTTP {status}: {text[:300]}", attempt + 1)
                else:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        last = TargetError("malformed", f"response is not JSON: {text[:120]!r}", attempt + 1)
                    else:
                        outcome = "ok"
                        self._connect_failures_in_a_row = 0
                        self._successes += 1
                        return body, attempt + 1, latency
            except TimeoutError:
                outcome = "overload"
                last = TargetError("timeout", f"no answer within {self.timeout_s:g}s", attempt + 1)
            except aiohttp.ClientError as e:
                outcome = "overload"
                last = TargetError("connect", f"{type(e).__name__}: {e}", attempt + 1)
                if isinstance(e, aiohttp.ClientConnectorError):
                    self._connect_failures_in_a_row += 1
                    if self._connect_failures_in_a_row >= self.dead_after:
                        raise Unavailable(
                            f"model endpoint {self.base_url} went away: {self._connect_failures_in_a_row} "
                            "connection failures in a row",
                            hint="restart the server, then `assay eval resume RUN` runs only what is missing",
                        ) from None
            finally:
                await self.limiter.release(outcome)
            await asyncio.sleep(self._backoff(attempt, retry_after))
        assert last is not None
        raise last

    def _account(self, body: dict[str, Any], out: Output) -> None:
        usage = body.get("usage") or {}
        out.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        out.completion_tokens = int(usage.get("completion_tokens") or 0)
        out.cost = (out.prompt_tokens * self.price_in + out.completion_tokens * self.price_out) / 1e6
        self.stats.prompt_tokens += out.prompt_tokens
        self.stats.completion_tokens += out.completion_tokens
        self.stats.cost += out.cost

    async def call(self, item: EvalItem) -> Output:
        if item.task == "loglik":
            return await self._loglik(item)
        payload = {"model": self.model, "messages": list(item.messages), **self.params}
        body, attempts, latency = await self._post("/chat/completions", payload)
        try:
            text = body["choices"][0]["message"]["content"]
            if text is None:
                text = ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError) as e:
            raise TargetError("malformed", f"no choices[0].message.content in response ({e!r})", attempts) from None
        out = Output(text=text, latency_s=latency, attempts=attempts)
        self._account(body, out)
        return out

    async def _loglik(self, item: EvalItem) -> Output:
        totals = []
        attempts = 0
        latency = 0.0
        out = Output()
        for text in item.fields["texts"]:
            payload = {"model": self.model, "prompt": text, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
            body, a, lat = await self._post("/completions", payload)
            attempts += a
            latency += lat
            try:
                lp = body["choices"][0]["logprobs"]["token_logprobs"]
                prompt_tokens = int((body.get("usage") or {}).get("prompt_tokens") or len(lp) - 1)
                # echo returns the prompt's tokens then the generated one; the first has no logprob
                values = [float(x) for x in lp[:prompt_tokens] if x is not None]
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise TargetError(
                    "malformed",
                    f"no prompt logprobs in /completions response ({e!r}); the server must support echo+logprobs "
                    "(llama.cpp: start with logits_all)",
                    attempts,
                ) from None
            totals.append(float(sum(values)))
            self._account(body, out)
        out.logprobs, out.attempts, out.latency_s = totals, attempts, latency
        return out


_LLAMA_LOCK = threading.Lock()


@register_target("llamacpp")
class LlamaCppTarget(OpenAIChatTarget):
    """The bundled SmolLM2 (or any GGUF) on a llama.cpp server assay starts for the run."""

    kind = "llamacpp"

    def __init__(self, model: str = "smollm2", params: dict[str, Any] | None = None, **kwargs: Any) -> None:
        from assay.evaluate.serve import resolve_model

        self.model_path = resolve_model(model)
        self.server = None
        super().__init__("http://127.0.0.1:0/v1", model=model, params=params, **kwargs)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "model_sha256": self.model_hashes()[self.model_path], "params": self.params}

    def model_hashes(self) -> dict[str, str]:
        if not hasattr(self, "_hash"):
            self._hash = sha256_file(self.model_path)
        return {self.model_path: self._hash}

    async def call(self, item: EvalItem) -> Output:
        if item.task == "loglik":
            started = time.perf_counter()
            totals = await asyncio.to_thread(self._loglik_local, list(item.fields["texts"]))
            self.stats.requests += 1
            return Output(logprobs=totals, latency_s=time.perf_counter() - started)
        if self.server is None:
            await self._ensure_server()
        return await super().call(item)

    def _loglik_local(self, texts: list[str]) -> list[float]:
        """Sentence log-likelihoods from llama.cpp in this process (same GGUF as the server).

        The server's ``echo`` log-probs are shifted by one token in llama-cpp-python (each
        token is scored by the distribution that follows it), so they are computed here from
        the raw logits instead: log P(t_i | t_<i) summed over the sentence."""
        import numpy as np

        with _LLAMA_LOCK:
            if not hasattr(self, "_llama"):
                from llama_cpp import Llama

                from assay.evaluate.llama_server import use_plain_buffers

                use_plain_buffers()
                self._llama = Llama(model_path=self.model_path, logits_all=True, n_ctx=512, verbose=False)
            llm = self._llama
            totals = []
            for text in texts:
                tokens = llm.tokenize(text.encode("utf-8"), add_bos=True)
                llm.reset()
                llm.eval(tokens)
                logits = np.asarray(llm.scores[: len(tokens)], dtype=np.float64)
                logits -= logits.max(axis=1, keepdims=True)
                logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
                totals.append(float(logp[np.arange(len(tokens) - 1), tokens[1:]].sum()))
            return totals

    async def start(self) -> None:
        """The server starts lazily on the first chat call (log-likelihood suites never need it)."""
        self._start_lock = asyncio.Lock()

    async def _ensure_server(self) -> None:
        async with self._start_lock:
            if self.server is not None:
                return
            from assay.evaluate.serve import ModelServer

            self.server = await asyncio.to_thread(lambda: ModelServer(self.model_path).start())
            self.base_url = self.server.base_url
            await OpenAIChatTarget.start(self)

    async def close(self) -> None:
        await super().close()
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self.server = None


# ---------------------------------------------------------------------------------------------
# in-process transformers


@register_target("transformers")
class TransformersTarget(Target):
    """A local model in this process: a GGUF file (loaded through transformers' ``gguf_file=``)
    or a safetensors folder. Greedy generation; runs one item at a time in a worker thread."""

    kind = "transformers"

    def __init__(self, path: str, params: dict[str, Any] | None = None, tokenizer: str | None = None) -> None:
        super().__init__()
        from pathlib import Path

        from assay.evaluate.serve import resolve_model

        self.path = resolve_model(path) if not Path(path).exists() else str(Path(path).resolve())
        self.tokenizer_path = tokenizer
        self.params = dict(params or {})
        self.name = Path(self.path).name
        self._model = None
        self._tok = None
        self._lock = threading.Lock()

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "params": self.params}

    def model_hashes(self) -> dict[str, str]:
        from pathlib import Path

        p = Path(self.path)
        files = [p] if p.is_file() else sorted(x for x in p.iterdir() if x.suffix in (".safetensors", ".bin", ".gguf"))
        return {str(f): sha256_file(str(f)) for f in files}

    def _load(self) -> None:
        if self._model is not None:
            return
        from pathlib import Path

        from assay.errors import require_extra

        require_extra("torch", "llm")
        transformers = require_extra("transformers", "llm")
        p = Path(self.path)
        if p.is_file() and p.suffix == ".gguf":
            kwargs = {"gguf_file": p.name}
            folder = str(p.parent)
        else:
            kwargs, folder = {}, str(p)
        self._tok = transformers.AutoTokenizer.from_pretrained(self.tokenizer_path or folder, **kwargs)
        self._model = transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        self._model.eval()

    def _generate(self, item: EvalItem) -> Output:
        import torch

        with self._lock:
            self._load()
            tok, model = self._tok, self._model
            if item.task == "loglik":
                totals = []
                for text in item.fields["texts"]:
                    ids = tok(text, return_tensors="pt").input_ids
                    with torch.no_grad():
                        logits = model(ids).logits[0, :-1]
                    lp = torch.log_softmax(logits.float(), dim=-1).gather(1, ids[0, 1:, None])[:, 0]
                    totals.append(float(lp.sum()))
                return Output(logprobs=totals)
            if getattr(tok, "chat_template", None):
                ids = tok.apply_chat_template(list(item.messages), add_generation_prompt=True, return_tensors="pt")
                if not isinstance(ids, torch.Tensor):
                    ids = ids["input_ids"]
            else:
                ids = tok(item.prompt_text, return_tensors="pt").input_ids
            max_new = int(self.params.get("max_tokens", 64))
            with torch.no_grad():
                gen = model.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.eos_token_id)
            new = gen[0, ids.shape[1] :]
            return Output(text=tok.decode(new, skip_special_tokens=True), prompt_tokens=int(ids.shape[1]), completion_tokens=int(new.shape[0]))

    async def call(self, item: EvalItem) -> Output:
        started = time.perf_counter()
        out = await asyncio.to_thread(self._generate, item)
        out.latency_s = time.perf_counter() - started
        self.stats.requests += 1
        self.stats.prompt_tokens += out.prompt_tokens
        self.stats.completion_tokens += out.completion_tokens
        return out


# ---------------------------------------------------------------------------------------------
# replay


@register_target("replay")
class ReplayTarget(Target):
    """Recorded responses: the reply is the item's ``response`` field; no model is called."""

    kind = "replay"
    default_concurrency = 256

    def __init__(self, name: str = "replay") -> None:
        super().__init__()
        self.name = name

    async def call(self, item: EvalItem) -> Output:
        text = item.fields.get("response")
        if not isinstance(text, str):
            raise TargetError("invalid", "item has no recorded 'response' to replay")
        self.stats.requests += 1
        return Output(text=text)


# ---------------------------------------------------------------------------------------------
# recommenders


def import_callable(spec: str):
    """``package.module:function`` -> the function."""
    if ":" not in spec:
        raise BadInput(f"callable {spec!r} must look like 'package.module:function'")
    module_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BadInput(f"cannot import {module_name!r} for callable {spec!r}: {e}") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise BadInput(f"{module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise BadInput(f"{spec!r} is not callable")
    return fn


class CallableRecommender(Target):
    """A Python function ``fn(user_id, k) -> list of item ids`` (best first)."""

    kind = "recommender_callable"
    default_concurrency = 4

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec
        self.name = spec
        self.fn = import_callable(spec)

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "callable": self.spec}

    async def call(self, item: EvalItem) -> Output:
        started = time.perf_counter()
        result = self.fn(item.fields["user"], int(item.fields.get("k", 10)))
        if asyncio.iscoroutine(result):
            result = await result
        self.stats.requests += 1
        return Output(ranked=_ranked_list(result), latency_s=time.perf_counter() - started)


def _ranked_list(result: Any) -> list[Any]:
    if isinstance(result, dict):
        result = result.get("items", result.get("recommendations"))
    if not isinstance(result, list | tuple):
        raise TargetError("malformed", f"recommender returned {type(result).__name__}, expected a list of item ids")
    out = []
    for x in result:
        if isinstance(x, dict):
            x = x.get("item_id", x.get("id", x.get("item")))
        if isinstance(x, float) and math.isfinite(x) and x.is_integer():
            x = int(x)
        out.append(x)
    return out


class HttpRecommender(OpenAIChatTarget):
    """POST ``{"user_id": u, "k": k}`` to ``url``; the answer is a list of item ids, or
    ``{"items": [...]}`` (entries may be ids or objects with ``item_id``)."""

    kind = "recommender_http"

    def __init__(self, url: str, **kwargs: Any) -> None:
        base, _, path = url.rstrip("/").rpartition("/")
        super().__init__(base, model="recommender", **kwargs)
        self.path = "/" + path
        self.url = url
        self.name = url

    def fingerprint(self) -> dict[str, Any]:
        return {"kind": self.kind, "url": self.url}

    async def start(self) -> None:
        self._open_session()
        await self._probe(self.url, "recommender endpoint")

    async def call(self, item: EvalItem) -> Output:
        body, attempts, latency = await self._post(self.path, {"user_id": item.fields["user"], "k": int(item.fields.get("k", 10))})
        return Output(ranked=_ranked_list(body), attempts=attempts, latency_s=latency)


# ---------------------------------------------------------------------------------------------


def build_target(spec: dict[str, Any]) -> Target:
    """A target from a suite's ``target`` mapping. ``model_files`` (any kind) lists weights files
    behind an endpoint so the result records their sha256 (the registry matches on them)."""
    spec = dict(spec)
    model_files = spec.pop("model_files", None)
    target = _build_target(spec)
    if model_files:
        from pathlib import Path

        files = [model_files] if isinstance(model_files, str) else list(model_files)
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise BadInput(f"target.model_files: no such file(s) {missing}")
        own = target.model_hashes
        target.model_hashes = lambda: {**own(), **{str(Path(f).resolve()): sha256_file(str(f)) for f in files}}  # type: ignore[method-assign]
    return target


@register_target("openai")
def openai_target(api_key_env: str | None = None, **options: Any) -> OpenAIChatTarget:
    """``openai``: an OpenAI-compatible endpoint; ``api_key_env`` names the variable holding the key."""
    if api_key_env:
        import os

        options["api_key"] = os.environ.get(api_key_env)
        if not options["api_key"]:
            raise BadInput(f"target.api_key_env names {api_key_env!r}, which is not set")
    return OpenAIChatTarget(**options)


@register_target("recommender")
def recommender_target(**spec: Any) -> Target:
    """``recommender``: a Python ``callable`` (``module:function``) or an HTTP ``url``."""
    if "callable" in spec:
        return CallableRecommender(spec["callable"])
    if "url" in spec:
        return HttpRecommender(**spec)
    raise BadInput("recommender target needs 'callable' (module:function) or 'url'")


def _build_target(spec: dict[str, Any]) -> Target:
    kind = spec.pop("kind", None)
    if kind is None:
        raise BadInput(f"target has no 'kind' ({' | '.join(TARGETS)})")
    factory = TARGETS.get(kind)
    try:
        built = factory(**spec)
    except TypeError as e:
        raise BadInput(f"target of kind {kind!r}: {e}") from None
    if not isinstance(built, Target):
        raise BadInput(f"target kind {kind!r} built a {type(built).__name__}, not an assay.evaluate.targets.Target")
    return built


def fingerprint_key(target: Target, item: EvalItem) -> str:
    """Response-cache key: target identity + parameters + the prompt."""
    blob = json.dumps({"target": target.fingerprint(), "item": item.cache_payload()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
