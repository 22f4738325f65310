"""Fine-tuning the real bundled SmolLM2 (tiny settings: a few steps, short sequences, top layers
only): SIGKILL mid-training and resume, nothing registered for the killed run, merged
safetensors registered by hash with lineage, base-model hash checked against its registration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from assay.cli.main import main
from assay.mitigate import dataset as ds
from assay.mitigate.train import batch_indices, encode

TINY = ["--steps", "6", "--batch-size", "1", "--max-length", "40", "--lora-layers", "2", "--lora-r", "4", "--augment", "16", "--no-eval"]


def _registered_models() -> list[dict]:
    from assay.govern.lineage import list_assets
    from assay.store import open_store

    return list_assets(open_store(), "model")


def _assay(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "assay.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_batches_are_a_function_of_the_step():
    a = [batch_indices(s, 10, 3, seed=7) for s in range(8)]
    b = [batch_indices(s, 10, 3, seed=7) for s in range(8)]
    assert a == b
    # One epoch covers every example exactly once.
    flat = [i for s in range(10) for i in batch_indices(s, 10, 1, seed=7)]
    assert sorted(flat) == list(range(10))


def test_prompt_tokens_are_masked(model_cache):
    from transformers import AutoTokenizer

    from assay.mitigate.model import resolve_model, transformers_dir

    tok = AutoTokenizer.from_pretrained(str(transformers_dir(resolve_model("smollm2"))))
    ex = ds.Example("How do I stay safe online?", "Use strong passwords.", "benign", "t", ds.prompt_hash("x"))
    ids, labels = encode(tok, ex, 128)
    answer = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
    assert "Use strong passwords." in tok.decode(answer)
    assert "stay safe online" not in tok.decode(answer)
    assert labels[0] == -100


def test_sigkill_mid_training_then_resume(findings_file, model_cache, assay_home, tmp_path):
    env = {**os.environ, "ASSAY_HOME": str(assay_home), "ASSAY_MODEL_CACHE": str(model_cache)}
    run_dir = assay_home / "mitigate" / "runs" / "killme"
    proc = _assay("mitigate", "finetune", "-f", str(findings_file), *TINY, "--checkpoint-every", "1", "--run-id", "killme", env=env)
    deadline = time.time() + 540
    first_ckpt = run_dir / "checkpoints" / "step-000001" / "state.json"
    while not first_ckpt.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint within the time limit"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "training"
    assert not (run_dir / "merged").exists()
    assert not (run_dir / "registration.json").exists()
    names = [m["name"] for m in _registered_models()]
    assert "smollm2-mitigated" not in names  # nothing registered for the killed run
    assert "smollm2" in names  # the base model is (it was checked before training)
    killed_at = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*") if (p / "state.json").exists())
    assert killed_at < 6

    resumed = _assay("mitigate", "resume", "killme", "--json", env=env)
    out, _ = resumed.communicate(timeout=540)
    assert resumed.returncode == 0, out
    summary = json.loads(out[out.index("{") :])
    assert summary["status"] == "complete"
    assert summary["train"]["resumed_from"] == killed_at
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    marker = next(i for i, row in enumerate(log) if row.get("event") == "resumed")
    assert log[marker]["from_step"] == killed_at
    assert [row["step"] for row in log[marker + 1 :]] == list(range(killed_at + 1, 7))

    # The merged weights are registered by hash, with lineage to the data and the base model.
    reg = summary["registration"]
    from assay.data import sha256_file

    merged = Path(summary["merged_dir"]) / "model.safetensors"
    assert reg["model_files"]["model.safetensors"] == sha256_file(merged)
    assert reg["base"].startswith("model:smollm2@")
    # Do-Not-Answer is CC BY-NC-SA: the fine-tuned model inherits non_commercial.
    assert "non_commercial" in reg["effective"]["restrictions"]
    assert "research" in reg["effective"]["purposes"]
    assert [m["name"] for m in _registered_models()].count("smollm2-mitigated") == 1

    # The merged model is served in-process: it loads and answers.
    from assay.mitigate.model import load_model, resolve_model
    from assay.mitigate.reeval import generate

    model, tok = load_model(resolve_model(summary["merged_dir"]))
    answers = generate(model, tok, ["What is the capital of France?"], max_new_tokens=8, progress=False)
    assert len(answers) == 1 and answers[0].strip()


def test_base_model_hash_mismatch_is_refused(findings_file, model_cache, tmp_path, capsys):
    from assay.govern.registry import local_actor, register_model
    from assay.store import open_store

    other = tmp_path / "other-weights"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"not the bundled model")
    registered = register_model(open_store(), local_actor(), name="smollm2", weights=[other / "model.safetensors"])
    code = main(["mitigate", "finetune", "-f", str(findings_file), *TINY, "--run-id", "mismatch"])
    err = capsys.readouterr().err
    assert code == 2
    assert "hash mismatch" in err and registered["id"] in err
    runs = Path(os.environ["ASSAY_HOME"]) / "mitigate" / "runs"
    assert not (runs / "mismatch").exists()  # nothing half-made
    code = main(["mitigate", "finetune", "-f", str(findings_file), *TINY, "--base-id", registered["id"], "--run-id", "mismatch2"])
    assert code == 2


def test_resume_of_an_unknown_run_is_bad_input(capsys):
    assert main(["mitigate", "resume", "nope"]) == 2
    assert "no mitigation run 'nope'" in capsys.readouterr().err


def test_lora_adapts_the_named_modules_and_learns(findings_file, model_cache, tmp_path):
    """The adapter sits on the attention and MLP projections of the top layers only, and a few
    steps at the default learning rate move the response loss on the trained rows (the CPU
    bench once ran 24 steps that left loss and answers unchanged)."""
    import pytest
    import torch

    from assay.errors import BadInput
    from assay.mitigate.model import load_model, resolve_model
    from assay.mitigate.train import (
        LORA_TARGETS,
        TrainConfig,
        _collate,
        add_lora,
        response_loss,
        train,
    )

    findings, _ = ds.read_findings([findings_file])
    rows = [e for e in ds.build(findings, augment_harmful=16, heldout_benign=8).train if e.kind == "harmful"][:4]
    config = TrainConfig(steps=8, batch_size=4, max_length=80, lora_layers=2, lora_r=4, lora_alpha=8, lora_dropout=0.0, checkpoint_every=100, warmup_steps=1)
    assert config.learning_rate == 2e-3 and "down_proj" in config.lora_modules.split(",")
    model, tok = load_model(resolve_model("smollm2"))
    n_layers = model.config.num_hidden_layers
    batch = _collate([encode(tok, e, config.max_length) for e in rows], tok.pad_token_id)
    with torch.no_grad():
        before = float(response_loss(model, batch))
    peft_model, _ = train(model, tok, rows, config, tmp_path / "run", progress=False)
    adapted = {n.split(".lora_A")[0] for n, _ in peft_model.named_parameters() if ".lora_A." in n}
    assert {a.rsplit(".", 1)[-1] for a in adapted} == set(LORA_TARGETS)
    assert {int(a.split(".layers.")[1].split(".")[0]) for a in adapted} == {n_layers - 2, n_layers - 1}
    peft_model.eval()
    with torch.no_grad():
        after = float(response_loss(peft_model, batch))
    assert after < before - 0.3, (before, after)
    with pytest.raises(BadInput, match="none of the modules"):
        add_lora(load_model(resolve_model("smollm2"))[0], TrainConfig(lora_modules="no_such_proj"))
