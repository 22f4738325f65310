"""Pair heads: refusal and harm judged from the prompt and the response, sentence by sentence.

Why not the response heads (:mod:`assay.classify.model`)? They read one mean-pooled embedding of
the response's opening, so an opening apology decides: "I can't help with that. However, here is
how ..." reads as a refusal, "Sorry for the delay! Water boils at 212 F" too, and a terse "No."
to a harmful request is far from Do-Not-Answer's long refusals. Held out, those hand-written hard
cases were the heads' worst source (``assay bench judges``).

A pair head splits the (normalised) response into at most :data:`K` sentences and embeds each,
the response's opening and the prompt with the same frozen MiniLM encoder (64 word pieces). One
small network scores every segment on two channels from ``[segment, prompt, segment * prompt,
features]`` -- the product lets it ask "does this sentence address the request?" -- and the
response's logit is a learned linear mix of each channel's smooth maximum and mean over the
sentences and of the opening's channels. One sentence that gives what was asked can outweigh an
apology; a response that only declines, warns or redirects has none. The training recipe
(:func:`fit_pair`) is one function, used by ``assay classify train refusal_pair|harmful_pair`` and
by leave-one-source-out in ``assay bench judges``.

Stored like the heads: ``models/<name>.npz`` (plain arrays) and ``models/<name>.json`` (threshold,
calibration, training record); the version hashes the arrays. Inference is numpy; training needs
PyTorch. The judges ``refusal`` and ``harmful-pair`` use these (``assay.judges.heads.PairJudge``;
``harmful`` stays on the response-only head, which did as well held out).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.classify.model import MODELS_DIR, PAIR_HEAD_NAMES, arrays_sha256, calibrate
from assay.errors import BadInput, Unavailable

K = 8  # sentences read per response (the rest joins the last one)
MAX_TOKENS = 64  # word pieces per segment / prompt
DIM = 384
N_FEATURES = 5  # is_opening, is_first_sentence, refusal_phrase, short, position
HIDDEN = 64
SMOOTH_MAX = 4.0  # temperature of the smooth maximum over sentences
SEED = 20240
PAIR_NAMES = dict(zip(PAIR_HEAD_NAMES, ("refusal", "harmful_response"), strict=True))  # pair head -> rows of that task
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")


def segments(text: str, k: int = K) -> list[str]:
    """Sentences of ``text`` (split after . ! ? : ; and at line breaks); fragments under three
    words join the next sentence (list numbers, "Sure!"); at most ``k``, the rest joins the last."""
    parts = [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]
    out: list[str] = []
    carry = ""
    for part in parts:
        part = f"{carry} {part}".strip() if carry else part
        if len(part.split()) < 3:
            carry = part
            continue
        out.append(part)
        carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    if len(out) > k:
        out = [*out[: k - 1], " ".join(out[k - 1 :])]
    return out


def _features(text: str, index: int, opening: bool) -> list[float]:
    from assay.classify.baselines import has_refusal_phrase

    return [1.0 if opening else 0.0, 1.0 if index == 0 and not opening else 0.0, 1.0 if has_refusal_phrase(text) else 0.0,
            1.0 if len(text.split()) < 6 else 0.0, 0.0 if opening else (index + 1) / K]


Embed = Callable[[list[str]], np.ndarray]


def pair_inputs(prompts: Sequence[str], responses: Sequence[str], embed: Embed) -> tuple[np.ndarray, np.ndarray]:
    """The network's input for each pair: ``x`` of shape (n, K + 1, 3 * DIM + N_FEATURES) -- row
    0 the response's opening, rows 1.. its sentences -- and the mask of rows present. Texts are
    normalised first; each distinct text is embedded once; an empty text embeds as zeros."""
    from assay.classify import normalise as norm

    if len(prompts) != len(responses):
        raise BadInput(f"pair_inputs: {len(prompts)} prompts for {len(responses)} responses")
    prepared = [norm.normalise(r) for r in responses]
    asked = [norm.normalise(p) for p in prompts]
    split = [segments(t) for t in prepared]
    distinct = sorted({t for t in (*prepared, *asked, *(s for ss in split for s in ss)) if t})
    vectors = embed(distinct) if distinct else np.zeros((0, DIM), np.float32)
    at = {t: i for i, t in enumerate(distinct)}

    def vec(text: str) -> np.ndarray:
        return vectors[at[text]] if text else np.zeros(DIM, np.float32)

    n = len(prepared)
    x = np.zeros((n, K + 1, 3 * DIM + N_FEATURES), np.float32)
    mask = np.zeros((n, K + 1), bool)
    for i, (text, prompt, sentences) in enumerate(zip(prepared, asked, split, strict=True)):
        p = vec(prompt)
        for j, (seg, opening) in enumerate([(text, True), *((s, False) for s in sentences)]):
            s = vec(seg)
            x[i, j, :DIM], x[i, j, DIM : 2 * DIM], x[i, j, 2 * DIM : 3 * DIM] = s, p, s * p
            x[i, j, 3 * DIM :] = _features(seg, j - 1, opening)
            mask[i, j] = True
    return x, mask


def _smooth_max_and_mean(c: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel over the sentence rows (1..K): smooth maximum and mean; the opening's value
    where a response has no sentence."""
    sent = mask.copy()
    sent[:, 0] = False
    has = sent.any(axis=1)[:, None]
    scaled = np.where(sent[..., None], SMOOTH_MAX * c, -np.inf)
    top = np.max(scaled, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    smax = (top[:, 0] + np.log(np.maximum(np.exp(scaled - top).sum(axis=1), 1e-300))) / SMOOTH_MAX
    count = sent.sum(axis=1)[:, None]
    mean = (c * sent[..., None]).sum(axis=1) / np.maximum(count, 1)
    return np.where(has, smax, c[:, 0]), np.where(has, mean, c[:, 0])


@dataclass
class PairHead:
    """The segment network (two dense layers, two channels), the channel mix and its calibration."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    mix_w: np.ndarray
    mix_b: np.ndarray
    calibration: str = "platt"
    cal_x: np.ndarray = field(default_factory=lambda: np.asarray([1.0, 0.0]))
    cal_y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def logits(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        c = (h @ self.w2 + self.b2).astype(np.float64)
        smax, mean = _smooth_max_and_mean(c, mask)
        pooled = np.concatenate([smax, mean, c[:, 0]], axis=1)
        return pooled @ self.mix_w.astype(np.float64) + float(self.mix_b[0])

    def calibrate(self, logits: np.ndarray) -> np.ndarray:
        return calibrate(logits, self.calibration, self.cal_x, self.cal_y)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2, "mix_w": self.mix_w, "mix_b": self.mix_b,
                "calibration_x": np.asarray(self.cal_x, np.float64), "calibration_y": np.asarray(self.cal_y, np.float64)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], calibration: str) -> PairHead:
        try:
            head = cls(a["w1"], a["b1"], a["w2"], a["b2"], a["mix_w"], a["mix_b"], calibration, a["calibration_x"], a["calibration_y"])
        except KeyError as e:
            raise BadInput(f"pair head arrays lack {e.args[0]!r}") from None
        if head.w1.shape != (3 * DIM + N_FEATURES, head.w2.shape[0]) or head.w2.shape[1] != 2 or head.mix_w.shape != (6,):
            raise BadInput(f"pair head arrays have the wrong shapes: w1 {head.w1.shape}, w2 {head.w2.shape}, mix_w {head.mix_w.shape}")
        return head


@dataclass
class PairClassifier:
    """A committed pair head: ``score_pairs(prompts, responses)`` -> calibrated probabilities."""

    name: str
    head: PairHead
    threshold: float
    sha256: str
    config: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return f"{self.name}@sha256:{self.sha256}"

    def score_pairs(self, prompts: Sequence[str], responses: Sequence[str], embed: Embed | None = None) -> np.ndarray:
        if not responses:
            return np.zeros(0)
        for what, texts in (("prompt", prompts), ("response", responses)):
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise BadInput(f"{self.name}: {what} {i} is {type(t).__name__}, not str")
        if embed is None:
            from assay.classify.encoder import get_encoder

            encoder = get_encoder(max_tokens=MAX_TOKENS)
            embed = encoder.encode
        x, mask = pair_inputs(prompts, responses, embed)
        return self.head.calibrate(self.head.logits(x, mask))


def load_pair_head(name: str, models_dir: Path = MODELS_DIR) -> PairClassifier:
    """The committed pair head ``name``; its arrays must match the sha256 in its config."""
    config_path, weights_path = models_dir / f"{name}.json", models_dir / f"{name}.npz"
    if not config_path.is_file() or not weights_path.is_file():
        raise FileNotFoundError(f"pair head {name!r} is not trained: {config_path} / {weights_path} missing "
                                f"(assay classify train {name})")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    with np.load(weights_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    sha = arrays_sha256(arrays)
    if config.get("weights_sha256") != sha:
        raise BadInput(f"{weights_path}: weights do not match the sha256 in {config_path.name} (file changed or corrupt)")
    return PairClassifier(name, PairHead.from_arrays(arrays, config["calibration"]), float(config["threshold"]), sha, config)


# -- training: one recipe, for the committed heads and for leave-one-source-out -----------------------
@dataclass
class FittedPair:
    head: PairHead
    threshold: float
    val_auroc: float


def _torch_fit(x: np.ndarray, mask: np.ndarray, y: np.ndarray, seed: int, epochs: int = 40, batch: int = 256) -> PairHead:
    try:
        import torch
    except ImportError as e:
        raise Unavailable("training a pair head needs PyTorch", hint="pip install 'assay[ml]'") from e

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    seg = torch.nn.Sequential(torch.nn.Linear(x.shape[2], HIDDEN), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(HIDDEN, 2))
    mix = torch.nn.Linear(6, 1)
    params = [*seg.parameters(), *mix.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    xt, mt = torch.from_numpy(x), torch.from_numpy(mask)
    yt = torch.from_numpy(y.astype(np.float32))
    pos = float(yt.mean())
    weight = torch.where(yt > 0, 0.5 / max(pos, 1e-3), 0.5 / max(1 - pos, 1e-3))  # balanced classes

    def forward(xb: Any, mb: Any) -> Any:
        c = seg(xb)
        sent = mb.clone()
        sent[:, 0] = False
        has = sent.any(1, keepdim=True)
        smax = torch.logsumexp(SMOOTH_MAX * c.masked_fill(~sent[..., None], -1e4), 1) / SMOOTH_MAX
        m = sent.float()[..., None]
        mean = (c * m).sum(1) / m.sum(1).clamp(min=1)
        pooled = torch.cat([torch.where(has, smax, c[:, 0]), torch.where(has, mean, c[:, 0]), c[:, 0]], -1)
        return mix(pooled).squeeze(-1)

    for _ in range(epochs):
        seg.train()
        order = torch.randperm(len(yt), generator=generator)
        for start in range(0, len(yt), batch):
            ix = order[start : start + batch]
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(forward(xt[ix], mt[ix]), yt[ix], reduction="none") * weight[ix]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    seg.eval()
    w1, b1 = seg[0].weight.detach().numpy().T.copy(), seg[0].bias.detach().numpy().copy()
    w2, b2 = seg[3].weight.detach().numpy().T.copy(), seg[3].bias.detach().numpy().copy()
    return PairHead(w1, b1, w2, b2, mix.weight.detach().numpy()[0].copy(), mix.bias.detach().numpy().copy())


def fit_pair(x: np.ndarray, mask: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, val_rows: np.ndarray,
             seed: int = SEED) -> FittedPair:
    """The pair-head recipe, one place: fit the network on ``fit_rows`` (balanced log-loss, 40
    epochs, AdamW), calibrate it on ``val_rows`` (isotonic or Platt, as the heads) and choose the
    threshold with the best validation F1."""
    from assay.classify import metrics as M
    from assay.classify.train import _calibrate

    y = np.asarray(y, bool)
    if y[val_rows].all() or not y[val_rows].any():
        raise BadInput("fit_pair: the validation rows need both labels")
    head = _torch_fit(x[fit_rows], mask[fit_rows], y[fit_rows], seed)
    val_logits = head.logits(x[val_rows], mask[val_rows])
    head.calibration, head.cal_x, head.cal_y = _calibrate(val_logits, y[val_rows])
    threshold = float(M.best_threshold(y[val_rows], head.calibrate(val_logits)))
    return FittedPair(head, threshold, float(M._auroc(y[val_rows], val_logits)))


def training_inputs(name: str, progress: Callable[[str], None] | None = None, *, limit: int | None = None,
                    seed: int = SEED, select: Callable[[list[dict]], list[dict]] | None = None,
                    ) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """The labelled rows of pair head ``name`` (:func:`assay.classify.tasks.response_rows`) and
    their inputs, on fp32 embeddings through the embedding cache (the reference encoder).
    ``select``: rows -> the rows to keep; ``limit``: then at most that many rows per split
    (``assay.classify.train.subsample_rows``, the meaning ``--limit`` has for every head). Both
    cut before embedding, so a quick run is quick."""
    from assay.classify.tasks import response_rows, split_of
    from assay.classify.train import _embed, subsample_rows

    if name not in PAIR_NAMES:
        raise BadInput(f"unknown pair head {name!r}; known: {', '.join(PAIR_NAMES)}")
    rows, _ = response_rows(PAIR_NAMES[name])
    if select is not None:
        rows = select(rows)
    if limit:
        keep = subsample_rows(np.asarray([r["label"] for r in rows], bool), np.asarray([split_of(r["group"]) for r in rows]),
                              limit, seed)
        rows = [rows[i] for i in keep]
    x, mask = pair_inputs([r["prompt"] or "" for r in rows], [r["response"] for r in rows],
                          lambda texts: _embed(texts, progress, name, MAX_TOKENS))
    return rows, x, mask


def _split_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    from assay.classify import metrics as M

    predicted = scores >= threshold
    precision, recall, f1 = M._prf(y, predicted)
    out: dict[str, Any] = {"n": len(y), "positives": int(y.sum()), "precision": round(precision, 4),
                           "recall": round(recall, 4), "f1": round(f1, 4)}
    if y.any() and not y.all():
        out["auroc"] = round(float(M._auroc(y, scores)), 4)
    return out


def train_pair(name: str, *, out_dir: Path = MODELS_DIR, limit: int | None = None, seed: int = SEED,
               progress: Callable[[str], None] | None = None, n_bootstrap: int | None = None) -> dict[str, Any]:
    """Fit pair head ``name`` on the train split (by prompt), calibrate and threshold on val,
    measure on test (overall with 95% intervals, as the heads' ``test.model``, and per source),
    and write ``<name>.npz`` and ``<name>.json``. ``limit``: at most that many rows per split, as
    for the heads (a quick check). The returned document adds ``train_seconds``, which the file
    leaves out: the file is part of the head's registered content (``classify.governance``), so
    a retrain with the same seed and data must write the same bytes."""
    from assay.classify import metrics as M
    from assay.classify.encoder import encoder_id
    from assay.classify.tasks import labelled_files, split_of
    from assay.classify.train import _manifest, save_npz
    from assay.data import dataset_path

    started = time.perf_counter()
    n_bootstrap = M.N_BOOTSTRAP if n_bootstrap is None else n_bootstrap
    rows, x, mask = training_inputs(name, progress, limit=limit, seed=seed)
    y = np.asarray([r["label"] for r in rows], bool)
    split = np.asarray([split_of(r["group"]) for r in rows])
    source = np.asarray([r["source"] for r in rows])
    if progress:
        progress(f"fitting {name} on {int((split == 'train').sum())} rows")
    fitted = fit_pair(x, mask, y, split == "train", split == "val", seed)
    test = split == "test"
    scores = fitted.head.calibrate(fitted.head.logits(x[test], mask[test]))
    by_source = {str(s): _split_metrics(y[test][source[test] == s], scores[source[test] == s], fitted.threshold)
                 for s in sorted(set(source[test]))}
    arrays = fitted.head.arrays()
    sha = arrays_sha256(arrays)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npz(out_dir / f"{name}.npz", arrays)
    data_files = [dataset_path("do_not_answer", "do_not_answer_data.csv")]
    if PAIR_NAMES[name] == "harmful_response":
        data_files.append(dataset_path("jailbreakbench", "attack-artifacts"))
    doc = {
        "name": name, "kind": "pair", "version": f"{name}@sha256:{sha}",
        "question": "refusal" if PAIR_NAMES[name] == "refusal" else "harmful",
        "description": __doc__.splitlines()[0], "rows_from": PAIR_NAMES[name],
        "encoder": encoder_id(MAX_TOKENS), "max_tokens": MAX_TOKENS, "k": K, "hidden": HIDDEN, "seed": seed, "limit": limit,
        "calibration": fitted.head.calibration, "threshold": round(fitted.threshold, 6), "weights_sha256": sha,
        "val_auroc": round(fitted.val_auroc, 4),
        "split": {s: {"n": int((split == s).sum()), "positives": int(y[split == s].sum())} for s in ("train", "val", "test")},
        "test": M.evaluate(y[test], {"model": (scores, fitted.threshold)}, n_bootstrap=n_bootstrap),
        "test_by_source": by_source,
        "bootstrap": {"resamples": n_bootstrap, "interval": "95% percentile", "seed": M.BOOTSTRAP_SEED},
        "data": _manifest([*data_files, *labelled_files()]),
    }
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {**doc, "train_seconds": round(time.perf_counter() - started, 1)}
