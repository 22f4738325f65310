"""``assay bench classify``: texts per second per classifier at batch sizes 1 and 128, beside the
baselines measured in the same run on the same texts.

- The figures are the classifiers as they serve: normalisation, the int8 ONNX encoder (the
  default precision), the head and its calibration.
- ``baseline`` holds the same classifiers on the fp32 ONNX encoder (what served before int8, and
  what the heads were trained on), MiniLM through sentence-transformers/PyTorch as it ships, and
  ``alt-profanity-check``. int8 and fp32 are timed alternately within each repeat, so a change in
  the machine's load hits both.
- ``agreement`` says how far the int8 scores are from the fp32 ones on the same texts (absolute
  score differences and the share of equal labels): the tolerance the speed is bought with.
- ``shared_encoding``: toxicity, hate and offensive scored together (one encoding) against one
  after the other.
- ``texts_per_cpu_s_batch128``: texts per CPU-second of this process (all its threads), which
  other jobs on the shared cores disturb far less than wall-clock rates.

Every repeat times every classifier in turn (round robin), so a burst of load from another job
falls on all of them instead of deciding which one is the slowest.

Figures (``BenchResult``, texts/s): ``<name>_texts_per_s_batch128`` and ``_batch1`` per
classifier, ``min_texts_per_s_batch128`` (target >= 300) and ``min_texts_per_s_batch1``.
Baseline: ``fp32_onnx_*``, ``alt_profanity_check_*`` and ``torch_minilm_toxicity_*`` (null, with
the reason in ``detail.torch_minilm``, where sentence-transformers is missing). The ratios,
agreement, shared encoding and per-CPU-second rates are in ``detail``.

Texts are real test-split texts of each classifier (tweets, prompts, LLM responses), so the
figures include the real length mix. Each figure is the median of several repeats after a full
warm-up pass; the load average before and after is reported because the cores are shared.
"""

from __future__ import annotations

import os
import random
import statistics
import time

import numpy as np

from assay.classify.model import HEAD_NAMES
from assay.records import BenchResult, at_least

TARGET_TEXTS_PER_S = 300.0


def _texts_for(name: str, n: int) -> list[str]:
    from assay.classify.tasks import load_task

    task = load_task(name)
    test = [task.texts[i] for i in task.subset("test")]
    rng = random.Random(11)
    return rng.sample(test, min(n, len(test)))


def _time(fn, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fn(texts)
    return time.perf_counter() - started


def _rate(fn, texts: list[str], repeats: int) -> float:  # type: ignore[no-untyped-def]
    return len(texts) / statistics.median(_time(fn, texts) for _ in range(repeats))


def _time_cpu(fn, texts: list[str]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    started, cpu = time.perf_counter(), time.process_time()
    fn(texts)
    return time.perf_counter() - started, time.process_time() - cpu


def _rates_alternating(fns: dict, texts: list[str], repeats: int) -> dict[str, float]:  # type: ignore[type-arg]
    """Median texts/s of each function, timed in turn within every repeat (ABAB...)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(_time(fn, texts))
    return {k: len(texts) / statistics.median(v) for k, v in times.items()}


def _rate_one_by_one(fn, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    times = []
    for text in texts:
        started = time.perf_counter()
        fn([text])
        times.append(time.perf_counter() - started)
    return 1.0 / statistics.median(times)


def _with_precision(clf, precision: str):  # type: ignore[no-untyped-def]
    """The same head on an encoder of another precision."""
    from dataclasses import replace

    from assay.classify.encoder import get_encoder

    encoder = get_encoder(max_tokens=clf.max_tokens, precision=precision, adapter=clf.adapter)
    twin = replace(clf)
    twin.embed = lambda texts, batch_size=128: encoder.encode(texts, batch_size=batch_size)  # type: ignore[method-assign]
    return twin


def agreement(scores: np.ndarray, reference: np.ndarray, threshold: float) -> dict[str, float]:
    diff = np.abs(np.asarray(scores) - np.asarray(reference))
    return {
        "score_abs_diff_median": round(float(np.median(diff)), 5),
        "score_abs_diff_p99": round(float(np.percentile(diff, 99)), 4),
        "score_abs_diff_max": round(float(diff.max()), 4),
        "label_agreement": round(float(np.mean((scores >= threshold) == (reference >= threshold))), 4),
    }


def run(quick: bool = False) -> BenchResult:
    from assay.classify import load_classifier
    from assay.classify.baselines import profanity_check
    from assay.classify.encoder import default_backend, default_precision, get_encoder
    from assay.classify.model import score_many

    n_batch = 32 if quick else 256
    n_single = 4 if quick else 32
    repeats = 1 if quick else 5
    load_before = os.getloadavg()[0]
    figures: dict[str, float] = {}
    baseline: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    agree: dict[str, dict[str, float]] = {}
    texts_by_family: dict[str, list[str]] = {}
    tokens: dict[str, float] = {}
    precision = default_precision()
    served_by: dict = {}
    fp32_by: dict = {}
    for name in HEAD_NAMES:
        clf = load_classifier(name)
        fp32 = _with_precision(clf, "fp32")
        served_by[name], fp32_by[name] = clf, fp32
        texts = _texts_for(name, n_batch)
        texts_by_family[name] = texts
        served, reference = clf.score(texts), fp32.score(texts)  # full warm-up pass of both
        agree[name] = agreement(served, reference, clf.threshold)
    # Batch 128: round robin over classifiers and precisions within every repeat.
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for name in HEAD_NAMES:
            for which, c in (("served", served_by[name]), ("fp32", fp32_by[name])):
                w, t = _time_cpu(lambda x, c=c: c.score(x, batch_size=128), texts_by_family[name])
                wall.setdefault((name, which), []).append(w)
                cpu.setdefault((name, which), []).append(t)
    per_cpu_s: dict[str, float] = {}
    for name in HEAD_NAMES:
        clf, fp32, texts = served_by[name], fp32_by[name], texts_by_family[name]
        encoder = get_encoder(max_tokens=clf.max_tokens, adapter=clf.adapter)
        if encoder.backend == "onnx":  # word pieces the encoder reads (after the cut, before padding)
            tokens[name] = round(float(np.mean([sum(e.attention_mask) for e in encoder._tokenizer.encode_batch(clf.prepare(texts))])), 1)
        n = len(texts)
        figures[f"{name}_texts_per_s_batch128"] = round(n / statistics.median(wall[(name, "served")]), 1)
        baseline[f"fp32_onnx_{name}_texts_per_s_batch128"] = round(n / statistics.median(wall[(name, "fp32")]), 1)
        per_cpu_s[name] = round(n / max(statistics.median(cpu[(name, "served")]), 1e-9), 1)
        per_cpu_s[f"fp32_onnx_{name}"] = round(n / max(statistics.median(cpu[(name, "fp32")]), 1e-9), 1)
        figures[f"{name}_texts_per_s_batch1"] = round(_rate_one_by_one(lambda t, c=clf: c.score(t, batch_size=1), texts[:n_single]), 1)
        baseline[f"fp32_onnx_{name}_texts_per_s_batch1"] = round(_rate_one_by_one(lambda t, c=fp32: c.score(t, batch_size=1), texts[:n_single]), 1)
    figures["min_texts_per_s_batch128"] = min(figures[f"{n}_texts_per_s_batch128"] for n in HEAD_NAMES)
    figures["min_texts_per_s_batch1"] = min(figures[f"{n}_texts_per_s_batch1"] for n in HEAD_NAMES)
    baseline["fp32_onnx_min_texts_per_s_batch128"] = min(baseline[f"fp32_onnx_{n}_texts_per_s_batch128"] for n in HEAD_NAMES)
    ratios = {n: round(figures[f"{n}_texts_per_s_batch128"] / baseline[f"fp32_onnx_{n}_texts_per_s_batch128"], 2) for n in HEAD_NAMES}

    # Three heads on the same tweets: one shared encoding against one encoding per head.
    tweets = texts_by_family["toxicity"]
    family = {n: load_classifier(n) for n in ("toxicity", "hate", "offensive")}
    shared = _rates_alternating(
        {
            "shared": lambda t: score_many(family, t),
            "separate": lambda t: [c.score(t) for c in family.values()],
        },
        tweets,
        repeats,
    )
    shared_encoding = {
        "toxicity_hate_offensive_texts_per_s_shared": round(shared["shared"], 1),
        "toxicity_hate_offensive_texts_per_s_separate": round(shared["separate"], 1),
        "speedup": round(shared["shared"] / shared["separate"], 2),
    }

    profanity_check(tweets[:8])
    baseline["alt_profanity_check_texts_per_s_batch128"] = round(_rate(profanity_check, tweets, repeats), 1)
    baseline["alt_profanity_check_texts_per_s_batch1"] = round(_rate_one_by_one(profanity_check, tweets[:n_single]), 1)
    try:
        from assay.classify.encoder import Encoder
        from assay.classify.normalise import normalise

        torch_encoder = Encoder(backend="torch")
        prepared = [normalise(t, social=True) for t in tweets]
        torch_encoder.encode(prepared)
        baseline["torch_minilm_toxicity_texts_per_s_batch128"] = round(_rate(lambda t: torch_encoder.encode(t, batch_size=128), prepared, repeats), 1)
        baseline["torch_minilm_toxicity_texts_per_s_batch1"] = round(
            _rate_one_by_one(lambda t: torch_encoder.encode(t, batch_size=1), prepared[:n_single]), 1
        )
    except Exception as e:  # sentence-transformers missing: report, do not fail the benchmark
        baseline["torch_minilm_toxicity_texts_per_s_batch128"] = baseline["torch_minilm_toxicity_texts_per_s_batch1"] = None
        notes["torch_minilm"] = f"not measured: {e}"

    return BenchResult(
        figures=figures,
        baseline=baseline,
        units={k: "texts/s" for k in (*figures, *baseline)},
        targets={"min_texts_per_s_batch128": at_least(TARGET_TEXTS_PER_S, when="every classifier, batch 128, this machine")},
        measures={
            "min_texts_per_s_batch128": "the slowest classifier as served (normalise, int8 ONNX encoder, head, calibration), "
                                        "real test texts, batch 128, median of repeats",
            "min_texts_per_s_batch1": "the same, one text a call",
        },
        detail={
            "ratio_to_fp32_onnx_batch128": ratios,
            "agreement_with_fp32": agree,
            "shared_encoding": shared_encoding,
            "texts_per_cpu_s_batch128": per_cpu_s,
            "backend": default_backend(),
            "precision": precision,
            "texts_per_classifier": n_batch,
            "repeats": repeats,
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "cpu_count": os.cpu_count(),
            "mean_chars": {n: round(float(np.mean([len(t) for t in ts])), 1) for n, ts in texts_by_family.items()},
            "mean_word_pieces": tokens,
            **notes,
        },
    )
