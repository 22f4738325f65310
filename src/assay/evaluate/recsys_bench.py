"""``assay bench recsys``: ranking metrics of a 1M-row TREC run, end to end (read the run and the
qrels, order, compute NDCG/MAP/precision/recall/MRR/hit rate @10 with their intervals), beside
ranx doing the same in the same process, as a new user would (``Qrels.from_file``,
``Run.from_file``, ``evaluate``).

Both compute under ranx's conventions, and the bench checks they agree. ranx compiles its numba
kernels on first use: the bench reports that cold run and a warm one, and ``vs_ranx`` is the
warm ranx time over assay's (the conservative ratio; target >= 1.0).

Figures (``BenchResult``): ``metrics_s`` (s), ``vs_ranx`` (x, target >= 1.0), ``vs_ranx_cold``
(x) and ``max_abs_difference_vs_ranx``; baseline ``ranx_s`` and ``ranx_cold_s`` (null where ranx
is not installed, with the reason in ``detail.ranx``). The collection's size is in ``detail``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assay.records import BenchResult, at_least

METRICS = ("ndcg", "map", "precision", "recall", "mrr", "hit_rate")
RANX_NAMES = {"ndcg": "ndcg@10", "map": "map@10", "precision": "precision@10", "recall": "recall@10", "mrr": "mrr@10", "hit_rate": "hit_rate@10"}


def write_collection(folder: Path, users: int, per_user: int, items: int, judged: int, seed: int = 23) -> tuple[Path, Path]:
    """A synthetic run (users x per_user rows, distinct scores) and graded qrels, as TREC files."""
    rng = np.random.default_rng(seed)
    run_path, qrels_path = folder / "run.trec", folder / "qrels.trec"
    with run_path.open("w") as run, qrels_path.open("w") as qrels:
        for u in range(users):
            docs = rng.choice(items, size=per_user + judged, replace=False)
            scores = rng.permutation(per_user) + rng.random(per_user)
            run.write("".join(f"u{u} Q0 d{d} {r} {s:.6f} bench\n" for r, (d, s) in enumerate(zip(docs[:per_user], scores, strict=True))))
            # half the judged items come from the run, so there are hits
            judged_docs = np.concatenate([docs[: judged // 2], docs[per_user : per_user + judged - judged // 2]])
            qrels.write("".join(f"u{u} 0 d{d} {g}\n" for d, g in zip(judged_docs, rng.integers(0, 4, judged), strict=True)))
    return qrels_path, run_path


def _assay(qrels: Path, run: Path) -> dict[str, float]:
    from assay.evaluate.recsys_metrics import evaluate_trec

    aggs = evaluate_trec(qrels, run, 10, METRICS, conventions="ranx")
    return {m: a.value for m, a in aggs.items()}


def _ranx(qrels: Path, run: Path) -> dict[str, float]:
    import ranx

    q = ranx.Qrels.from_file(str(qrels), kind="trec")
    r = ranx.Run.from_file(str(run), kind="trec")
    out = ranx.evaluate(q, r, list(RANX_NAMES.values()), make_comparable=True)
    return {m: float(out[name]) for m, name in RANX_NAMES.items()}


def _timed(fn, *args) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - started, value


def run(quick: bool = False) -> BenchResult:
    users, per_user = (1_000, 100) if quick else (10_000, 100)
    repeats = 1 if quick else 3
    try:
        import ranx
    except ImportError:
        ranx = None
    with tempfile.TemporaryDirectory() as tmp:
        qrels, run_path = write_collection(Path(tmp), users, per_user, items=50_000, judged=20)
        ranx_cold = _timed(_ranx, qrels, run_path)[0] if ranx else None
        ours, ranx_warm = [], []
        values: dict[str, float] = {}
        peer: dict[str, float] = {}
        for _ in range(repeats):
            t, values = _timed(_assay, qrels, run_path)
            ours.append(t)
            if ranx:
                t, peer = _timed(_ranx, qrels, run_path)
                ranx_warm.append(t)
    assay_s = statistics.median(ours)
    ranx_s = statistics.median(ranx_warm) if ranx_warm else None
    return BenchResult(
        figures={"metrics_s": round(assay_s, 3),
                 "vs_ranx": round(ranx_s / assay_s, 2) if ranx_s is not None else None,
                 "vs_ranx_cold": round(ranx_cold / assay_s, 2) if ranx_s is not None else None,
                 "max_abs_difference_vs_ranx": max(abs(values[m] - peer[m]) for m in METRICS) if ranx_s is not None else None},
        baseline={"ranx_s": round(ranx_s, 3) if ranx_s is not None else None, "ranx_cold_s": round(ranx_cold, 3) if ranx_s is not None else None},
        units={"metrics_s": "s", "vs_ranx": "x", "vs_ranx_cold": "x", "max_abs_difference_vs_ranx": "metric value",
               "ranx_s": "s", "ranx_cold_s": "s"},
        targets={"vs_ranx": at_least(1.0, when="ranx warm (numba compiled)")},
        measures={
            "metrics_s": "read the TREC run and qrels, order, six metrics @10 with 95% intervals (1,000 bootstrap "
                         "resamples each), median wall",
            "vs_ranx": "ranx warm (Qrels.from_file, Run.from_file, evaluate) ÷ metrics_s",
            "vs_ranx_cold": "ranx's first call, numba compiling its kernels, ÷ metrics_s",
            "max_abs_difference_vs_ranx": "the largest difference between a metric of assay and of ranx",
        },
        detail={"rows": users * per_user, "users": users, "per_user": per_user, "qrels_rows": users * 20, "k": 10,
                "metrics": list(METRICS), "conventions": "ranx", "repeats": repeats,
                **({} if ranx_s is not None else {"ranx": "not installed (pip install 'assay[dev]'): no baseline"})},
    )
