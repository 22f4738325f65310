"""Merge a LoRA adapter into its base model and write plain safetensors weights
(``merge_and_unload``), so the fine-tuned model loads anywhere transformers does, can be served
in-process for evaluation, and has one weights file whose sha256 the registry records."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from assay.errors import BadInput
from assay.mitigate.model import ModelSource, load_model, sha256_file


def merge_model(peft_model: Any, tokenizer: Any, out_dir: Path) -> dict[str, str]:
    """Merge an in-memory peft model and save it (safetensors + tokenizer) to ``out_dir``,
    written to a temporary folder first so a kill never leaves a half export. Returns
    ``{file: sha256}`` of the weights."""
    merged = peft_model.merge_and_unload() if hasattr(peft_model, "merge_and_unload") else peft_model
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return {p.name: sha256_file(p) for p in sorted(out_dir.glob("*.safetensors"))}


def export_adapter(base: ModelSource, adapter_dir: Path, out_dir: Path, device: str = "cpu") -> dict[str, str]:
    """Load ``base``, apply the saved adapter in ``adapter_dir``, merge and save to ``out_dir``."""
    from peft import PeftModel

    if not (adapter_dir / "adapter_config.json").is_file():
        raise BadInput(f"{adapter_dir} holds no LoRA adapter (adapter_config.json missing)", hint="finish or resume the training run first")
    model, tokenizer = load_model(base, device=device)
    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    return merge_model(peft_model, tokenizer, out_dir)
