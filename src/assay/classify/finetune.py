"""Fine-tuning the MiniLM encoder for one head (LoRA), and the adapter file it leaves.

A frozen, mean-pooled MiniLM puts "I don't think X are disgusting" next to "X are disgusting":
the pooled vector barely moves with the negation. For ``hate`` the encoder is therefore
fine-tuned with LoRA (low-rank updates of the attention and feed-forward matrices; ``peft``
at training time only) on the task's training rows, with a linear probe on the normalised
mean-pooled embedding. The probe is thrown away: the committed head is fitted afterwards by
the ordinary head recipe (:func:`assay.classify.train.fit_head`) on the *fine-tuned*
embeddings of every training row, calibrated and thresholded on validation as every head is.

The adapter is stored as plain float16 arrays (``models/<name>.adapter.npz``: per adapted
module ``<module>.lora_A`` (r x in) and ``<module>.lora_B`` (out x r), and ``scaling``), never a
pickle. At load it is merged into the packaged MiniLM weights (``W + scaling * B @ A``) and the
merged model is exported to ONNX once, keyed by the adapter's hash
(:func:`assay.classify.encoder.export_onnx`). Its sha256 is part of the classifier's version.

Contrast templates: ``hate_contrast.jsonl`` fills a few sentence templates with identities. A
hash-chosen quarter of the templates (:func:`heldout_template`) is never trained on, by the
adapter or the head; accuracy there measures whether the head generalises to unseen phrasings
and is one of the two validation figures settings are chosen on (never the functional suite).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from assay.errors import BadInput

# Modules of each BERT layer that get a low-rank update (names as in transformers' BertModel).
LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
# Identity terms the contrast cases are written with (the functional suite's identities).
IDENTITIES = ("black people", "disabled people", "gay people", "jewish people", "trans people", "muslims", "immigrants", "women")
HELDOUT_TEMPLATE_FRACTION = 0.25
_IDENTITY_RE = re.compile("|".join(re.escape(i) for i in IDENTITIES), re.IGNORECASE)


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning recipe. ``davidson_rows``: Davidson training rows the adapter sees (every
    hate-voted row, the rest sampled); ``None`` = all of them."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.1
    max_tokens: int = 64
    davidson_rows: int | None = 4000
    epochs: float = 2.0
    batch: int = 32
    lr: float = 5e-4
    contrast_repeat: int = 3
    seed: int = 0
    # A uniform model soup (Wortsman et al. 2022): train once per seed listed here (``seed``
    # ignored) and average the weight deltas (:func:`soup`). Empty: one run with ``seed``.
    soup_seeds: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.soup_seeds:  # a single run records what it always did (recipe E's record)
            del out["soup_seeds"]
        else:
            out["soup_seeds"] = list(self.soup_seeds)
        return out


# The chosen recipe per fine-tuned head (chosen on validation; see docs/classify.md and hate.md).
FINETUNE_FOR: dict[str, FinetuneConfig] = {"hate": FinetuneConfig(contrast_repeat=1)}


def contrast_template(text: str) -> str:
    """The contrast case's template: lower-cased with the identity replaced by ``{who}``."""
    return _IDENTITY_RE.sub("{who}", text.lower()).strip()


def heldout_template(text: str, fraction: float = HELDOUT_TEMPLATE_FRACTION) -> bool:
    """True for a contrast case whose template is in the held-out quarter (never trained on)."""
    digest = hashlib.sha256(f"contrast-template:{contrast_template(text)}".encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < fraction


def heldout_mask(sources: list[str], texts: list[str]) -> np.ndarray:
    """Rows of the task that are contrast cases of a held-out template."""
    return np.asarray([s == "assay_contrast" and heldout_template(t) for s, t in zip(sources, texts, strict=True)], dtype=bool)


# -- the adapter file ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter as loaded from its npz: arrays, their sha256 (``arrays_sha256``), the file."""

    arrays: dict[str, np.ndarray]
    sha256: str
    path: Path | None = None

    @property
    def short(self) -> str:
        return self.sha256[:16]


def adapter_from_arrays(arrays: dict[str, np.ndarray], path: Path | None = None) -> Adapter:
    from assay.classify.model import arrays_sha256

    if "scaling" not in arrays or not any(k.endswith(".lora_A") for k in arrays):
        raise BadInput(f"{path or 'adapter'}: not a LoRA adapter (needs scaling and <module>.lora_A/lora_B arrays)")
    return Adapter(arrays, arrays_sha256(arrays), path)


def load_adapter(path: Path, expected_sha256: str | None = None) -> Adapter:
    """Read an adapter npz; with ``expected_sha256`` (from the head's JSON), refuse a file whose
    arrays hash differently (changed or corrupt) rather than serve other weights."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"adapter file {path} is missing", hint="retrain with: assay classify train hate")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile / numpy raise several types for a damaged file
        raise BadInput(f"{path}: not a readable adapter npz ({type(e).__name__}: {e})") from e
    adapter = adapter_from_arrays(arrays, path)
    if expected_sha256 and adapter.sha256 != expected_sha256:
        raise BadInput(f"{path}: adapter arrays do not match the adapter_sha256 in the head's JSON (file changed or corrupt)",
                       hint="restore the committed file or retrain: assay classify train hate")
    return adapter


def soup(adapters: list[Adapter]) -> Adapter:
    """The uniform soup of LoRA adapters of one encoder: the adapter whose merge is
    ``W + mean_i(scaling * B_i @ A_i)``, written as one LoRA adapter of rank ``sum(r_i)`` --
    ``B = [B_1 .. B_k]``, ``A = [A_1; ..; A_k]``, ``scaling / k`` -- so it is served exactly as a
    single adapter is (merged once by :func:`merge_into`: one encoder, one forward pass). The
    float16 matrices are kept as they are (only the float32 scaling is divided): no rounding."""
    if not adapters:
        raise BadInput("a soup needs at least one adapter")
    if len(adapters) == 1:
        return adapters[0]
    first = adapters[0].arrays
    keys = sorted(first)
    scaling = float(first["scaling"])
    for adapter in adapters[1:]:
        if sorted(adapter.arrays) != keys or float(adapter.arrays["scaling"]) != scaling:
            raise BadInput("adapters of a soup must adapt the same modules with the same scaling")
    out: dict[str, np.ndarray] = {"scaling": np.asarray(scaling / len(adapters), dtype=np.float32)}
    for key in keys:
        if key.endswith(".lora_A"):
            out[key] = np.concatenate([a.arrays[key] for a in adapters], axis=0)
        elif key.endswith(".lora_B"):
            out[key] = np.concatenate([a.arrays[key] for a in adapters], axis=1)
    return adapter_from_arrays(out)


def merge_into(state: dict, adapter: Adapter) -> dict:
    """``state`` (a BertModel state dict of torch tensors) with every adapted weight replaced by
    ``W + scaling * B @ A``. Keys may carry a prefix (sentence-transformers' wrapper)."""
    import torch

    scaling = float(adapter.arrays["scaling"])
    out = dict(state)
    modules = sorted(k[: -len(".lora_A")] for k in adapter.arrays if k.endswith(".lora_A"))
    for module in modules:
        matches = [k for k in state if k.endswith(f"{module}.weight")]
        if len(matches) != 1:
            raise BadInput(f"adapter module {module!r} matches {len(matches)} weights of the encoder (not this model's adapter)")
        key = matches[0]
        a = torch.from_numpy(adapter.arrays[f"{module}.lora_A"].astype(np.float32))
        b = torch.from_numpy(adapter.arrays[f"{module}.lora_B"].astype(np.float32))
        if (b.shape[0], a.shape[1]) != tuple(state[key].shape):
            raise BadInput(f"adapter module {module!r}: shape {(b.shape[0], a.shape[1])} does not fit weight {tuple(state[key].shape)}")
        out[key] = state[key] + scaling * (b @ a)
    return out


def merged_model(adapter: Adapter | None, path: Path | None = None):  # type: ignore[no-untyped-def]
    """The packaged MiniLM (transformers ``BertModel``, eval mode) with the adapter merged in."""
    from transformers import AutoModel

    from assay.classify.encoder import model_dir

    model = AutoModel.from_pretrained(str(path or model_dir())).eval()
    if adapter is not None:
        model.load_state_dict(merge_into(model.state_dict(), adapter))
    return model


# -- training -----------------------------------------------------------------------------------
def training_rows(task, config: FinetuneConfig) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Indices the adapter trains on: training split only; Davidson (every hate-voted row, the
    rest sampled to ``davidson_rows``), every other source, contrast cases repeated; contrast
    cases of held-out templates never."""
    rng = np.random.default_rng(config.seed)
    sources = np.asarray([s.split(":")[0] for s in task.source])
    train = task.subset("train")
    train = train[~heldout_mask(list(sources[train]), [task.texts[i] for i in train])]
    davidson = train[sources[train] == "davidson"]
    if config.davidson_rows is not None and config.davidson_rows < len(davidson):
        hateish, rest = davidson[task.target[davidson] > 0], davidson[task.target[davidson] == 0]
        if len(hateish) >= config.davidson_rows:
            davidson = rng.choice(hateish, config.davidson_rows, replace=False)
        else:
            davidson = np.concatenate([hateish, rng.choice(rest, config.davidson_rows - len(hateish), replace=False)])
    other = train[sources[train] != "davidson"]
    contrast = other[sources[other] == "assay_contrast"]
    return np.sort(np.concatenate([davidson, other, *([contrast] * max(0, config.contrast_repeat - 1))]))


def finetune(task, prepared: list[str], config: FinetuneConfig, progress: Callable[[str], None] | None = None) -> tuple[Adapter, dict]:  # type: ignore[no-untyped-def]
    """Fit a LoRA adapter (and a throw-away linear probe) on ``prepared`` texts of ``task``;
    returns the adapter (float16 arrays) and a record of the run. Seeded; ~0.7-1 s a step on
    two cores (2 epochs of ~5,000 rows: about 5-7 minutes)."""
    import torch
    from transformers import AutoTokenizer

    from assay.classify.encoder import model_dir

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        from assay.errors import Unavailable

        raise Unavailable("fine-tuning the encoder needs peft", hint="pip install 'assay[ml]'") from e
    torch.manual_seed(config.seed)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    rng = np.random.default_rng(config.seed)
    rows = training_rows(task, config)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    base = merged_model(None)
    peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=list(LORA_TARGETS))
    encoder = get_peft_model(base, peft_config)
    encoder.train()
    probe = torch.nn.Linear(base.config.hidden_size, 1)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(probe.parameters())
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    steps = max(1, int(config.epochs * len(rows) / config.batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=steps, pct_start=0.1)
    target = torch.tensor(task.target, dtype=torch.float32)
    weight = torch.tensor(task.weight, dtype=torch.float32)

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=config.max_tokens, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    started, step, losses = time.perf_counter(), 0, []
    while step < steps:
        order = rng.permutation(rows)
        for start in range(0, len(order), config.batch):
            if step >= steps:
                break
            idx = order[start : start + config.batch]
            logits = probe(embed([prepared[i] for i in idx]) * 10).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target[idx], weight=weight[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if progress is not None and step % 25 == 0:
                progress(f"fine-tuning the encoder: step {step}/{steps}, loss {np.mean(losses[-25:]):.3f}, {time.perf_counter() - started:.0f} s")
    arrays = adapter_arrays(encoder, config)
    record = {"config": config.to_dict(), "rows": len(rows), "steps": steps, "seconds": round(time.perf_counter() - started, 1),
              "final_loss": round(float(np.mean(losses[-25:])), 4), "targets": list(LORA_TARGETS)}
    return adapter_from_arrays(arrays), record


def finetune_recipe(task, prepared: list[str], config: FinetuneConfig,  # type: ignore[no-untyped-def]
                    progress: Callable[[str], None] | None = None) -> tuple[Adapter, dict]:
    """The recipe's adapter: one :func:`finetune` run, or with ``config.soup_seeds`` one run per
    seed (otherwise the same settings) and their :func:`soup`; the record lists every run."""
    from dataclasses import replace

    if not config.soup_seeds:
        return finetune(task, prepared, config, progress)
    adapters, runs = [], []
    for seed in config.soup_seeds:
        if progress is not None:
            progress(f"soup: seed {seed} ({len(adapters) + 1}/{len(config.soup_seeds)})")
        adapter, record = finetune(task, prepared, replace(config, seed=seed, soup_seeds=()), progress)
        adapters.append(adapter)
        runs.append({**record, "adapter_sha256": adapter.sha256})
    record = {"config": config.to_dict(), "rows": runs[0]["rows"], "steps": sum(r["steps"] for r in runs),
              "seconds": round(sum(r["seconds"] for r in runs), 1), "targets": list(LORA_TARGETS),
              "soup": {"seeds": list(config.soup_seeds), "runs": runs}}
    return soup(adapters), record


def adapter_arrays(peft_model, config: FinetuneConfig) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """The peft model's LoRA matrices as ``<module>.lora_A`` / ``.lora_B`` float16 arrays (module
    names as in ``BertModel``, e.g. ``encoder.layer.0.attention.self.query``) plus ``scaling``."""
    out: dict[str, np.ndarray] = {}
    for key, value in peft_model.state_dict().items():
        match = re.search(r"(encoder\.layer\.\d+\..+)\.lora_([AB])\.default\.weight$", key)
        if match:
            out[f"{match.group(1)}.lora_{match.group(2)}"] = value.detach().cpu().numpy().astype(np.float16)
    if not out:
        raise RuntimeError("the fine-tuned model has no LoRA weights (peft naming changed?)")
    out["scaling"] = np.asarray(config.alpha / config.rank, dtype=np.float32)
    return out


def save_adapter(path: Path, adapter: Adapter) -> None:
    from assay.classify.train import save_npz

    save_npz(path, adapter.arrays)
