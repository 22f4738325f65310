"""The fine-tuned encoder path (``hate``): a LoRA adapter merged into MiniLM and exported to ONNX
gives the torch LoRA model's embeddings; a changed or damaged adapter file is refused at load;
heads on different encoders never share an encoding; the version covers the adapter."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from assay.classify import load_classifier
from assay.classify.encoder import Encoder, encoder_id, get_encoder
from assay.classify.finetune import (
    FinetuneConfig,
    adapter_arrays,
    adapter_from_arrays,
    heldout_template,
    load_adapter,
    merge_into,
    soup,
)
from assay.classify.model import (
    MODELS_DIR,
    arrays_sha256,
    classifier_sha256,
    load_head_classifier,
    score_many,
)
from assay.classify.train import save_npz
from assay.errors import BadInput

TEXTS = ["I don't think they are disgusting.", "they are disgusting", "a quiet afternoon by the river with friends"]


def _random_lora(rank: int = 4):  # type: ignore[no-untyped-def]
    """A peft LoRA model of the packaged MiniLM with random (non-zero) A and B, and its adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from assay.classify.finetune import LORA_TARGETS, merged_model

    torch.manual_seed(7)
    config = FinetuneConfig(rank=rank, alpha=2 * rank)
    model = get_peft_model(merged_model(None), LoraConfig(r=rank, lora_alpha=config.alpha, lora_dropout=0.0,
                                                           target_modules=list(LORA_TARGETS)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    arrays = adapter_arrays(model, config)
    with torch.no_grad():  # the torch model with exactly the stored (float16-rounded) weights
        for name, param in model.named_parameters():
            if "lora_" in name:
                key = name.replace("base_model.model.", "").replace(".default.weight", "")
                param.copy_(torch.from_numpy(arrays[key].astype(np.float32)))
    return model.eval(), adapter_from_arrays(arrays)


def _torch_embeddings(model, texts: list[str], max_tokens: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoTokenizer

    from assay.classify.encoder import model_dir

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()))
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_merged_onnx_export_gives_the_torch_lora_models_embeddings():
    model, adapter = _random_lora()
    reference = _torch_embeddings(model, TEXTS, 64)
    merged = Encoder("onnx", 64, "fp32", adapter).encode(TEXTS)
    base = Encoder("onnx", 64, "fp32").encode(TEXTS)
    cos = np.sum(reference * merged, axis=1)
    assert cos.min() > 0.9999, cos
    torch_backend = Encoder("torch", 64, "fp32", adapter).encode(TEXTS)  # sentence-transformers with the merge
    assert np.sum(reference * torch_backend, axis=1).min() > 0.9999
    assert np.sum(reference * base, axis=1).min() < 0.99  # the adapter really changes the vectors
    int8 = Encoder("onnx", 64, "int8", adapter).encode(TEXTS)
    assert np.sum(int8 * merged, axis=1).min() > 0.95  # the int8 export is of the merged model too
    assert encoder_id(64, "fp32", adapter) != encoder_id(64, "fp32")  # never share a cache entry


def test_loading_refuses_a_changed_or_damaged_adapter(tmp_path):
    for suffix in (".json", ".npz", ".adapter.npz"):
        shutil.copy(MODELS_DIR / f"hate{suffix}", tmp_path / f"hate{suffix}")
    assert load_head_classifier("hate", tmp_path).version == load_classifier("hate").version
    path = tmp_path / "hate.adapter.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = next(k for k in arrays if k.endswith(".lora_B"))
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += np.float16(0.01)
    save_npz(path, arrays)
    with pytest.raises(BadInput, match="adapter arrays do not match"):
        load_head_classifier("hate", tmp_path)
    path.write_bytes(b"PK\x03\x04 not a zip any more")
    with pytest.raises(BadInput, match="not a readable adapter"):
        load_head_classifier("hate", tmp_path)
    path.unlink()
    with pytest.raises(BadInput, match="missing"):
        load_head_classifier("hate", tmp_path)
    with pytest.raises(BadInput, match="adapter_sha256"):
        load_adapter(MODELS_DIR / "hate.adapter.npz", "0" * 64)


def test_shared_encoding_keys_on_the_encoder_not_only_the_cut():
    # hate sits on a fine-tuned encoder; a base-encoder head with the same normalisation and the
    # same cut must not lend it its vectors (nor borrow hate's), whichever comes first.
    hate = load_classifier("hate")
    assert hate.adapter is not None
    base = replace(load_classifier("toxicity"), max_tokens=hate.max_tokens)
    assert (base.social, base.normalise, base.max_tokens) == (hate.social, hate.normalise, hate.max_tokens)
    assert base.encoder_key != hate.encoder_key
    texts = ["they are disgusting", "I don't think they are disgusting.", "have a lovely day"]
    for order in (("base", "hate"), ("hate", "base")):
        heads = {n: {"base": base, "hate": hate}[n] for n in order}
        together = score_many(heads, texts)
        assert np.allclose(together["hate"], hate.score(texts), atol=1e-9), order
        assert np.allclose(together["base"], base.score(texts), atol=1e-9), order
    assert get_encoder(max_tokens=64, adapter=hate.adapter) is not get_encoder(max_tokens=64)


def test_version_covers_the_adapter_and_the_head():
    hate = load_classifier("hate")
    with np.load(MODELS_DIR / "hate.npz") as npz:
        head = {k: npz[k] for k in npz.files}
    assert hate.sha256 == classifier_sha256(head, hate.adapter) != arrays_sha256(head)
    assert hate.adapter.path == MODELS_DIR / "hate.adapter.npz"
    assert (MODELS_DIR / "hate.adapter.npz").stat().st_size < 2_000_000  # small enough to commit


def test_heldout_contrast_templates_ignore_the_identity():
    assert heldout_template("Women are wonderful.") == heldout_template("Immigrants are wonderful.")


def test_fine_tuned_training_on_a_tiny_slice_is_reproducible(tmp_path):
    from assay.cli.main import main

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert main(["classify", "train", "hate", "--limit", "24", "--no-register", "--out-dir", str(out_a)]) == 0
    assert main(["classify", "train", "hate", "--limit", "24", "--no-register", "--out-dir", str(out_b)]) == 0
    a, b = load_head_classifier("hate", out_a), load_head_classifier("hate", out_b)
    assert a.adapter is not None and a.adapter.sha256 == b.adapter.sha256
    assert a.version == b.version
    assert (out_a / "hate.adapter.npz").read_bytes() == (out_b / "hate.adapter.npz").read_bytes()
    assert not any(Path(k).is_absolute() for k in a.config["data"])  # repo- or data-relative names only


def test_the_threshold_is_chosen_without_the_contrast_cases():
    """hate's operating threshold is the best validation F1 over the public rows only (the
    templated contrast cases would push it up); a task without contrast rows keeps all rows."""
    from assay.classify.tasks import TaskData
    from assay.classify.train import fit_head, threshold_rows

    rng = np.random.default_rng(0)
    n = 400
    source = ["davidson"] * 300 + ["assay_contrast"] * 100
    label = np.r_[rng.random(300) < 0.3, np.arange(100) % 2 == 0]
    x = rng.normal(size=(n, 4)) + label[:, None] * np.r_[np.full(300, 0.8), np.full(100, 6.0)][:, None]
    task = TaskData("hate", [f"t{i}" for i in range(n)], label.astype(float), label, np.asarray(["val"] * n), source, np.ones(n))
    va = np.arange(n)
    mask = threshold_rows(task, va)
    assert mask is not None and mask.sum() == 300 and not mask[300:].any()
    plain = replace(task, source=["davidson"] * n)
    assert threshold_rows(plain, va) is None
    fit_all = fit_head(x, label.astype(float), np.ones(n), x, label)
    fit_public = fit_head(x, label.astype(float), np.ones(n), x, label, threshold_rows=mask)
    assert fit_public.threshold != fit_all.threshold
    s = fit_public.head.calibrate(fit_public.head.logits(x[:300]))
    from assay.classify import metrics as M

    assert fit_public.threshold == pytest.approx(M.best_threshold(label[:300], s))


def _small_adapter(rng, rank: int, scaling: float = 2.0):  # type: ignore[no-untyped-def]
    arrays = {}
    for module, (out, inp) in {"encoder.layer.0.attention.self.query": (6, 5), "encoder.layer.0.output.dense": (5, 7)}.items():
        arrays[f"{module}.lora_A"] = rng.normal(size=(rank, inp)).astype(np.float16)
        arrays[f"{module}.lora_B"] = rng.normal(size=(out, rank)).astype(np.float16)
    arrays["scaling"] = np.asarray(scaling, dtype=np.float32)
    return adapter_from_arrays(arrays)


def test_a_soup_merges_to_the_mean_of_its_seeds_merged_weights(tmp_path):
    """The soup adapter (rank 3r) merged once equals the mean of the three adapters' merged
    weights; it is saved, hashed and loaded as any adapter (the loader still refuses a changed
    file); adapters that do not match are refused."""
    import torch

    rng = np.random.default_rng(3)
    parts = [_small_adapter(rng, 4) for _ in range(3)]
    state = {"bert.encoder.layer.0.attention.self.query.weight": torch.randn(6, 5),
             "bert.encoder.layer.0.output.dense.weight": torch.randn(5, 7), "bert.pooler.dense.weight": torch.randn(3, 3)}
    soup_adapter = soup(parts)
    assert soup_adapter.arrays["encoder.layer.0.output.dense.lora_A"].shape == (12, 7)
    merged = merge_into(state, soup_adapter)
    each = [merge_into(state, p) for p in parts]
    for key in state:
        mean = sum(m[key] for m in each) / 3
        assert torch.allclose(merged[key], mean, atol=1e-5), key
    assert not torch.allclose(merged["bert.encoder.layer.0.output.dense.weight"], each[0]["bert.encoder.layer.0.output.dense.weight"])
    assert soup([parts[0]]) is parts[0]
    path = tmp_path / "soup.adapter.npz"
    save_npz(path, soup_adapter.arrays)
    assert load_adapter(path, soup_adapter.sha256).sha256 == soup_adapter.sha256 != parts[0].sha256
    with pytest.raises(BadInput, match="adapter_sha256"):
        load_adapter(path, parts[0].sha256)
    with pytest.raises(BadInput, match="same modules"):
        soup([parts[0], _small_adapter(rng, 4, scaling=1.0)])
    with pytest.raises(BadInput, match="at least one"):
        soup([])


def test_the_soup_recipe_trains_once_per_seed_and_averages(monkeypatch):
    """``soup_seeds`` runs the one training function per seed (nothing else changed) and soups
    the adapters; without it, one run."""
    from assay.classify import finetune as ft

    rng = np.random.default_rng(5)
    made: dict[int, object] = {}

    def fake(task, prepared, config, progress=None):  # type: ignore[no-untyped-def]
        assert config.soup_seeds == () and config.contrast_repeat == 1
        made[config.seed] = _small_adapter(rng, 2)
        return made[config.seed], {"rows": 10, "steps": 5, "seconds": 1.0, "config": config.to_dict()}

    monkeypatch.setattr(ft, "finetune", fake)
    adapter, record = ft.finetune_recipe(None, [], FinetuneConfig(contrast_repeat=1, soup_seeds=(0, 1, 2)))
    assert sorted(made) == [0, 1, 2]
    assert adapter.sha256 == soup([made[0], made[1], made[2]]).sha256
    assert record["soup"]["seeds"] == [0, 1, 2] and record["config"]["soup_seeds"] == [0, 1, 2]
    assert [r["adapter_sha256"] for r in record["soup"]["runs"]] == [made[s].sha256 for s in (0, 1, 2)]
    single, _ = ft.finetune_recipe(None, [], FinetuneConfig(contrast_repeat=1, seed=4))
    assert single is made[4]
    assert "soup_seeds" not in FinetuneConfig().to_dict()  # a single run's record is unchanged


def test_seeds_option_is_refused_where_it_means_nothing():
    from assay.cli.main import main

    assert main(["classify", "train", "toxicity", "--seeds", "0,1", "--no-register", "--limit", "24"]) == 2
    assert main(["classify", "train", "hate", "--seeds", "0,x", "--no-register", "--limit", "24"]) == 2
    assert main(["classify", "train", "hate", "--seeds", "1,1", "--no-register", "--limit", "24"]) == 2


def test_a_soup_trained_on_a_tiny_slice_loads_and_serves_as_one_adapter(tmp_path):
    """``--seeds 0,1`` end to end: two runs, one rank-2r adapter in the head's folder, recorded in
    hate.json and the metrics, loaded and served through the one merge (ONNX export included)."""
    import json

    from assay.cli.main import main

    assert main(["classify", "train", "hate", "--limit", "24", "--seeds", "0,1", "--no-register", "--out-dir", str(tmp_path)]) == 0
    clf = load_head_classifier("hate", tmp_path)
    config = json.loads((tmp_path / "hate.json").read_text())
    doc = json.loads((tmp_path / "hate.metrics.json").read_text())
    runs = doc["finetune"]["soup"]["runs"]
    assert config["adapter_soup_seeds"] == [0, 1] and [r["config"]["seed"] for r in runs] == [0, 1]
    assert runs[0]["adapter_sha256"] != runs[1]["adapter_sha256"] != clf.adapter.sha256 == config["adapter_sha256"]
    rank = FinetuneConfig().rank
    assert all(v.shape[0] == 2 * rank for k, v in clf.adapter.arrays.items() if k.endswith(".lora_A"))
    scores = clf.score(TEXTS)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    card = (tmp_path / "hate.md").read_text()
    assert "uniform model soup of 2 runs" in card and runs[1]["adapter_sha256"][:16] in card and "adapter seeds 0,1" in card
