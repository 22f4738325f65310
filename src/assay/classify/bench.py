"""``assay bench classify``: texts per second per classifier at batch sizes 1 and 128, beside the
baselines measured in the same run on the same texts (``alt-profanity-check``, and the MiniLM
encoder run through sentence-transformers/PyTorch as it ships).

Texts are real test-split texts of each classifier (tweets, prompts, LLM responses), so the
figures include normalisation and the real length mix. Each figure is the median of several
repeats; the machine's load average is reported next to them because the cores are shared.
"""

from __future__ import annotations

import os
import random
import statistics
import time

import numpy as np

from assay.classify.model import HEAD_NAMES

TARGET_TEXTS_PER_S = 300.0


def _texts_for(name: str, n: int) -> list[str]:
    from assay.classify.tasks import load_task

    task = load_task(name)
    test = [task.texts[i] for i in task.subset("test")]
    rng = random.Random(11)
    return rng.sample(test, min(n, len(test)))


def _rate(fn, texts: list[str], repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(texts)
        times.append(time.perf_counter() - started)
    return len(texts) / statistics.median(times)


def _rate_one_by_one(fn, texts: list[str]) -> float:  # type: ignore[no-untyped-def]
    times = []
    for text in texts:
        started = time.perf_counter()
        fn([text])
        times.append(time.perf_counter() - started)
    return 1.0 / statistics.median(times)


def run(quick: bool = False) -> dict:
    from assay.classify import load_classifier
    from assay.classify.baselines import profanity_check

    n_batch = 32 if quick else 256
    n_single = 4 if quick else 32
    repeats = 1 if quick else 3
    figures: dict[str, float] = {}
    baseline: dict[str, float] = {}
    texts_by_family: dict[str, list[str]] = {}
    for name in HEAD_NAMES:
        clf = load_classifier(name)
        texts = _texts_for(name, n_batch)
        texts_by_family[name] = texts
        clf.score(texts[:8])  # load the encoder before timing
        figures[f"{name}_texts_per_s_batch128"] = round(_rate(lambda t, c=clf: c.score(t, batch_size=128), texts, repeats), 1)
        figures[f"{name}_texts_per_s_batch1"] = round(_rate_one_by_one(lambda t, c=clf: c.score(t, batch_size=1), texts[:n_single]), 1)
    figures["min_texts_per_s_batch128"] = min(figures[f"{n}_texts_per_s_batch128"] for n in HEAD_NAMES)
    figures["min_texts_per_s_batch1"] = min(figures[f"{n}_texts_per_s_batch1"] for n in HEAD_NAMES)

    tweets = texts_by_family["toxicity"]
    profanity_check(tweets[:8])
    baseline["alt_profanity_check_texts_per_s_batch128"] = round(_rate(profanity_check, tweets, repeats), 1)
    baseline["alt_profanity_check_texts_per_s_batch1"] = round(_rate_one_by_one(profanity_check, tweets[:n_single]), 1)
    try:
        from assay.classify.encoder import Encoder
        from assay.classify.normalise import normalise

        torch_encoder = Encoder(backend="torch")
        prepared = [normalise(t, social=True) for t in tweets]
        torch_encoder.encode(prepared[:8])
        baseline["torch_minilm_toxicity_texts_per_s_batch128"] = round(_rate(lambda t: torch_encoder.encode(t, batch_size=128), prepared, repeats), 1)
        baseline["torch_minilm_toxicity_texts_per_s_batch1"] = round(
            _rate_one_by_one(lambda t: torch_encoder.encode(t, batch_size=1), prepared[:n_single]), 1
        )
    except Exception as e:  # sentence-transformers missing: report, do not fail the benchmark
        baseline["torch_minilm_error"] = str(e)  # type: ignore[assignment]
    from assay.classify.encoder import default_backend

    return {
        "figures": figures,
        "baseline": baseline,
        "targets": {"min_texts_per_s_batch128": TARGET_TEXTS_PER_S},
        "met": {"min_texts_per_s_batch128": bool(figures["min_texts_per_s_batch128"] >= TARGET_TEXTS_PER_S)},
        "backend": default_backend(),
        "texts_per_classifier": n_batch,
        "repeats": repeats,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "mean_chars": {n: round(float(np.mean([len(t) for t in ts])), 1) for n, ts in texts_by_family.items()},
    }
