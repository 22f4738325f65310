"""Supervised LoRA fine-tuning with checkpoints that survive ``kill -9``.

A plain PyTorch loop rather than ``transformers.Trainer``: the loop is short, and owning it makes
resume exact — the batch for step *k* is a pure function of (seed, k), and each checkpoint holds
the adapter weights, the optimizer and scheduler state and the RNG states, written to a
temporary folder and renamed into place so a kill never leaves a half checkpoint that resume
would pick up. Losses are computed on the response tokens only (prompt tokens are masked).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assay.errors import BadInput
from assay.mitigate.dataset import Example

CHECKPOINT_PREFIX = "step-"
# Attention and MLP projections of Llama-style decoders (SmolLM2). Attention alone at the CPU
# bench's size left the loss flat and the answers unchanged; with the MLP projections too the
# same step budget moves the loss and the answers (docs/mitigate.md has the figures).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-3
    warmup_steps: int = 5
    max_length: int = 192
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_layers: int = 8  # adapt the top N decoder layers only (0 = all)
    lora_modules: str = ",".join(LORA_TARGETS)  # comma-separated module names (a string: it round-trips through JSON)
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "max_length", "lora_r", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise BadInput(f"training setting {name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise BadInput(f"learning rate must be positive, got {self.learning_rate}")


def encode(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the chat-formatted example and labels with the prompt part masked (-100)."""
    user = [{"role": "user", "content": example.prompt}]
    prompt_ids = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": example.response}], tokenize=True, return_dict=False
    )
    if hasattr(prompt_ids, "input_ids"):  # BatchEncoding on some tokenizer versions
        prompt_ids, full_ids = prompt_ids["input_ids"], full_ids["input_ids"]
    prompt_ids, full_ids = list(prompt_ids), list(full_ids)
    n_prompt = len(prompt_ids) if full_ids[: len(prompt_ids)] == prompt_ids else 0
    if len(prompt_ids) >= max_length:
        # Keep the end of a long prompt (the question) and room for the answer.
        keep = max_length // 2
        full_ids = full_ids[n_prompt - keep : n_prompt] + full_ids[n_prompt:]
        n_prompt = keep
    full_ids = full_ids[:max_length]
    labels = [-100] * min(n_prompt, len(full_ids)) + full_ids[n_prompt:]
    return full_ids, labels[: len(full_ids)]


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Examples of step ``step`` (0-based): consecutive slices of a per-epoch permutation seeded by
    (seed, epoch), so any step's batch can be recomputed after a restart."""
    out = []
    for j in range(batch_size):
        i = step * batch_size + j
        epoch, pos = divmod(i, n)
        perm = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(perm)
        out.append(perm[pos])
    return out


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint (``state.json`` is written last, then the folder renamed)."""
    if not ckpt_dir.is_dir():
        return None
    done = [p for p in ckpt_dir.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").is_file()]
    return max(done, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]), default=None)


@dataclass
class TrainResult:
    steps_done: int
    resumed_from: int  # 0 for a fresh run
    final_loss: float
    first_loss: float
    step_seconds: list[float]
    adapter_dir: Path

    @property
    def median_step_s(self) -> float:
        s = sorted(self.step_seconds)
        return s[len(s) // 2] if s else math.nan


def _collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), -100, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):  # right padding for training
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def response_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean cross-entropy over the response tokens only.

    The vocabulary projection is applied only at the positions that predict a response token
    instead of at every position (``model(labels=...)`` projects all of them): with a 49k-token
    vocabulary that projection is a large share of a small model's compute on a CPU."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = base.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def add_lora(model: Any, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    wanted = [t.strip() for t in config.lora_modules.split(",") if t.strip()]
    targets = [t for t in wanted if t in names]
    if not targets:
        raise BadInput(f"the model has none of the modules LoRA should adapt ({', '.join(wanted) or 'none given'})")
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    layers = None
    if config.lora_layers and n_layers and config.lora_layers < n_layers:
        # Adapt only the top layers: backpropagation then stops there, which is what makes
        # CPU fine-tuning of a 135M model affordable.
        layers = list(range(n_layers - config.lora_layers, n_layers))
    lora = LoraConfig(
        layers_to_transform=layers,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def train(
    model: Any,
    tokenizer: Any,
    examples: list[Example],
    config: TrainConfig,
    run_dir: Path,
    *,
    device: str = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    progress: bool = True,
) -> tuple[Any, TrainResult]:
    """Fine-tune ``model`` with LoRA on ``examples``; resumes from the newest checkpoint under
    ``run_dir/checkpoints`` if one exists. Returns the peft model and what happened."""
    import torch
    from peft import set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict

    config.validate()
    if not examples:
        raise BadInput("no training examples")
    torch.manual_seed(config.seed)
    model = add_lora(model, config)
    model.to(device)
    encoded = [encode(tokenizer, e, config.max_length) for e in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)

    def schedule(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        remaining = max(config.steps - config.warmup_steps, 1)
        return max(0.0, 1.0 - (step - config.warmup_steps) / remaining)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run_dir / "checkpoints"
    log_path = run_dir / "train_log.jsonl"
    start_step = 0
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        state = json.loads((latest / "state.json").read_text())
        if state.get("config") != config.to_dict():
            raise BadInput(f"checkpoint {latest} was made with different training settings; start a new run")
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(latest / "adapter.safetensors")))
        trainer_state = torch.load(latest / "trainer.pt", weights_only=False)
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
        torch.set_rng_state(trainer_state["torch_rng"])
        start_step = int(state["step"])

    def save_checkpoint(step: int) -> None:
        from safetensors.torch import save_file

        ckpt_dir.mkdir(parents=True, exist_ok=True)
        final = ckpt_dir / f"{CHECKPOINT_PREFIX}{step:06d}"
        tmp = ckpt_dir / f".tmp-{step:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}, str(tmp / "adapter.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()},
            tmp / "trainer.pt",
        )
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": config.to_dict()}))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        done = sorted(p for p in ckpt_dir.iterdir() if p.name.startswith(CHECKPOINT_PREFIX))
        for old in done[: -config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    step_seconds: list[float] = []
    first_loss = math.nan
    loss_value = math.nan
    model.train()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar, open(log_path, "a", encoding="utf-8") as log:
        task = bar.add_task("train", total=config.steps, completed=start_step, loss="-")
        if start_step:
            log.write(json.dumps({"event": "resumed", "from_step": start_step}) + "\n")
            log.flush()
        for step in range(start_step, config.steps):
            started = time.perf_counter()
            batch = _collate([encoded[i] for i in batch_indices(step, len(encoded), config.batch_size, config.seed)], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = response_loss(model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            if math.isnan(first_loss):
                first_loss = loss_value
            elapsed = time.perf_counter() - started
            step_seconds.append(elapsed)
            log.write(json.dumps({"step": step + 1, "loss": loss_value, "seconds": elapsed}) + "\n")
            log.flush()
            bar.update(task, advance=1, loss=f"{loss_value:.3f}")
            if on_step is not None:
                on_step(step + 1, loss_value)
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                save_checkpoint(step + 1)
    adapter_dir = run_dir / "adapter"
    model.save_pretrained(adapter_dir)
    model.eval()
    return model, TrainResult(config.steps, start_step, loss_value, first_loss, step_seconds, adapter_dir)


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step training log (``train_log.jsonl``), including ``resumed`` markers."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
