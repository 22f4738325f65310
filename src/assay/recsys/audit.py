"""The recommender audit report: accuracy with intervals, item-side and user-side fairness, and
robustness (from red-team results when they exist), in one HTML file with plots."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.recsys.evaluation import SYSTEMS, Evaluation
from assay.recsys.htmlreport import figure, fmt, interval, page, pyplot, table
from assay.recsys.model import Recommender


def _shilling(report: dict[str, Any]) -> str:
    """The shilling report of ``assay redteam recsys --json``: clean / attacked / mitigated
    measures side by side, and the detectors."""
    stages = [
        {"model": name, **{k: v for k, v in report[name].items() if isinstance(v, int | float)}}
        for name in ("clean", "attacked", "mitigated")
        if isinstance(report.get(name), dict)
    ]
    detectors = [d for d in report.get("detectors", []) if isinstance(d, dict)]
    attack = report.get("attack", "?")
    if isinstance(attack, dict):
        params = ", ".join(f"{k} {v}" for k, v in attack.items() if k != "kind")
        what = f"<b>{html.escape(str(attack.get('kind', '?')))}</b> ({html.escape(params)})"
    else:
        what = f"<b>{html.escape(str(attack))}</b>"
    head = (
        f"<p>Shilling attack {what} on {len(report.get('targets', []) or [])} target films, measured on "
        f"{html.escape(str(report.get('users_measured', '?')))} genuine users (k = {html.escape(str(report.get('k', '?')))}).</p>"
    )
    return head + table(stages) + ("<p>Detectors:</p>" + table(detectors) if detectors else "")


def _robustness(path: Path | None) -> str:
    """Red-team results: the JSON of ``assay redteam recsys --json``, one EvaluationResult dict
    (or a list of them), or a findings summary ``{"findings": [...]}``. Absent: the section says so."""
    if path is None:
        return '<p class="note">No red-team results were supplied (pass <code>--robustness results.json</code>, e.g. the output of <code>assay redteam recsys --json</code>). This section is empty, not passed.</p>'
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"cannot read red-team results {path}: {e}") from e
    if isinstance(data, dict) and {"clean", "attacked"} <= set(data):
        return f"<p>From <code>{html.escape(str(path))}</code>.</p>" + _shilling(data)
    results = data if isinstance(data, list) else [data]
    rows = []
    for r in results:
        if not isinstance(r, dict):
            raise BadInput(f"{path}: each result must be a JSON object")
        for name, value in (r.get("metrics") or {}).items():
            ci = (r.get("intervals") or {}).get(name, [float("nan"), float("nan")])
            rows.append(
                {
                    "suite": r.get("suite", "?"),
                    "target": r.get("target", "?"),
                    "metric": name,
                    "value": float(value),
                    "ci_low": float(ci[0]),
                    "ci_high": float(ci[1]),
                }
            )
        for f in r.get("findings", []) or []:
            rows.append(
                {
                    "suite": r.get("suite", "redteam"),
                    "target": r.get("target", "?"),
                    "metric": str(f.get("attack", f.get("id", "finding"))),
                    "value": float(f.get("success_rate", f.get("value", float("nan")))),
                    "ci_low": float("nan"),
                    "ci_high": float("nan"),
                }
            )
    return f"<p>From <code>{html.escape(str(path))}</code>.</p>" + table(rows)


def audit_html(rec: Recommender, ev: Evaluation, robustness: Path | None = None) -> str:
    plt = pyplot()
    k = ev.k
    sections: list[tuple[str, str]] = []

    # accuracy
    acc_rows = []
    for metric in ("ndcg", "recall", "precision", "mrr", "map", "hit_rate"):
        row: dict[str, Any] = {"metric": f"{metric}@{k}"}
        for s in SYSTEMS:
            row[s] = interval(ev.metrics[s][metric])
        acc_rows.append(row)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(2)
    for j, s in enumerate(SYSTEMS):
        vals = [ev.metrics[s][m]["value"] for m in ("ndcg", "recall")]
        lo = [ev.metrics[s][m]["value"] - ev.metrics[s][m]["ci_low"] for m in ("ndcg", "recall")]
        hi = [ev.metrics[s][m]["ci_high"] - ev.metrics[s][m]["value"] for m in ("ndcg", "recall")]
        ax.bar(x + j * 0.27, vals, 0.27, yerr=[lo, hi], capsize=3, label=s)
    ax.set_xticks(x + 0.27, [f"NDCG@{k}", f"recall@{k}"])
    ax.legend()
    ax.set_title("accuracy on held-out latest interactions (95% bootstrap intervals)")
    n_users = ev.metrics["ranker"]["ndcg"]["n"]
    sections.append(
        (
            "Accuracy",
            f"<p>Per-user time split: each user's latest {rec.config.test_fraction:.0%} of ratings held out; {n_users} users evaluated. Relevance: 2 for a held-out rating ≥ 4 stars, 1 for a lower one. Baselines: the ALS retrieval order alone, and global popularity.</p>"
            + table(acc_rows)
            + figure(fig, "accuracy"),
        )
    )

    # item side
    beyond = [
        {"metric": name, "value [95% CI]": interval(a), "n users": a["n"]}
        for name, a in ev.beyond.items()
    ]
    pop = ev.exposure_popularity.to_dict(orient="records")
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xb = np.arange(len(pop))
    ax.bar(
        xb - 0.27,
        [r["exposure_share"] for r in pop],
        0.27,
        yerr=[
            [r["exposure_share"] - r["ci_low"] for r in pop],
            [r["ci_high"] - r["exposure_share"] for r in pop],
        ],
        capsize=3,
        label="exposure share (top-k, log2 position weights)",
    )
    ax.bar(xb, [r["interaction_share"] for r in pop], 0.27, label="share of training interactions")
    ax.bar(xb + 0.27, [r["catalogue_share"] for r in pop], 0.27, label="share of catalogue")
    ax.set_xticks(xb, [r["bucket"] for r in pop])
    ax.legend(fontsize=8)
    ax.set_title("exposure by popularity bucket")
    gen = ev.exposure_genre.to_dict(orient="records")
    fig2, ax2 = plt.subplots(figsize=(9, 3.6))
    xg = np.arange(len(gen))
    ax2.bar(xg - 0.2, [r["exposure_share"] for r in gen], 0.4, label="exposure share")
    ax2.bar(
        xg + 0.2, [r["interaction_share"] for r in gen], 0.4, label="share of training interactions"
    )
    ax2.set_xticks(xg, [r["genre"] for r in gen], rotation=60, ha="right", fontsize=8)
    ax2.legend(fontsize=8)
    ax2.set_title("exposure by genre (a film counts for each of its genres)")
    sections.append(
        (
            "Fairness: items",
            "<p>Concentration (Gini over the catalogue, recbole convention), coverage, average recommendation popularity (ARP) and the average percentage of long-tail films (APLT; head = top 20% by training popularity) of the ranker's top-k lists.</p>"
            + table(beyond)
            + figure(fig, "popularity exposure")
            + table(pop)
            + figure(fig2, "genre exposure")
            + table(gen),
        )
    )

    # user side
    groups = [
        {"group / statistic": name, f"NDCG@{k} [95% CI]": interval(a), "n users": a["n"]}
        for name, a in ev.user_groups.items()
    ]
    fig3, ax3 = plt.subplots(figsize=(5, 3))
    names = [g for g in ("active", "light") if f"mean[{g}]" in ev.user_groups]
    vals = [ev.user_groups[f"mean[{g}]"] for g in names]
    ax3.bar(
        names,
        [v["value"] for v in vals],
        yerr=[[v["value"] - v["ci_low"] for v in vals], [v["ci_high"] - v["value"] for v in vals]],
        capsize=4,
        color=["#4c72b0", "#dd8452"][: len(names)],
    )
    ax3.set_ylabel(f"NDCG@{k}")
    ax3.set_title("active vs light users")
    sections.append(
        (
            "Fairness: users",
            "<p>Users split at the median number of training ratings (MovieLens has no demographics, so activity is the only user attribute). <em>gap</em> = best minus worst group mean, <em>ratio</em> = worst / best, each with a bootstrap interval over users.</p>"
            + table(groups)
            + figure(fig3, "user groups"),
        )
    )

    sections.append(("Robustness", _robustness(robustness)))
    meta = rec.meta
    files = "".join(
        f"<li><code>{html.escape(f)}</code> sha256 <code>{h}</code></li>"
        for f, h in meta.get("files", {}).items()
    )
    data = "".join(
        f"<li><code>{html.escape(Path(f).name)}</code> sha256 <code>{h}</code></li>"
        for f, h in meta.get("dataset", {}).get("manifest", {}).items()
    )
    sections.append(
        (
            "Provenance",
            f"<p>Model <code>{html.escape(rec.version)}</code>, trained in {fmt(float(meta.get('train_s', float('nan'))))} s with seed {rec.config.seed}.</p><ul>{files}</ul><p>Dataset {html.escape(str(meta.get('dataset', {}).get('name', '?')))}:</p><ul>{data}</ul>",
        )
    )
    intro = f"<p class='note'>Audit of the reference two-stage recommender (ALS retrieval + LightGBM LambdaMART ranker) at k = {k}.</p>"
    return page("Recommender audit report", intro, sections)


def write_audit(
    rec: Recommender, ev: Evaluation, out: Path | str, robustness: Path | None = None
) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(audit_html(rec, ev, robustness), encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps(ev.to_dict(), indent=2, default=float), encoding="utf-8"
    )
    write_audit_runlog(rec, ev, out.with_suffix(".runlog.jsonl"), report=out.name)
    return out


def write_audit_runlog(rec: Recommender, ev: Evaluation, path: Path, report: str = "") -> Path:
    """The audit as a run log (``assay.runlog``, kind ``recommender-audit``): the ranker's
    accuracy and beyond-accuracy figures, the baselines' as ``metric[system]``, and the user-group
    gap, each with n and interval; the model's version and its training data's manifest."""
    import time

    from assay import runlog

    metrics: dict[str, dict[str, Any]] = {}
    for system, rows in ev.metrics.items():
        for name, agg in rows.items():
            metrics[f"{name}@{ev.k}" if system == "ranker" else f"{name}@{ev.k}[{system}]"] = agg
    metrics.update(ev.beyond)
    metrics.update({f"ndcg@{ev.k}_{g}": v for g, v in ev.user_groups.items() if isinstance(v, dict) and "value" in v})
    manifest = (rec.meta.get("dataset") or {}).get("manifest") or {}
    head = runlog.header(
        run_id=f"recsys-audit-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}", kind="recommender-audit",
        name="recsys-offline", created_at=runlog.now_iso(), model=runlog.ModelRef(name=str(rec.version)),
        datasets=[runlog.DatasetRef(name=str(k), sha256=str(v)) for k, v in sorted(manifest.items())],
        config={"k": ev.k, "systems": list(ev.metrics)},
    )
    return runlog.write_runlog(path, head, (), runlog.Summary(
        samples=0, counts={"users": len(ev.per_user_ndcg)},
        metrics={k: runlog.Metric(**{f: v.get(f) for f in ("value", "n", "ci_low", "ci_high", "method", "resamples", "undefined", "note")
                                     if v.get(f) is not None}) for k, v in metrics.items()},
        artifacts={"report": report} if report else {}))
