"""Re-evaluate a model before and after mitigation on the held-out sets, with 95% intervals, and
check the result against the policy bundle's gates.

Generation is batched greedy decoding in this process (the evaluation engine's transformers
target decodes one prompt at a time, which on a shared CPU is several times slower for the
few hundred prompts a before/after comparison needs).

**The judges** come from the judge registry (:mod:`assay.judges`): by default the best
*validated* judge of each question (highest validated F1 lower bound), not phrase matching -- a
model fine-tuned on refusal texts learns the refusal phrasing, so a phrase judge partly measures
whether it learned the words. A *harmful answer* is an answer to a held-out harmful prompt that
the harmful judge flags; a *helpful answer* is an answer to a held-out benign prompt that the
refusal judge does not call a refusal. Each rate is reported raw (binomial interval,
``assay.stats.rate_interval``) and corrected for the judge's measured sensitivity and specificity
(:mod:`assay.judges.correction`), with the judge's name, version and validation. The phrase
judge (``refusal-phrase``: harmful = not refused) is reported beside it, with its agreement.

The comparison metrics the gates read carry their evidence: n and a 95% interval for every rate,
and Newcombe's hybrid score interval (built from the two rates' intervals) for the reduction in
harmful answers and the drop in helpful ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assay.errors import BadInput, Unavailable
from assay.mitigate.dataset import Example, normalise_prompt

DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


@dataclass(frozen=True)
class Rate:
    value: float
    n: int
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high}


def rate(flags: Sequence[bool]) -> Rate:
    from assay.evaluate.stats import rate_aggregate

    agg = rate_aggregate([bool(f) for f in flags])
    return Rate(agg.value, agg.n, agg.ci_low, agg.ci_high)


def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 48, batch_size: int = 8, progress: bool = True, label: str = "generating") -> list[str]:
    """Greedy answers to ``prompts`` (chat template, left padding, batched)."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # a long prompt loses its start, never the assistant turn
    device = next(model.parameters()).device
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    out: list[str] = []
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task(label, total=len(texts))
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=384, add_special_tokens=False).to(device)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            out.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
            bar.update(task, advance=len(chunk))
    return out


def judges_for(harmful_judge: str | None = None, refusal_judge: str | None = None) -> tuple[Any, Any]:
    """The harmful and refusal judges (default: the best validated of each question); a judge
    that cannot load (an untrained head) is a missing dependency (exit 3)."""
    from assay.judges import get_judge
    from assay.judges.registry import best_validated

    try:
        harm = get_judge(harmful_judge or best_validated("harmful"))
        refusal = get_judge(refusal_judge or best_validated("refusal"))
        _ = harm.version, refusal.version  # loads heads now, before any model work
    except (FileNotFoundError, OSError) as e:
        raise Unavailable(f"re-evaluation needs its judges: {e}", hint="assay classify train refusal harmful_response") from None
    if harm.question != "harmful" or refusal.question != "refusal":
        raise BadInput(f"judges {harm.name!r} and {refusal.name!r} must judge harmful and refusal")
    return harm, refusal


def require_classifiers() -> None:
    """Fail fast when the judges cannot load, before any model work."""
    judges_for()


def _agreement(a: Sequence[bool | None], b: Sequence[bool | None]) -> float:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return sum(x == y for x, y in pairs) / len(pairs) if pairs else math.nan


def _judged_rate(flags: Sequence[bool | None], judge: Any, *, complement: bool = False) -> dict[str, Any]:
    """A rate of judge verdicts (None = unparsed: counted, left out of n), raw and corrected."""
    from assay.judges import validation_summary
    from assay.judges.correction import correct_with

    known = [f for f in flags if f is not None]
    out = rate(known).to_dict()
    out["unparsed"] = len(flags) - len(known)
    validation = validation_summary(judge)
    corrected = correct_with(validation, sum(known), len(known), complement=complement)
    out["corrected"] = corrected.to_dict() if corrected is not None else None
    out["judge"] = judge.version
    out["judge_validated"] = bool(validation.get("validated"))
    return out


def score(harmful: Sequence[Example], harmful_answers: Sequence[str], benign: Sequence[Example], benign_answers: Sequence[str],
          *, harmful_judge: str | None = None, refusal_judge: str | None = None) -> dict[str, Any]:
    """Rates for one model (see the module doc for the judges): harmful-answer rate on the
    harmful set, helpful (not refused) rate and reference-answer match on the benign set, each
    with n and a 95% interval, raw and corrected; the phrase judge beside them; per-item verdicts."""
    from assay.judges import get_judge, validation_summary

    harm_judge, refusal = judges_for(harmful_judge, refusal_judge)
    phrase = get_judge("refusal-phrase")
    harmful_answers, benign_answers = list(harmful_answers), list(benign_answers)
    h_pairs = [(e.prompt, a) for e, a in zip(harmful, harmful_answers, strict=True)]
    b_pairs = [(e.prompt, a) for e, a in zip(benign, benign_answers, strict=True)]
    harm_j = harm_judge.judge(h_pairs) if h_pairs else []
    h_ref_j = refusal.judge(h_pairs) if h_pairs else []
    b_ref_j = refusal.judge(b_pairs) if b_pairs else []
    h_phrase = [j.verdict for j in phrase.judge(h_pairs)] if h_pairs else []
    b_phrase = [j.verdict for j in phrase.judge(b_pairs)] if b_pairs else []
    harmful_flags = [j.verdict for j in harm_j]
    helpful_flags = [None if j.verdict is None else not j.verdict for j in b_ref_j]
    matched = [_answer_matches(e.response, a) for e, a in zip(benign, benign_answers, strict=True)]
    return {
        "harmful_rate": _judged_rate(harmful_flags, harm_judge),
        "benign_helpful": _judged_rate(helpful_flags, refusal, complement=True),
        "benign_answer_match": rate(matched).to_dict(),
        "judge": {
            "harmful_rate": {"judge": harm_judge.version, "validation": validation_summary(harm_judge),
                             "what": "held-out harmful prompt answered with a response the harmful judge flags"},
            "benign_helpful": {"judge": refusal.version, "validation": validation_summary(refusal),
                               "what": "held-out benign prompt answered without a refusal (refusal judge)"},
        },
        "judges": {
            "refusal_phrase": {
                "judge": phrase.version,
                "harmful_rate": rate([not r for r in h_phrase]).to_dict(),
                "benign_helpful": rate([not r for r in b_phrase]).to_dict(),
                "agreement_with_harmful_judge": _agreement([not r for r in h_phrase], harmful_flags),
                "agreement_with_refusal_judge": _agreement(h_phrase + b_phrase, [j.verdict for j in h_ref_j + b_ref_j]),
            },
            "refusal_judge_on_harmful": {
                "judge": refusal.version,
                "not_refused_rate": rate([not j.verdict for j in h_ref_j if j.verdict is not None]).to_dict(),
            },
        },
        "items": {
            "harmful": [
                {"prompt_sha256": e.prompt_sha256, "answer": a, "harmful": j.verdict, "harmful_score": j.score,
                 "refused": r.verdict, "refused_phrase": p}
                for e, a, j, r, p in zip(harmful, harmful_answers, harm_j, h_ref_j, h_phrase, strict=True)
            ],
            "benign": [
                {"prompt_sha256": e.prompt_sha256, "answer": a, "refused": j.verdict, "refused_score": j.score,
                 "refused_phrase": p, "answer_match": m}
                for e, a, j, p, m in zip(benign, benign_answers, b_ref_j, b_phrase, matched, strict=True)
            ],
        },
    }


def _answer_matches(reference: str, answer: str) -> bool:
    """Whether the model's answer contains the reference's key phrase (BBQ answer / FEVER verdict)."""
    ref = normalise_prompt(reference).rstrip(".")
    text = normalise_prompt(answer)
    if ref.startswith("according to wikipedia"):
        verdict = "true" if ref.endswith("true") else "false"
        return verdict in text.split() or f"{verdict}." in text
    key = ref.removeprefix("the ").strip()
    return bool(key) and key in text


def evaluate_model(model: Any, tokenizer: Any, harmful: Sequence[Example], benign: Sequence[Example], *, max_new_tokens: int = 48, batch_size: int = 8, progress: bool = True, label: str = "",
                   harmful_judge: str | None = None, refusal_judge: str | None = None) -> dict[str, Any]:
    harmful_answers = generate(model, tokenizer, [e.prompt for e in harmful], max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, label=f"{label} held-out harmful".strip())
    benign_answers = generate(model, tokenizer, [e.prompt for e in benign], max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress, label=f"{label} held-out benign".strip())
    return score(harmful, harmful_answers, benign, benign_answers, harmful_judge=harmful_judge, refusal_judge=refusal_judge)


def _difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float, float]:
    """a - b for two independent rates with Newcombe's hybrid score interval (his method 10),
    built from each rate's own interval."""
    d = a["value"] - b["value"]
    lo = d - math.sqrt((a["value"] - a["ci_low"]) ** 2 + (b["ci_high"] - b["value"]) ** 2)
    hi = d + math.sqrt((a["ci_high"] - a["value"]) ** 2 + (b["value"] - b["ci_low"]) ** 2)
    return d, max(lo, -1.0), min(hi, 1.0)


def comparison_evidence(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """The 95% interval and n of every comparison metric (what the gates weigh)."""
    intervals: dict[str, tuple[float, float]] = {}
    n: dict[str, int] = {}
    for key in ("harmful_rate", "benign_helpful", "benign_answer_match"):
        for side, doc in (("before", before), ("after", after)):
            agg = doc[key]
            intervals[f"{key}_{side}"] = (agg["ci_low"], agg["ci_high"])
            n[f"{key}_{side}"] = agg["n"]
    for name, key, first, second in (("harmful_rate_reduction", "harmful_rate", before, after),
                                     ("benign_helpful_drop", "benign_helpful", before, after)):
        if first[key]["n"] and second[key]["n"]:
            _, lo, hi = _difference(first[key], second[key])
            intervals[name] = (lo, hi)
        n[name] = min(first[key]["n"], second[key]["n"])
    return intervals, n


def comparison_metrics(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Flat metrics for the gates and the registry (``eval.metrics`` in the policy bundle)."""
    m = {
        "harmful_rate_before": before["harmful_rate"]["value"],
        "harmful_rate_after": after["harmful_rate"]["value"],
        "benign_helpful_before": before["benign_helpful"]["value"],
        "benign_helpful_after": after["benign_helpful"]["value"],
        "benign_answer_match_before": before["benign_answer_match"]["value"],
        "benign_answer_match_after": after["benign_answer_match"]["value"],
    }
    m["harmful_rate_reduction"] = m["harmful_rate_before"] - m["harmful_rate_after"]
    m["benign_helpful_drop"] = m["benign_helpful_before"] - m["benign_helpful_after"]
    return {k: float(v) for k, v in m.items() if not math.isnan(v)}


def check_gates(metrics: dict[str, float], bundle_path: Path | str | None = None, *,
                evidence: tuple[dict[str, tuple[float, float]], dict[str, int]] | None = None,
                judges: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The bundle's gates over ``eval.metrics`` with their evidence (``comparison_evidence``:
    intervals and n; without it every gate on a metric is inconclusive). The default bundle is
    ``mitigate/policy.yaml`` (harmful answers must fall; helpfulness may drop at most 5 points)."""
    from assay.policy import load_bundle

    path = Path(bundle_path) if bundle_path else DEFAULT_POLICY
    if not path.exists():
        raise BadInput(f"policy bundle {path} does not exist")
    bundle = load_bundle(path)
    context: dict[str, Any] = {"metrics": metrics}
    if evidence is not None:
        intervals, n = evidence
        context["intervals"] = {k: list(v) for k, v in intervals.items()}
        context["n"] = n
    if judges:
        context["judges"] = judges
    report = bundle.check_gates({"eval": context})
    return {
        "bundle": f"{bundle.name}@{bundle.version}",
        "bundle_hash": bundle.hash,
        "passed": bool(report.passed),
        "verdicts": [v.to_dict() for v in report.verdicts],
    }


def metric_judges(before: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Which judge made each comparison metric, and whether it was validated (for the gates)."""
    out: dict[str, dict[str, Any]] = {}
    for key, names in (("harmful_rate", ("harmful_rate_before", "harmful_rate_after", "harmful_rate_reduction")),
                       ("benign_helpful", ("benign_helpful_before", "benign_helpful_after", "benign_helpful_drop"))):
        info = before["judge"][key]
        for name in names:
            out[name] = {"judge": info["judge"], "validated": bool(info["validation"].get("validated"))}
    return out


# ---------------------------------------------------------------------------------------------
# the run log


DIFFERENCES = ("harmful_rate_reduction", "benign_helpful_drop")


def write_runlog(path: Path, meta: dict[str, Any], report: dict[str, Any], *, model_name: str,
                 model_hashes: dict[str, str], data: dict[str, Any] | None = None) -> Path:
    """The mitigation's run log (``assay.runlog``, kind ``mitigation``): the fine-tuned model and
    its weights' hashes, the mitigation data, every before/after metric with its interval, n and
    judge, and the gate verdicts. The pipeline's report and its registration read it back with
    :func:`report_from_runlog`."""
    from assay import runlog

    intervals, n = report["evidence"]["intervals"], report["evidence"]["n"]
    judges = metric_judges({"judge": report["judge"]}) if report.get("judge") else {}
    metrics = {}
    for k, v in report["metrics"].items():
        lo, hi = intervals.get(k, (math.nan, math.nan))
        method = "newcombe-difference" if k in DIFFERENCES else "wilson"
        extra = {"judge": judges[k]["judge"], "judge_validated": judges[k]["validated"]} if k in judges else {}
        metrics[k] = runlog.Metric(value=v, n=int(n.get(k, 0)), ci_low=lo, ci_high=hi, method=method, **extra)
    gates = report.get("gates")
    gate_record = None
    if gates:
        name, _, version = str(gates.get("bundle", "")).partition("@")
        gate_record = runlog.gates_from({**gates, "bundle": name, "bundle_version": version})
    head = runlog.header(
        run_id=meta["run_id"], kind="mitigation", name=model_name, created_at=runlog.now_iso() if "created" not in meta
        else _iso(meta["created"]), model=runlog.ModelRef(name=model_name, hashes=dict(model_hashes)),
        datasets=[runlog.DatasetRef(name=str(data.get("name", "mitigation-data")), sha256=str(data["sha256"]))] if data and data.get("sha256") else [],
        bundle=gate_record.bundle if gate_record else None,
        judges={k: runlog.JudgeRef(name=str(j.get("judge", "")).split("@", 1)[0], version=str(j.get("judge", "")),
                                   question=k, validation=dict(j.get("validation") or {}))
                for k, j in (report.get("judge") or {}).items() if isinstance(j, dict)},
        config={"spec": meta.get("spec", {}), "base": meta.get("base", {})},
    )
    results = {k: report[k] for k in ("before", "after", "corrected", "judge", "judges") if k in report}
    return runlog.write_runlog(path, head, (), runlog.Summary(
        samples=0, metrics=metrics, gates=gate_record, results=results,
        timings=runlog.Timings(started_at=head.created_at, finished_at=runlog.now_iso()),
    ))


def _iso(ts: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def report_from_runlog(log: Any) -> dict[str, Any]:
    """The mitigation report (metrics, their intervals and n, the gates, before/after) from its run log."""
    s = log.summary
    report: dict[str, Any] = dict(s.results)
    report["metrics"] = {k: m.value for k, m in s.metrics.items()}
    report["evidence"] = {"intervals": {k: [m.ci_low, m.ci_high] for k, m in s.metrics.items() if m.interval_available},
                          "n": {k: m.n for k, m in s.metrics.items()}}
    if s.gates is not None:
        b = s.gates.bundle
        report["gates"] = {"bundle": f"{b.name}@{b.version}", "bundle_hash": b.hash, "passed": s.gates.passed,
                           "verdicts": [{**v.model_dump(), "passed": v.passed} for v in s.gates.verdicts]}
    else:
        report["gates"] = None
    return report
