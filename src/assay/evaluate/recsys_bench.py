"""``assay bench recsys``: ranking metrics of a 1M-row TREC run, end to end (read the run and the
qrels, order, compute NDCG/MAP/precision/recall/MRR/hit rate @10 with their intervals), beside
ranx doing the same in the same process, as a new user would (``Qrels.from_file``,
``Run.from_file``, ``evaluate``).

Both compute under ranx's conventions, and the bench checks they agree. ranx compiles its numba
kernels on first use: the bench reports that cold run and a warm one, and ``vs_ranx`` is the
warm ranx time over assay's (the conservative ratio; target >= 1.0).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def run(quick: bool = False) -> dict[str, Any]:
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
    figures: dict[str, Any] = {"rows": users * per_user, "metrics_s": round(assay_s, 3)}
    baseline: dict[str, Any] = {}
    if ranx_warm:
        ranx_s = statistics.median(ranx_warm)
        baseline = {"ranx_s": round(ranx_s, 3), "ranx_cold_s": round(ranx_cold, 3)}
        figures["vs_ranx"] = round(ranx_s / assay_s, 2)
        figures["vs_ranx_cold"] = round(ranx_cold / assay_s, 2)
        figures["max_abs_difference_vs_ranx"] = max(abs(values[m] - peer[m]) for m in METRICS)
    return {
        "figures": figures,
        "baseline": baseline,
        "targets": {"vs_ranx": 1.0},
        "meets_targets": {"vs_ranx": figures.get("vs_ranx", 0.0) >= 1.0} if ranx_warm else {},
        "conditions": (f"{users} users x {per_user} rows = {users * per_user} run rows, {users * 20} qrels rows, k = 10, "
                       f"{', '.join(METRICS)} under ranx's conventions; assay includes 95% intervals (1,000 bootstrap "
                       f"resamples per metric); median of {repeats}; ranx warm (numba compiled), cold reported beside"),
        "note": None if ranx_warm else "ranx is not installed (pip install 'assay[dev]'): no baseline",
    }
