"""``assay classify train NAME``: fit a head on cached MiniLM embeddings, calibrate it, choose its
threshold on the validation split, measure it on the test split beside the baselines, measure
what normalisation buys on obfuscated test texts, and write the weights, metrics and model card.

Everything is seeded (split hash, scikit-learn ``random_state``, bootstrap, obfuscation), so a
re-run on the same data writes the same weights (same ``version``).

A head named in ``finetune.FINETUNE_FOR`` (``hate``) first fine-tunes the encoder with LoRA
(:mod:`assay.classify.finetune`); every embedding of that run (training, validation, test, the
int8 check, obfuscation) then comes from the fine-tuned encoder, and the adapter is saved beside
the head. Seeded torch training on CPU: a re-run on the same machine gives the same adapter on
the tiny slice the tests train; a full run (338 steps) was reproduced only to float16 rounding (a
few thousand values one float16 step apart, so another sha256 and version; docs/classify.md, recipe G).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assay.classify import metrics as M
from assay.classify.baselines import BASELINES, BASELINES_FOR
from assay.classify.finetune import FINETUNE_FOR, Adapter, FinetuneConfig
from assay.classify.model import (
    HEAD_NAMES,
    MODELS_DIR,
    PAIR_HEAD_NAMES,
    Head,
    arrays_sha256,
    classifier_sha256,
)
from assay.classify.obfuscate import KINDS, obfuscate
from assay.classify.tasks import SEED, TaskData, load_task
from assay.config import settings

DESCRIPTIONS = {
    "toxicity": "Is this text hateful or offensive? (Davidson tweets: share of annotators voting hate or offensive; ToxiGen hand-written hate vs neutral statements)",
    "hate": "Is this text hate speech (not merely offensive)? (Davidson hate vote share; ToxiGen hate statements; the project's contrast cases: negation, counter-speech, quotation, positive statements, reclaimed terms, non-hateful profanity)",
    "offensive": "Is this text offensive language (but not hate speech)? (Davidson offensive vote share)",
    "harmful_response": "Is this LLM response harmful? (Do-Not-Answer human harmfulness labels on six LLMs' answers; JailbreakBench attacked responses with the benchmark judge's jailbroken verdicts)",
    "refusal": "Did the model refuse? (Do-Not-Answer human action label 0: cannot assist / refuses)",
    "prompt_injection": "Is this input a prompt-injection attempt? (CyberSecEval injection cases vs benign prompts from other sets)",
    "claim_match": "Nearest fact-checked claims (FEVER) with similarity and verdict",
}
# Word pieces the encoder reads per text. Responses are cut at 32: whether a model complied or
# refused shows in its opening. Measured on the test split against a cut at 64: harmful_response
# better (AUROC 0.953 vs 0.939, F1 0.767 vs 0.675), refusal level (AUROC 0.972 vs 0.974, F1 0.800
# vs 0.840, intervals overlapping), and responses encode ~1.6x faster (52 -> 32 word pieces).
MAX_TOKENS_FOR = {"harmful_response": 64, "refusal": 64}
# Extra features beside the embedding (``assay.classify.model.FEATURES``): the response heads
# also see whether a refusal phrase occurs (anywhere / in the opening) and whether the answer is
# terse, so they learn when a phrase means a refusal and when an apology still answers.
FEATURES_FOR = {"refusal": ("refusal_phrase", "refusal_opening", "short"),
                "harmful_response": ("refusal_phrase", "refusal_opening", "short")}
CHECK_FRACTION = 0.25  # hash sample of the JailbreakBench / multilingual checks (compute-bound)
TRAIN_ON_JBB = True  # harmful_response trains on JailbreakBench (see tasks.response_task)
Progress = Callable[[str], None]


def _say(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def head_input(name: str, x: np.ndarray, prepared: list[str]) -> np.ndarray:
    """Embeddings plus the head's extra features (the same inputs ``Classifier.inputs`` builds)."""
    from assay.classify.model import feature_matrix

    feats = FEATURES_FOR.get(name, ())
    return np.hstack([x, feature_matrix(feats, prepared)]).astype(np.float32) if feats else x


def max_tokens_for(name: str) -> int:
    from assay.classify.encoder import MAX_TOKENS

    if name in FINETUNE_FOR:
        return FINETUNE_FOR[name].max_tokens
    return MAX_TOKENS_FOR.get(name, MAX_TOKENS)


def _embed(texts: list[str], progress: Progress | None, what: str, max_tokens: int | None = None, precision: str = "fp32",
           adapter: Adapter | None = None) -> np.ndarray:
    """Embeddings through the cache; heads are trained on ``fp32`` (the reference encoder).
    ``adapter``: the fine-tuned encoder's LoRA adapter (its hash is part of the cache key)."""
    from assay.classify.encoder import MAX_TOKENS, EmbeddingCache, get_encoder

    cache = EmbeddingCache(get_encoder(max_tokens=max_tokens or MAX_TOKENS, precision=precision, adapter=adapter))
    done = [0]
    started = time.perf_counter()

    def tick(n: int) -> None:
        done[0] += n
        rate = done[0] / max(time.perf_counter() - started, 1e-9)
        _say(progress, f"embedding {what}: {done[0]} new texts ({rate:.0f}/s)")

    try:
        return cache.encode(texts, progress=tick)
    finally:
        cache.close()


def _soft_rows(x: np.ndarray, target: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft labels as weighted duplicates: each row once as positive (weight p) and once as
    negative (weight 1-p). Weighted log-loss on these equals cross-entropy on the soft target."""
    pos = target > 0
    neg = target < 1
    xs = np.concatenate([x[pos], x[neg]])
    ys = np.concatenate([np.ones(pos.sum(), dtype=int), np.zeros(neg.sum(), dtype=int)])
    ws = np.concatenate([target[pos] * weight[pos], (1 - target[neg]) * weight[neg]])
    # Balance the classes when positives are rare (calibration restores the real base rate).
    pos_w, neg_w = ws[ys == 1].sum(), ws[ys == 0].sum()
    if pos_w and pos_w < 0.25 * neg_w:
        ws[ys == 1] *= np.sqrt(neg_w / pos_w)
    return xs, ys, ws / ws.mean()


def _fit_candidates(x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """Logistic regression and a one-hidden-layer MLP, as (weights, biases) lists."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    out = {}
    lr = LogisticRegression(C=4.0, max_iter=3000)
    lr.fit(x, y, sample_weight=w)
    out["logistic"] = ([lr.coef_.T.astype(np.float32)], [lr.intercept_.astype(np.float32)])
    mlp = MLPClassifier(
        hidden_layer_sizes=(128,), alpha=1e-3, batch_size=256, learning_rate_init=1e-3, max_iter=40, random_state=seed, tol=1e-5
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x, y, sample_weight=w)
    out["mlp128"] = ([c.astype(np.float32) for c in mlp.coefs_], [b.astype(np.float32) for b in mlp.intercepts_])
    return out


def _calibrate(logits: np.ndarray, labels: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
    """Isotonic when the validation split has at least 100 of each class, else Platt scaling."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    if labels.sum() >= 100 and (~labels).sum() >= 100:
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(logits, labels.astype(float))
        return "isotonic", np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)
    platt = LogisticRegression(C=1e4, max_iter=1000).fit(logits.reshape(-1, 1), labels.astype(int))
    return "platt", np.asarray([platt.coef_[0, 0], platt.intercept_[0]], dtype=np.float64), np.zeros(0)


def subsample_rows(label: np.ndarray, split: np.ndarray, limit: int, seed: int) -> list[int]:
    """What ``--limit`` means for every trained head: at most ``limit`` rows per split (a third of
    them positives where there are enough), keeping both classes; the indices kept, in order.
    Seeded: the same rows on every run."""
    rng = np.random.default_rng(seed)
    label, split = np.asarray(label, bool), np.asarray(split)
    keep: list[int] = []
    for which in ("train", "val", "test"):
        idx = np.flatnonzero(split == which)
        pos, neg = idx[label[idx]], idx[~label[idx]]
        k_pos = min(len(pos), max(limit // 3, 1))
        keep += list(rng.permutation(pos)[:k_pos]) + list(rng.permutation(neg)[: max(limit - k_pos, 1)])
    return sorted(int(i) for i in keep)


def _subsample(task: TaskData, limit: int, seed: int) -> TaskData:
    """``task`` cut to :func:`subsample_rows` (for the quick retrain test)."""
    keep = subsample_rows(task.label, task.split, limit, seed)
    return TaskData(
        name=task.name,
        texts=[task.texts[i] for i in keep],
        target=task.target[keep],
        label=task.label[keep],
        split=task.split[keep],
        source=[task.source[i] for i in keep],
        weight=task.weight[keep],
        social=task.social,
        files=task.files,
        stratum=[task.stratum[i] for i in keep],
    )


def _manifest(files: list[Path]) -> dict[str, str]:
    """sha256 per data file, named relative to the data directory, or for the project's own
    labelled files relative to the repository (``src/assay/...``), never by an absolute path."""
    from assay.data import manifest

    root = settings().data_dir
    package = Path(__file__).resolve().parents[1]  # src/assay
    out = {}
    for path, digest in manifest(files).items():
        p = Path(path)
        if p.is_relative_to(root):
            out[str(p.relative_to(root))] = digest
        elif p.resolve().is_relative_to(package):
            out[str(Path("src") / "assay" / p.resolve().relative_to(package))] = digest
        else:
            out[str(p)] = digest
    return out


def _baseline_systems(name: str, texts: list[str], val_texts: list[str], val_labels: np.ndarray) -> dict[str, tuple[np.ndarray, float]]:
    """Baseline scores on ``texts`` with thresholds chosen on validation, as for the model."""
    out = {}
    for baseline in BASELINES_FOR.get(name, ()):
        fn = BASELINES[baseline]
        threshold = M.best_threshold(val_labels, fn(val_texts))
        out[baseline] = (fn(texts), threshold)
    return out


def obfuscation_effect(
    score_normalised: Callable[[list[str]], np.ndarray],
    score_raw: Callable[[list[str]], np.ndarray],
    positives: list[str],
    negatives: list[str],
    threshold: float,
    seed: int = SEED,
) -> dict:
    """Detection rate on obfuscated positives and false-positive rate on obfuscated negatives,
    with normalisation and without it, per obfuscation kind."""
    out: dict[str, dict] = {}
    clean_pos_n = score_normalised(positives) >= threshold
    clean_neg_n = score_normalised(negatives) >= threshold if negatives else np.zeros(0, bool)
    out["clean"] = {
        "detection_rate": round(float(clean_pos_n.mean()), 4),
        "false_positive_rate": round(float(clean_neg_n.mean()) if len(negatives) else 0.0, 4),
    }
    for kind in KINDS:
        pos = [obfuscate(t, kind, seed) for t in positives]
        neg = [obfuscate(t, kind, seed) for t in negatives]
        with_n = score_normalised(pos) >= threshold
        without = score_raw(pos) >= threshold
        row = {
            "detection_rate_normalised": round(float(with_n.mean()), 4),
            "detection_rate_raw": round(float(without.mean()), 4),
        }
        if negatives:
            row["false_positive_rate_normalised"] = round(float((score_normalised(neg) >= threshold).mean()), 4)
            row["false_positive_rate_raw"] = round(float((score_raw(neg) >= threshold).mean()), 4)
        out[kind] = row
    return out


@dataclass
class FittedHead:
    head: Head
    threshold: float
    chosen: str
    val_auroc: dict[str, float]


def fit_head(x_train: np.ndarray, target: np.ndarray, weight: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
             seed: int = SEED, threshold_rows: np.ndarray | None = None) -> FittedHead:
    """The head recipe, one place: fit logistic regression and a one-hidden-layer MLP on soft
    labels, keep the one with the better validation AUROC, calibrate it on the validation rows
    (isotonic or Platt) and choose the threshold with the best validation F1 -- on the rows of
    ``threshold_rows`` (a boolean mask over ``x_val``) when given, else on all of them. Used by
    ``train_head`` and by leave-one-source-out (``assay bench judges``)."""
    xs, ys, ws = _soft_rows(x_train, target, weight)
    candidates = _fit_candidates(xs, ys, ws, seed)
    val_auroc, heads = {}, {}
    for cand, (weights, biases) in candidates.items():
        heads[cand] = Head(weights, biases, "platt", np.asarray([1.0, 0.0]), np.zeros(0))
        val_auroc[cand] = M._auroc(y_val, heads[cand].logits(x_val))
    chosen = max(val_auroc, key=lambda k: (np.nan_to_num(val_auroc[k]), k == "logistic"))
    head = heads[chosen]
    method, cal_x, cal_y = _calibrate(head.logits(x_val), y_val)
    head = Head(head.weights, head.biases, method, cal_x, cal_y)
    on = slice(None) if threshold_rows is None else np.asarray(threshold_rows, dtype=bool)
    threshold = M.best_threshold(y_val[on], head.calibrate(head.logits(x_val[on])))
    return FittedHead(head, float(threshold), chosen, val_auroc)


def threshold_rows(task: TaskData, va: np.ndarray) -> np.ndarray | None:
    """Validation rows the operating threshold is chosen on: all but the project's hate contrast
    cases (``assay_contrast``), when a task has them. Those templated sentences are nearly
    separable after fine-tuning and a sixth of hate's validation rows: with them the best-F1
    threshold rose (recipe D) to where Davidson hate recall fell from 0.47 to 0.11 on validation.
    They still calibrate the head and choose the recipe (held-out templates). ``None``: all rows."""
    keep = np.asarray([not task.source[i].startswith("assay_contrast") for i in va], dtype=bool)
    labels = task.label[va][keep]
    return None if keep.all() or not labels.any() or labels.all() else keep


def train_head(
    name: str,
    *,
    out_dir: Path = MODELS_DIR,
    limit: int | None = None,
    seed: int = SEED,
    progress: Progress | None = None,
    n_bootstrap: int = M.N_BOOTSTRAP,
    finetune_config: FinetuneConfig | None = None,
) -> dict:
    """Train, calibrate, evaluate and save one head classifier; returns its metrics document.
    ``finetune_config`` overrides ``FINETUNE_FOR[name]`` (to compare recipes on validation)."""
    from assay.classify import normalise as norm
    from assay.classify.encoder import encoder_id

    started = time.perf_counter()
    task = load_task(name)
    if limit:
        task = _subsample(task, limit, seed)
    prepared = [norm.normalise(t, social=task.social) for t in task.texts]
    _say(progress, f"{name}: {len(prepared)} texts ({int(task.label.sum())} positive)")
    config = finetune_config or FINETUNE_FOR.get(name)
    adapter, finetune_record, cut = None, None, max_tokens_for(name)
    tr, va, te = task.subset("train"), task.subset("val"), task.subset("test")
    if config is not None:
        from assay.classify.finetune import finetune_recipe, heldout_mask

        cut = config.max_tokens
        adapter, finetune_record = finetune_recipe(task, prepared, config, progress)
        heldout = heldout_mask([s.split(":")[0] for s in task.source], task.texts)
        tr = tr[~heldout[tr]]  # held-out contrast templates: never trained on, by adapter or head
    x = head_input(name, _embed(prepared, progress, name, cut, adapter=adapter), prepared)
    _say(progress, f"{name}: fitting heads on {len(tr)} training rows")
    fit = fit_head(x[tr], task.target[tr], task.weight[tr], x[va], task.label[va], seed, threshold_rows=threshold_rows(task, va))
    head, threshold, chosen, val_auroc, method = fit.head, fit.threshold, fit.chosen, fit.val_auroc, fit.head.calibration
    test_scores = head.calibrate(head.logits(x[te]))

    _say(progress, f"{name}: evaluating on {len(te)} test rows beside baselines")
    raw_test = [task.texts[i] for i in te]
    raw_val = [task.texts[i] for i in va]
    systems = {"model": (test_scores, threshold)}
    systems.update(_baseline_systems(name, raw_test, raw_val, task.label[va]))
    test_metrics = M.evaluate(task.label[te], systems, n_bootstrap=n_bootstrap)
    test_metrics["model"]["ece"] = round(M.expected_calibration_error(task.label[te], test_scores), 4)

    by_source = {}
    sources = sorted({task.source[i].split(":")[0] for i in te})
    if len(sources) > 1:
        for source in sources:
            idx = np.asarray([i for i in te if task.source[i].split(":")[0] == source])
            labels = task.label[idx]
            scores = head.calibrate(head.logits(x[idx]))
            entry = {"n": len(idx), "positives": int(labels.sum()), "positive_rate_predicted": round(float((scores >= threshold).mean()), 4)}
            if labels.any() and not labels.all():
                entry.update({k: v["value"] for k, v in M.evaluate(labels, {"m": (scores, threshold)}, n_bootstrap=0)["m"].items() if isinstance(v, dict)})
                # The baselines' AUROC on the same rows (a source may be easy for a string match).
                rows_in_test = np.searchsorted(te, idx)
                for baseline, (b_scores, _) in systems.items():
                    if baseline != "model":
                        entry[f"auroc_{baseline}"] = round(float(M._auroc(labels, np.asarray(b_scores)[rows_in_test])), 4)
            by_source[source] = entry

    arrays = head.arrays()
    sha = classifier_sha256(arrays, adapter)
    doc: dict = {
        "classifier": name,
        "version": f"{name}@sha256:{sha}",
        "description": DESCRIPTIONS[name],
        "encoder": encoder_id(cut, adapter=adapter),
        "max_tokens": cut,
        "head": {"chosen": chosen, "validation_auroc": {k: round(float(v), 4) for k, v in val_auroc.items()}},
        "calibration": method,
        "threshold": round(threshold, 6),
        "seed": seed,
        "split": {
            s: {"n": len(task.subset(s)), "positives": int(task.label[task.subset(s)].sum())} for s in ("train", "val", "test")
        },
        "test": test_metrics,
        "test_by_source": by_source,
        "bootstrap": {"resamples": n_bootstrap, "interval": "95% percentile", "seed": M.BOOTSTRAP_SEED},
        "data": _manifest(task.files),
        "limit": limit,
    }
    if adapter is not None:
        doc["finetune"] = {**(finetune_record or {}), "adapter_sha256": adapter.sha256, "head_sha256": arrays_sha256(arrays),
                           "validation": finetune_validation(task, x, head, threshold, va, heldout)}

    if not limit:
        _say(progress, f"{name}: extra checks and obfuscation effect")
        doc["checks"] = _checks(name, head, threshold, progress)
        doc["obfuscation"] = _obfuscation_for(name, task, te, head, threshold, progress, seed, adapter)
    _say(progress, f"{name}: test metrics again with the int8 encoder it serves with")
    doc["test_int8"] = int8_check(name, head, threshold, task, te, progress, n_bootstrap, fp32_scores=test_scores, adapter=adapter)
    doc["train_seconds"] = round(time.perf_counter() - started, 1)
    _save(name, out_dir, arrays, sha, doc, task, method, threshold, adapter)
    return doc


def finetune_validation(task: TaskData, x: np.ndarray, head: Head, threshold: float, va: np.ndarray, heldout: np.ndarray) -> dict:
    """The figures fine-tuning recipes are chosen on (never the functional test suite):
    validation AUROC on Davidson + ToxiGen rows, and accuracy on the contrast cases of held-out
    templates (every split: no row of those templates was trained on)."""
    from assay.classify.finetune import contrast_template

    scores = head.calibrate(head.logits(x))
    sources = np.asarray([s.split(":")[0] for s in task.source])
    public = va[np.isin(sources[va], ("davidson", "toxigen"))]
    held = np.flatnonzero(heldout)
    correct = (scores[held] >= threshold) == task.label[held]
    return {
        "val_auroc": round(float(M._auroc(task.label[va], scores[va])), 4),
        "val_auroc_davidson_toxigen": round(float(M._auroc(task.label[public], scores[public])), 4),
        "heldout_templates": {
            "templates": len({contrast_template(task.texts[i]) for i in held}),
            "n": len(held),
            "accuracy": round(float(correct.mean()), 4) if len(held) else None,
            "accuracy_hate": round(float(correct[task.label[held]].mean()), 4) if task.label[held].any() else None,
            "accuracy_not_hate": round(float(correct[~task.label[held]].mean()), 4) if (~task.label[held]).any() else None,
        },
    }


def int8_check(
    name: str,
    head: Head,
    threshold: float,
    task: TaskData,
    te: np.ndarray,
    progress: Progress | None,
    n_bootstrap: int,
    fp32_scores: np.ndarray | None = None,
    adapter: Adapter | None = None,
) -> dict:
    """The test-split metrics of the head when the encoder runs int8 (how it serves), beside
    how far its scores are from the fp32 ones it was trained and calibrated on."""
    from assay.classify import normalise as norm
    from assay.classify.bench import agreement
    from assay.classify.encoder import encoder_id

    prepared = [norm.normalise(task.texts[i], social=task.social) for i in te]
    keep = [j for j, t in enumerate(prepared) if t]
    scores = {}
    for precision in ("int8", "fp32"):
        if precision == "fp32" and fp32_scores is not None:
            scores[precision] = np.asarray(fp32_scores, dtype=np.float64)
            continue
        out = np.zeros(len(te))
        if keep:
            kept = [prepared[j] for j in keep]
            x = head_input(name, _embed(kept, progress, f"{name} test ({precision})", max_tokens_for(name), precision, adapter), kept)
            out[keep] = head.calibrate(head.logits(x))
        scores[precision] = out
    labels = task.label[te]
    metrics = M.evaluate(labels, {"model": (scores["int8"], threshold)}, n_bootstrap=n_bootstrap)["model"]
    metrics["ece"] = round(M.expected_calibration_error(labels, scores["int8"]), 4)
    return {
        "encoder": encoder_id(max_tokens_for(name), "int8", adapter),
        "metrics": metrics,
        "agreement_with_fp32": agreement(scores["int8"], scores["fp32"], threshold),
    }


def recheck_int8(name: str, out_dir: Path = MODELS_DIR, progress: Progress | None = None, n_bootstrap: int = M.N_BOOTSTRAP) -> dict:
    """Add the int8 test metrics to a committed head's metrics document and model card without
    retraining (the weights, config and version stay as they are)."""
    from assay.classify.card import model_card
    from assay.classify.model import load_head_classifier

    path = out_dir / f"{name}.metrics.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    clf = load_head_classifier(name, out_dir)
    if clf.version != doc["version"]:
        raise ValueError(f"{path} describes {doc['version']}, but the committed head is {clf.version}")
    task = load_task(name)
    if doc.get("limit"):
        task = _subsample(task, doc["limit"], doc["seed"])
    te = task.subset("test")
    doc["test_int8"] = int8_check(name, clf.head, clf.threshold, task, te, progress, n_bootstrap, adapter=clf.adapter)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")
    (out_dir / f"{name}.md").write_text(model_card(doc), encoding="utf-8")
    return doc


def _score_fn(head: Head, social: bool, normalised: bool, progress: Progress | None, what: str, max_tokens: int,
              adapter: Adapter | None = None) -> Callable[[list[str]], np.ndarray]:
    from assay.classify import normalise as norm

    def score(texts: list[str]) -> np.ndarray:
        prepared = [norm.normalise(t, social=social) if normalised else norm.light(t, social=social) for t in texts]
        out = np.zeros(len(prepared))
        keep = [i for i, t in enumerate(prepared) if t]
        if keep:
            x = _embed([prepared[i] for i in keep], progress, what, max_tokens, adapter=adapter)
            out[keep] = head.calibrate(head.logits(x))
        return out

    return score


def hash_of(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _obfuscation_for(name: str, task: TaskData, te: np.ndarray, head: Head, threshold: float, progress: Progress | None, seed: int,
                     adapter: Adapter | None = None) -> dict:
    if name in ("harmful_response", "refusal"):
        return {"skipped": "obfuscation targets content and input filters; response classifiers are not evaded by their own model"}
    # The same pool for toxicity, hate and offensive (up to k test texts per stratum, chosen by
    # hash), so their obfuscated variants are embedded once and shared through the cache.
    k = 80 if task.social else 100
    pool: list[int] = []
    for stratum in sorted(set(task.stratum)):
        members = [int(i) for i in te if task.stratum[i] == stratum]
        members.sort(key=lambda i: hash_of(f"{seed}:{task.texts[i]}"))
        pool += members[:k]
    pos = [task.texts[i] for i in pool if task.label[i]]
    neg = [task.texts[i] for i in pool if not task.label[i]]
    result = obfuscation_effect(
        _score_fn(head, task.social, True, progress, f"{name} obfuscated", max_tokens_for(name), adapter),
        _score_fn(head, task.social, False, progress, f"{name} obfuscated", max_tokens_for(name), adapter),
        pos,
        neg,
        threshold,
        seed,
    )
    result["sample"] = {"positives": len(pos), "negatives": len(neg)}
    return result


def _checks(name: str, head: Head, threshold: float, progress: Progress | None) -> dict:
    """Checks on data the head never trained on."""
    from assay.classify import normalise as norm

    if name == "harmful_response" and TRAIN_ON_JBB:
        # JailbreakBench is part of training (split by behaviour); its test rows are reported in
        # test_by_source. What is left to check is how noisy its labels are: the benchmark's
        # two judges on the same test-split responses.
        from assay.classify.tasks import split_of
        from assay.data import jailbreakbench

        pairs = [(a.jailbroken, a.jailbroken_llama_guard1) for a in jailbreakbench.load()
                 if a.response and a.jailbroken_llama_guard1 is not None and split_of(f"jbb:{a.index}") == "test"]
        return {
            "jailbreakbench_judges": {
                "what": f"agreement of JailbreakBench's current judge with its earlier Llama Guard judge on the {len(pairs)} test-split responses that have both verdicts (a ceiling on how well any classifier can match these labels)",
                "agreement": round(float(np.mean([a == b for a, b in pairs])), 4) if pairs else None,
            }
        }
    if name == "harmful_response":
        from assay.classify.tasks import in_sample
        from assay.data import jailbreakbench

        artifacts = [a for a in jailbreakbench.load() if a.response and in_sample(f"jbb:{a.method}:{a.model}:{a.index}", CHECK_FRACTION)]
        texts = [a.response for a in artifacts]
        labels = np.asarray([a.jailbroken for a in artifacts])
        x = _embed([norm.normalise(t) for t in texts], progress, "jailbreakbench responses", max_tokens_for(name))
        scores = head.calibrate(head.logits(x))
        systems = {"model": (scores, threshold), "no-refusal-prefix": (BASELINES["no-refusal-prefix"](texts), 0.5)}
        result = M.evaluate(labels, systems, n_bootstrap=200)
        guard = np.asarray([a.jailbroken_llama_guard1 for a in artifacts if a.jailbroken_llama_guard1 is not None])
        return {
            "jailbreakbench": {
                "what": f"agreement with JailbreakBench's jailbroken verdicts on {len(labels)} real attacked responses (a {CHECK_FRACTION:.0%} hash sample of the 1,637; never trained on)",
                "n": len(labels),
                "positives": int(labels.sum()),
                "metrics": result,
                "judge_agreement_llama_guard1_vs_current": round(
                    float(np.mean([a.jailbroken == a.jailbroken_llama_guard1 for a in artifacts if a.jailbroken_llama_guard1 is not None])), 4
                )
                if len(guard)
                else None,
            }
        }
    if name == "prompt_injection":
        from assay.classify.tasks import in_sample
        from assay.data import cyberseceval

        cases = [c for c in cyberseceval.load(multilingual=True) if in_sample(f"cse:{c.prompt_id}:{c.speaking_language}", CHECK_FRACTION)]
        x = _embed([norm.normalise(c.user_input) for c in cases], progress, "multilingual injections")
        detected = head.calibrate(head.logits(x)) >= threshold
        by_language: dict[str, list[bool]] = {}
        for c, d in zip(cases, detected, strict=True):
            by_language.setdefault(c.speaking_language, []).append(bool(d))
        return {
            "cyberseceval_multilingual": {
                "what": f"recall on {len(cases)} machine-translated injection cases (a {CHECK_FRACTION:.0%} hash sample of 1,004 in 17 languages; MiniLM is English-trained)",
                "recall": round(float(detected.mean()), 4),
                "recall_by_language": {k: round(float(np.mean(v)), 4) for k, v in sorted(by_language.items())},
            }
        }
    return {}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with fixed zip timestamps and member order, so the same arrays
    give the same file bytes (the registry identifies a head's weights by the file's sha256).
    numpy stamps members with the current time; written by hand only for that."""
    import io
    import zipfile

    tmp = path.with_suffix(".npz.partial")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buffer.getvalue())
    tmp.replace(path)


def _save(name: str, out_dir: Path, arrays: dict, sha: str, doc: dict, task: TaskData, method: str, threshold: float,
          adapter: Adapter | None = None) -> None:
    from assay.classify.card import model_card

    out_dir.mkdir(parents=True, exist_ok=True)
    save_npz(out_dir / f"{name}.npz", arrays)
    weights = {f"{name}.npz": arrays_sha256(arrays)}
    if adapter is not None:
        save_npz(out_dir / f"{name}.adapter.npz", adapter.arrays)
        weights[f"{name}.adapter.npz"] = adapter.sha256
    else:
        (out_dir / f"{name}.adapter.npz").unlink(missing_ok=True)
    config = {
        "name": name,
        "description": DESCRIPTIONS[name],
        "encoder": doc["encoder"],
        "calibration": method,
        "threshold": round(threshold, 6),
        "social": task.social,
        "max_tokens": doc["max_tokens"],
        "features": list(FEATURES_FOR.get(name, ())),
        "weights_sha256": arrays_sha256(arrays),
        "head": doc["head"]["chosen"],
        "seed": doc["seed"],
        "data": doc["data"],
    }
    if adapter is not None:
        config["adapter"] = f"{name}.adapter.npz"
        config["adapter_sha256"] = adapter.sha256
        soup = (doc.get("finetune") or {}).get("soup")
        if soup:  # the adapter is a model soup: which seeds' runs it averages
            config["adapter_soup_seeds"] = soup["seeds"]
    (out_dir / f"{name}.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out_dir / f"{name}.metrics.json").write_text(json.dumps(doc, indent=2, sort_keys=True, default=float) + "\n", encoding="utf-8")
    (out_dir / f"{name}.md").write_text(model_card(doc), encoding="utf-8")
    training_runlog(name, doc, out_dir, weights)


def _test_metrics(doc: dict) -> dict[str, dict]:
    """The test split's figures for every system (the head and its baselines) as run log metrics:
    precision is a share of the flagged items, recall of the positives, F1 and AUROC bootstrap
    over the whole split."""
    n = int(doc["split"]["test"]["n"])
    positives = int(doc["split"]["test"]["positives"])
    out = {}
    for system, m in doc["test"].items():
        flagged = round(float(m.get("positive_rate", 0.0)) * n)
        for key, size in (("precision", flagged), ("recall", positives), ("f1", n), ("auroc", n)):
            e = m.get(key)
            if not isinstance(e, dict):
                continue
            low, high = (e.get("ci95") or [None, None])[:2]
            name = key if system == "model" else f"{key}[{system}]"
            out[name] = {"value": e["value"], "n": size, "ci_low": low, "ci_high": high, "method": e.get("interval", ""),
                         "undefined": e.get("undefined")}
    return out


def training_runlog(name: str, doc: dict, out_dir: Path, weights: dict[str, str]) -> Path:
    """The training run's run log (``assay.runlog``, kind ``classifier-training``) beside the head:
    the head's version and weights' sha256, the data files and their hashes, the test figures
    with their intervals. ``<name>.metrics.json`` stays the model card's source."""
    from assay import runlog

    doc = json.loads(json.dumps(doc, default=float))  # numpy scalars -> JSON numbers, as metrics.json has them
    head = runlog.header(
        run_id=f"classify-{name}-{doc['version'].rsplit(':', 1)[-1][:12]}", kind="classifier-training", name=name,
        created_at=runlog.now_iso(), model=runlog.ModelRef(name=doc["version"], hashes=weights),
        datasets=[runlog.DatasetRef(name=str(Path(k).name), sha256=v) for k, v in sorted((doc.get("data") or {}).items())],
        config={k: doc[k] for k in ("encoder", "head", "seed", "limit", "threshold", "split", "bootstrap") if k in doc},
    )
    return runlog.write_runlog(out_dir / f"{name}{runlog.SUFFIX}", head, (), runlog.Summary(
        samples=0, counts=dict(doc["split"]), metrics=_test_metrics(doc),
        results={k: doc[k] for k in ("test_by_source", "calibration", "checks") if k in doc},
        timings=runlog.Timings(wall_s=doc.get("train_seconds")),
        artifacts={"metrics": f"{name}.metrics.json", "card": f"{name}.md", "weights": f"{name}.npz"},
    ))


def train(name: str, **kwargs) -> dict:
    """Train classifier ``name`` (a head, or the claim matcher)."""
    if name in HEAD_NAMES:
        return train_head(name, **kwargs)
    if name in PAIR_HEAD_NAMES:
        from assay.classify.pairs import train_pair

        return train_pair(name, **kwargs)
    if name == "claim_match":
        from assay.classify.claims import build_and_evaluate

        return build_and_evaluate(**kwargs)
    from assay.errors import BadInput

    raise BadInput(f"unknown classifier {name!r}; known: {', '.join((*HEAD_NAMES, *PAIR_HEAD_NAMES, 'claim_match'))}")
