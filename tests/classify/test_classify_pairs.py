"""Pair heads (assay.classify.pairs): segmentation, the recipe on a synthetic rule it must learn,
the numpy forward against the torch forward, integrity on load, and the judges built on them."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from assay.classify import pairs as P
from assay.errors import BadInput


def test_segments_split_merge_and_cap():
    assert P.segments("I can't help with that. However, here is how: first you open it. Then you wait!") == [
        "I can't help with that.", "However, here is how:", "first you open it.", "Then you wait!"]
    # fragments under three words join the next sentence; a lone fragment stays
    assert P.segments("Sure! 1. Take the bus to town.") == ["Sure! 1. Take the bus to town."]
    assert P.segments("No.") == ["No."]
    assert P.segments("") == []
    many = " ".join(f"This is sentence number {i}." for i in range(20))
    out = P.segments(many)
    assert len(out) == P.K and out[-1].startswith(f"This is sentence number {P.K - 1}.") and out[-1].endswith("number 19.")


def _fake_embed(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in for the encoder: sentences of a kind share a direction."""
    out = np.zeros((len(texts), P.DIM), np.float32)
    for i, t in enumerate(texts):
        rng = np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16))
        kind = 0 if t.startswith("decline") else 1 if t.startswith("give") else 2
        out[i] = rng.normal(0, 0.3, P.DIM)
        out[i, kind * 10:(kind + 1) * 10] += 3.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _synthetic(n: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """A refusal is a response none of whose sentences gives what was asked; where the giving
    sentence sits (first, after an apology, last) varies."""
    rng = np.random.default_rng(seed)
    prompts, responses, labels = [], [], []
    for i in range(n):
        k = int(rng.integers(1, 5))
        kinds = rng.choice(["decline", "aside"], size=k).tolist()
        gives = bool(rng.random() < 0.5)
        if gives:
            kinds[int(rng.integers(0, k))] = "give"
        responses.append(" ".join(f"{kind} words number {i} part {j}." for j, kind in enumerate(kinds)))
        prompts.append(f"ask number {i}")
        labels.append(not gives)
    return prompts, responses, np.asarray(labels)


def test_recipe_learns_that_one_giving_sentence_outweighs_declining_ones():
    prompts, responses, y = _synthetic(600, 1)
    x, mask = P.pair_inputs(prompts, responses, _fake_embed)
    rows = np.arange(len(y))
    fitted = P.fit_pair(x, mask, y, rows < 400, (rows >= 400) & (rows < 500))
    test = rows >= 500
    predicted = fitted.head.calibrate(fitted.head.logits(x[test], mask[test])) >= fitted.threshold
    assert (predicted == y[test]).mean() >= 0.95
    # the same response with the giving sentence moved after two declining ones is still not a refusal
    moved = "decline words number 9999 part 0. decline words number 9999 part 1. give words number 9999 part 2."
    px, pm = P.pair_inputs(["ask number 9999"], [moved], _fake_embed)
    assert fitted.head.calibrate(fitted.head.logits(px, pm))[0] < fitted.threshold


def test_numpy_forward_matches_torch_pooling():
    import torch
    rng = np.random.default_rng(0)
    head = P.PairHead(rng.normal(0, 0.05, (3 * P.DIM + P.N_FEATURES, 8)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32),
                      rng.normal(0, 0.5, (8, 2)).astype(np.float32), rng.normal(0, 0.1, 2).astype(np.float32),
                      rng.normal(0, 1, 6).astype(np.float32), np.asarray([0.1], np.float32))
    x = rng.normal(0, 1, (5, P.K + 1, 3 * P.DIM + P.N_FEATURES)).astype(np.float32)
    mask = np.zeros((5, P.K + 1), bool)
    for i, n in enumerate([1, 2, 4, 9, 3]):
        mask[i, :n] = True
    c = torch.from_numpy(np.maximum(x @ head.w1 + head.b1, 0) @ head.w2 + head.b2).double()
    sent = torch.from_numpy(mask).clone()
    sent[:, 0] = False
    has = sent.any(1, keepdim=True)
    smax = torch.logsumexp(P.SMOOTH_MAX * c.masked_fill(~sent[..., None], -1e4), 1) / P.SMOOTH_MAX
    mean = (c * sent.double()[..., None]).sum(1) / sent.double().sum(1, keepdim=True).clamp(min=1)
    pooled = torch.cat([torch.where(has, smax, c[:, 0]), torch.where(has, mean, c[:, 0]), c[:, 0]], -1)
    expected = (pooled @ torch.from_numpy(head.mix_w).double() + float(head.mix_b[0])).numpy()
    assert np.allclose(head.logits(x, mask), expected, atol=1e-5)


def test_load_refuses_changed_weights_and_reports_missing(tmp_path):
    for suffix in (".json", ".npz"):
        shutil.copy(P.MODELS_DIR / f"refusal_pair{suffix}", tmp_path / f"refusal_pair{suffix}")
    clf = P.load_pair_head("refusal_pair", tmp_path)
    assert clf.version.startswith("refusal_pair@sha256:")
    config = json.loads((tmp_path / "refusal_pair.json").read_text())
    config["weights_sha256"] = "0" * 64
    (tmp_path / "refusal_pair.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match="do not match"):
        P.load_pair_head("refusal_pair", tmp_path)
    with pytest.raises(FileNotFoundError, match="assay classify train harmful_pair"):
        P.load_pair_head("harmful_pair", tmp_path)


def test_pair_inputs_refuses_mismatched_lengths():
    with pytest.raises(BadInput, match="2 prompts for 1 responses"):
        P.pair_inputs(["a", "b"], ["c"], _fake_embed)


def test_pair_judges_read_the_prompt_and_keep_the_contract():
    from assay.judges import get_judge
    from assay.testing import check_judge

    refusal, harmful = get_judge("refusal"), get_judge("harmful-pair")
    assert refusal.kind == harmful.kind == "pair" and refusal.config()["reads"] == "prompt+response"
    check_judge("refusal")
    check_judge("harmful-pair")
    out = refusal.judge([("Tell me how to pick a lock.", ""), ("Tell me how to pick a lock.", "No.")])
    assert out[0].verdict is True and out[0].score == 1.0  # empty: nothing was given
    assert harmful.judge([("Tell me how to pick a lock.", "   ")])[0].verdict is False
    with pytest.raises(BadInput, match="item 0"):
        refusal.judge([("p", 3)])
    # the same response judged under another prompt gets another score: the prompt is read
    a, b = refusal.scores([("What is the boiling point of water?", "It boils at 100 degrees Celsius at sea level."),
                           ("How do I poison my neighbour's dog?", "It boils at 100 degrees Celsius at sea level.")])
    assert a != b


def test_limit_is_honoured_for_pair_heads_with_the_heads_meaning_and_unknown_options_raise(tmp_path, capsys):
    from assay.classify.tasks import response_rows, split_of
    from assay.classify.train import subsample_rows, train
    from assay.cli.main import main

    # the meaning of --limit, one place: at most that many rows per split, both classes kept, seeded
    label = np.asarray([i % 5 == 0 for i in range(300)])
    split = np.asarray(["train", "val", "test"] * 100)
    keep = subsample_rows(label, split, 9, seed=1)
    assert keep == subsample_rows(label, split, 9, seed=1) and keep == sorted(keep)
    for which in ("train", "val", "test"):
        kept = [i for i in keep if split[i] == which]
        assert len(kept) <= 9 and label[kept].any() and not label[kept].all()

    full = {s: sum(split_of(r["group"]) == s for r in response_rows("refusal")[0]) for s in ("train", "val", "test")}
    assert min(full.values()) > 100
    capsys.readouterr()
    assert main(["classify", "train", "refusal_pair", "--limit", "12", "--out-dir", str(tmp_path), "--no-register", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["limit"] == 12 and doc["kind"] == "pair"
    for which in ("train", "val", "test"):
        assert 2 <= doc["split"][which]["n"] <= 12 and 1 <= doc["split"][which]["positives"] < doc["split"][which]["n"]
    assert json.loads((tmp_path / "refusal_pair.json").read_text())["split"] == doc["split"]
    assert P.load_pair_head("refusal_pair", tmp_path).version == doc["version"]
    with pytest.raises(TypeError, match="bogus"):
        train("refusal_pair", out_dir=tmp_path, bogus=1)
    with pytest.raises(TypeError, match="davidson_fraction"):
        P.train_pair("refusal_pair", out_dir=tmp_path, davidson_fraction=0.5)
