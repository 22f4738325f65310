"""Preference optimisation (trl's DPOTrainer) on top of the LoRA adapter: pairs built from real
human labels, and a real DPO run on the bundled SmolLM2 that must raise the chosen-over-rejected
log-probability margin, checkpoint, drop its frozen reference copy and resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay.errors import BadInput
from assay.judges import get_judge
from assay.mitigate import dataset as ds
from assay.mitigate import dpo


def _train_rows(findings_file: Path) -> list[ds.Example]:
    findings, _ = ds.read_findings([findings_file])
    return ds.build(findings, augment_harmful=40, heldout_benign=20).train


def test_pairs_prefer_the_safe_answer_to_a_human_labelled_harmful_one(findings_file):
    from assay.data import do_not_answer

    harmful_by_q: dict[str, set[str]] = {}
    for r in do_not_answer.load_responses():
        if r.harmful:
            harmful_by_q.setdefault(ds.prompt_hash(r.question), set()).add(r.response.strip())
    rows = _train_rows(findings_file)
    assert all(p.kind == "harmful" for p in dpo.build_pairs(rows, [findings_file]))  # the default
    pairs = dpo.build_pairs(rows, [findings_file], kinds="harmful+benign")
    by_prompt = {e.prompt: e for e in rows}
    harmful = [p for p in pairs if p.kind == "harmful"]
    benign = [p for p in pairs if p.kind == "benign"]
    assert len(harmful) >= 20 and len(benign) == sum(1 for e in rows if e.kind == "benign")
    for p in harmful:
        assert p.chosen == by_prompt[p.prompt].response  # the supervised stage's safe target
        assert p.rejected in harmful_by_q[ds.prompt_hash(p.prompt)]  # humans labelled it harmful, for this prompt
    phrase = get_judge("refusal-phrase")
    for p in benign:
        assert phrase.match(p.rejected) and not phrase.match(p.chosen)
    assert {p.prompt for p in pairs} <= set(by_prompt)  # only training prompts, never held-out ones
    with pytest.raises(BadInput, match="pair kinds"):
        dpo.build_pairs(rows, kinds="benign")


def _margin(model, tok, pairs: list[dpo.Pair], max_length: int) -> float:
    """Mean over pairs of log p(chosen) - log p(rejected) (summed over answer tokens, chat template)."""
    import torch

    from assay.mitigate.train import encode

    def logp(prompt: str, answer: str) -> float:
        ids, labels = encode(tok, ds.Example(prompt, answer, "x", "t", ds.prompt_hash(prompt)), max_length)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
        target = torch.tensor(labels[1:])
        keep = target != -100
        return float(torch.log_softmax(logits[keep], -1).gather(1, target[keep, None]).sum())

    return sum(logp(p.prompt, p.chosen) - logp(p.prompt, p.rejected) for p in pairs) / len(pairs)


def test_dpo_raises_the_margin_checkpoints_and_resumes(findings_file, model_cache, tmp_path):
    from assay.mitigate.model import load_model, resolve_model
    from assay.mitigate.train import TrainConfig, add_lora

    pairs = sorted((p for p in dpo.build_pairs(_train_rows(findings_file), [findings_file]) if p.kind == "harmful"), key=lambda p: len(p.prompt))[:4]
    settings = dpo.DPOSettings(steps=4, batch_size=2, learning_rate=5e-3, beta=0.1, max_length=96, checkpoint_every=2)
    lora = TrainConfig(lora_layers=2, lora_r=4, lora_alpha=8)
    model, tok = load_model(resolve_model("smollm2"))
    model = add_lora(model, lora)
    model.eval()
    before = _margin(model, tok, pairs, settings.max_length)
    trained, log = dpo.train_dpo(model, tok, pairs, settings, tmp_path / "dpo", progress=False)
    after = _margin(trained, tok, pairs, settings.max_length)
    assert after > before + 1.0, (before, after)
    assert log["steps"] == 4 and log["resumed_from"] == 0 and len(log["losses"]) == 4
    assert list(trained.peft_config) == ["default"]  # the frozen reference copy is gone before merging
    assert (tmp_path / "dpo" / "checkpoint-4").is_dir()

    # A new process would start from the same supervised adapter and continue from checkpoint-4.
    model2, tok2 = load_model(resolve_model("smollm2"))
    more = dpo.DPOSettings(**{**settings.to_dict(), "steps": 6})
    _, log2 = dpo.train_dpo(add_lora(model2, lora), tok2, pairs, more, tmp_path / "dpo", progress=False)
    assert log2["resumed_from"] == 4 and log2["steps"] == 6


def test_pairs_without_room_for_an_answer_are_refused(model_cache):
    from transformers import AutoTokenizer

    from assay.mitigate.model import resolve_model, transformers_dir

    tok = AutoTokenizer.from_pretrained(str(transformers_dir(resolve_model("smollm2"))))
    long = dpo.Pair("Tell me about this. " * 40, "No.", "Yes, here is how.", "harmful")
    with pytest.raises(BadInput, match="none with room for an answer"):
        dpo.train_dpo(object(), tok, [long], dpo.DPOSettings(max_length=64), Path("/nonexistent"))


def test_finetune_with_dpo_stage_and_resume_after_it(findings_file, model_cache, assay_home):
    """``assay mitigate finetune --dpo-steps``: the DPO stage runs after the supervised one, its
    pairs become part of the mitigation data, and a run resumed after the supervised stage
    rebuilds the model from the saved adapter and exports the DPO-trained weights."""
    import json
    import shutil

    from assay.cli.main import main
    from assay.mitigate.pipeline import execute, run_path

    args = ["--steps", "2", "--batch-size", "1", "--max-length", "96", "--lora-layers", "2", "--lora-r", "4", "--augment", "16", "--no-eval", "--no-register"]
    assert main(["mitigate", "finetune", "-f", str(findings_file), *args, "--dpo-steps", "2", "--dpo-batch-size", "1", "--checkpoint-every", "1", "--run-id", "dpo"]) == 0
    run = run_path("dpo")
    log = json.loads((run / "dpo.json").read_text())
    assert log["steps"] == 2 and log["pairs"] > 0 and len(log["losses"]) == 2
    pairs = dpo.read_pairs(run / "data" / "dpo_pairs.jsonl")
    train_prompts = {e.prompt for e in ds.read_examples(run / "data" / "train.jsonl")}
    assert pairs and {p.prompt for p in pairs} <= train_prompts
    first = (run / "merged" / "model.safetensors").read_bytes()

    # As if killed after the supervised stage finished: the DPO stage resumes from its checkpoint.
    shutil.rmtree(run / "merged")
    (run / "dpo.json").unlink()
    summary = execute(run, progress=False, say=lambda _t: None)
    assert summary["dpo"]["resumed_from"] == 2 and summary["dpo"]["steps"] == 2
    assert (run / "merged" / "model.safetensors").read_bytes() == first
