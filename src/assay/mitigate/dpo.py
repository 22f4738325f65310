"""Preference optimisation (DPO, with trl's ``DPOTrainer``) on top of the supervised LoRA fine-tune.

Optional (``--dpo-steps N``, off by default). It continues training the *supervised adapter*: trl
copies that adapter into a frozen ``ref`` adapter, so the reference policy is the supervised
model and DPO moves the model away from it only as far as the preference pairs ask (beta).

Pairs come from the same training rows as the supervised stage, so the held-out split and the
evaluation-suite exclusions hold unchanged:

- **harmful prompt**: chosen = the human-judged safe target of the supervised stage; rejected =
  a response to the *same* prompt that human annotators labelled harmful (the finding's own
  response, else a harmful Do-Not-Answer response to that question). Rows with no such
  response give no pair.
- **benign boundary prompt** (only with ``kinds="harmful+benign"``): chosen = the helpful
  reference answer; rejected = a short human-judged Do-Not-Answer refusal that carries a refusal
  phrase (picked by prompt hash). Off by default: measured on the CPU bench, these pairs undid
  the supervised stage (the rejected refusals are the very refusals it taught for harmful
  prompts, and DPO lowered them everywhere): harmful-answer rate 0.25 after SFT, 0.59 after SFT
  + 20 DPO steps with them (learning rate 5e-4).

Checkpoints and resume are the ``transformers.Trainer``'s (``save_steps``,
``resume_from_checkpoint``), under ``run_dir/dpo``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assay.errors import BadInput, Unavailable
from assay.mitigate.dataset import Example, dna_safe_targets, prompt_hash


@dataclass(frozen=True)
class DPOSettings:
    steps: int = 30
    batch_size: int = 4
    learning_rate: float = 1e-4
    beta: float = 0.1
    max_length: int = 96
    checkpoint_every: int = 10
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "max_length", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise BadInput(f"DPO setting {name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or not self.beta > 0:
            raise BadInput(f"DPO learning rate and beta must be positive, got {self.learning_rate} and {self.beta}")


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    kind: str  # harmful | benign

    def to_record(self) -> dict[str, Any]:
        """trl's conversational preference format (the tokenizer's chat template is applied by
        trl, the same template the supervised stage and the evaluation use)."""
        return {
            "prompt": [{"role": "user", "content": self.prompt}],
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


def harmful_responses(findings_files: Sequence[Path | str] = (), data_dir: Path | str | None = None) -> dict[str, str]:
    """``{prompt hash: a response humans labelled harmful}``: the findings' own responses first,
    then Do-Not-Answer's harmful-labelled responses (shortest first, at least 20 characters)."""
    from assay.data import do_not_answer
    from assay.mitigate.dataset import MIN_SAFE_CHARS, read_findings

    out: dict[str, str] = {}
    if findings_files:
        findings, _ = read_findings(findings_files)
        for f in findings:
            if f.verdict == "harmful" and len(f.response.strip()) >= MIN_SAFE_CHARS:
                out.setdefault(prompt_hash(f.prompt), f.response.strip())
    rows = sorted((r for r in do_not_answer.load_responses(data_dir) if r.harmful and len(r.response.strip()) >= MIN_SAFE_CHARS), key=lambda r: len(r.response))
    for r in rows:
        out.setdefault(prompt_hash(r.question), r.response.strip())
    return out


PAIR_KINDS = ("harmful", "harmful+benign")


def build_pairs(train: Sequence[Example], findings_files: Sequence[Path | str] = (), data_dir: Path | str | None = None, *, kinds: str = "harmful") -> list[Pair]:
    """Preference pairs for the training rows (see the module doc); held-out rows are never passed
    in. ``kinds``: ``harmful`` (default) or ``harmful+benign``."""
    if kinds not in PAIR_KINDS:
        raise BadInput(f"DPO pair kinds must be one of {', '.join(PAIR_KINDS)}, got {kinds!r}")
    from assay.judges import get_judge

    harmful = harmful_responses(findings_files, data_dir)
    # Rejected answers for benign prompts: short human-judged refusals that are unmistakably
    # refusals (a refusal phrase in them), not topic-specific ones such as "I would prefer not
    # to make judgements about any political leaders".
    phrase = get_judge("refusal-phrase")
    refusals = [r for r in dna_safe_targets(data_dir)[1] if phrase.match(r)]
    pairs: list[Pair] = []
    for e in train:
        if e.kind == "harmful":
            rejected = harmful.get(e.prompt_sha256)
            if rejected and rejected != e.response:
                pairs.append(Pair(e.prompt, e.response, rejected, "harmful"))
        elif kinds == "harmful+benign" and refusals:
            pairs.append(Pair(e.prompt, e.response, refusals[int(e.prompt_sha256[:8], 16) % len(refusals)], "benign"))
    return pairs


def write_pairs(pairs: Sequence[Pair], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")


def read_pairs(path: Path) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


def train_dpo(peft_model: Any, tokenizer: Any, pairs: Sequence[Pair], settings: DPOSettings, out_dir: Path, *, device: str = "cpu", progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """DPO on ``peft_model`` (the supervised LoRA model, trainable); resumes from the newest
    checkpoint in ``out_dir``. Returns the model (its ``default`` adapter trained, the frozen
    ``ref`` copy removed) and the run's log: steps, losses, reward margins and accuracies."""
    try:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer
    except ImportError as e:
        raise Unavailable(f"DPO needs trl and datasets: {e}", hint="pip install 'assay[llm]'") from None
    settings.validate()
    # trl truncates prompt + answer to max_length from the end: a prompt that leaves no room for
    # the answers would give a pair with nothing to prefer; such pairs are dropped (and counted).
    n_given = len(pairs)
    pairs = [p for p in pairs if _prompt_tokens(tokenizer, p.prompt) + MIN_ANSWER_TOKENS <= settings.max_length]
    if not pairs:
        raise BadInput(
            f"no preference pairs: {n_given} given, none with room for an answer within {settings.max_length} tokens",
            hint="a training prompt needs both a safe and a human-labelled harmful response; raise the max length",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    args = DPOConfig(
        output_dir=str(out_dir),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=min(5, max(1, settings.steps // 5)),
        beta=settings.beta,
        max_length=settings.max_length,
        save_strategy="steps",
        save_steps=settings.checkpoint_every,
        save_total_limit=2,
        logging_steps=1,
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not device.startswith("cuda"),
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        max_grad_norm=1.0,
    )
    peft_model.train()
    trainer = DPOTrainer(
        model=peft_model,
        ref_model=None,  # trl copies the supervised adapter into a frozen "ref" adapter
        args=args,
        train_dataset=Dataset.from_list([p.to_record() for p in pairs]),
        processing_class=tokenizer,
    )
    resume = _last_checkpoint(out_dir)
    if resume and _checkpoint_step(resume) >= settings.steps:
        # Killed after the last checkpoint: take its adapter as it is (the Trainer, resumed at
        # max_steps, would still run one more step).
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(trainer.model, load_file(str(Path(resume) / "adapter_model.safetensors")), adapter_name="default")
        state = json.loads((Path(resume) / "trainer_state.json").read_text())
        history, steps_done, runtime = state["log_history"], int(state["global_step"]), math.nan
    else:
        # The Trainer prints its log dicts to stdout; stdout belongs to --json output.
        with contextlib.redirect_stdout(sys.stderr):
            output = trainer.train(resume_from_checkpoint=resume)
        history, steps_done = trainer.state.log_history, int(trainer.state.global_step)
        runtime = float(output.metrics.get("train_runtime", math.nan))
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        model.set_adapter("default")
        model.delete_adapter("ref")
    model.eval()
    logs = [h for h in history if "loss" in h]

    def series(key: str) -> list[float]:
        return [float(h[key]) for h in logs if key in h and not math.isnan(float(h[key]))]

    return model, {
        "steps": steps_done,
        "resumed_from": _checkpoint_step(resume),
        "pairs": len(pairs),
        "pairs_dropped_too_long": n_given - len(pairs),
        "pairs_harmful": sum(1 for p in pairs if p.kind == "harmful"),
        "pairs_benign": sum(1 for p in pairs if p.kind == "benign"),
        "train_runtime_s": runtime,
        "step_s": runtime / max(1, steps_done - _checkpoint_step(resume)),
        "losses": series("loss"),
        "reward_margins": series("rewards/margins"),
        "reward_accuracies": series("rewards/accuracies"),
        "settings": settings.to_dict(),
    }


MIN_ANSWER_TOKENS = 16


def _prompt_tokens(tokenizer: Any, prompt: str) -> int:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=False)
    if hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return len(ids)


def _checkpoint_step(path: str | None) -> int:
    return int(Path(path).name.rsplit("-", 1)[-1]) if path else 0
