"""``assay bench explain``: TreeSHAP attributions for a 1,000-candidate request beside the ranker's
own scoring of the same request, and the reference recommender's training time on ml-latest-small.

Figures (``BenchResult``): ``explain_ms_1000`` (median wall ms, the fast exact TreeSHAP path used
in serving; target <= 20 ms), ``train_s`` (target <= 60 s), ``explain_over_score`` and
``lightgbm_over_fast`` (x). Baseline, same run: ``score_ms_1000`` (LightGBM scoring the same
matrix) and ``lightgbm_pred_contrib_ms_1000`` (LightGBM's own TreeSHAP, which the fast path must
equal: ``detail.checks.max_abs_diff_vs_lightgbm``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np

from assay.explain.ranking import contributions, shap_tables
from assay.records import BenchResult, at_most
from assay.recsys.model import TrainConfig, train
from assay.recsys.pipeline import load_dataset, quick_config


def _median_ms(fn, reps: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms) over ``reps`` calls after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def run(quick: bool = False) -> BenchResult:
    users = 80 if quick else None
    data = load_dataset("ml-latest-small", users)
    config = quick_config() if quick else TrainConfig()
    started, started_cpu = time.perf_counter(), time.process_time()
    rec, _split = train(data, config)
    train_s, train_cpu_s = time.perf_counter() - started, time.process_time() - started_cpu

    user = int(rec.state.user_ids[0])
    ids, matrix, _cold = rec.features(user, n=1000)
    if ids.size < 1000:  # a small slice has fewer rated films: pad by repeating rows
        reps = int(np.ceil(1000 / max(ids.size, 1)))
        matrix = np.tile(matrix, (reps, 1))[:1000]
    shap_tables(rec.booster)  # build the tables once (model load time, not request time)
    reps = 5 if quick else 30
    score_ms, score_cpu = _median_ms(lambda: rec.score(matrix), reps)
    fast_ms, fast_cpu = _median_ms(lambda: contributions(rec, matrix, "fast"), reps)
    lgb_reps = 2 if quick else 5
    lgb_ms, lgb_cpu = _median_ms(lambda: contributions(rec, matrix, "lightgbm"), lgb_reps)
    diff = float(
        np.abs(contributions(rec, matrix, "fast") - contributions(rec, matrix, "lightgbm")).max()
    )
    sums = contributions(rec, matrix, "fast").sum(axis=1)
    return BenchResult(
        figures={"explain_ms_1000": round(fast_ms, 3), "train_s": round(train_s, 3),
                 "explain_over_score": round(fast_ms / score_ms, 3) if score_ms else None,
                 "lightgbm_over_fast": round(lgb_ms / fast_ms, 3) if fast_ms else None},
        baseline={"score_ms_1000": round(score_ms, 3), "lightgbm_pred_contrib_ms_1000": round(lgb_ms, 3)},
        units={"explain_ms_1000": "ms", "train_s": "s", "explain_over_score": "x", "lightgbm_over_fast": "x",
               "score_ms_1000": "ms", "lightgbm_pred_contrib_ms_1000": "ms"},
        targets={"explain_ms_1000": at_most(20.0, when="1,000 candidates"), "train_s": at_most(60.0, when="ml-latest-small")},
        measures={
            "explain_ms_1000": "exact TreeSHAP of a 1,000-candidate request on the serving path, median wall",
            "train_s": "training the reference recommender (wall)",
            "explain_over_score": "explain_ms_1000 ÷ the ranker scoring the same matrix",
            "lightgbm_over_fast": "LightGBM's own pred_contrib ÷ explain_ms_1000 on the same matrix",
        },
        detail={
            "checks": {
                "max_abs_diff_vs_lightgbm": diff,
                "max_abs_sum_minus_score": float(np.abs(sums - rec.score(matrix)).max()),
            },
            "cpu_ms": {"train": round(train_cpu_s * 1000, 1), "explain": round(fast_cpu, 3), "score": round(score_cpu, 3), "lightgbm_pred_contrib": round(lgb_cpu, 3)},
            "setup": {"candidates": int(matrix.shape[0]), "ratings": len(data.ratings), "trees": rec.booster.num_trees(),
                      "config": {k: v for k, v in vars(replace(config)).items() if k in ("rounds", "num_leaves", "max_depth", "factors")}},
        },
    )  # fmt: skip
