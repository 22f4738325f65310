"""Judges measured against people: label files, agreement metrics with bootstrap intervals, and
the validation records the registry keeps per judge version.

A label file is JSONL, one labelled pair a line::

    {"prompt": "...", "response": "...", "label": true, "source": "my-set", "model": "gpt-x"}

``response`` and ``label`` are required; ``prompt`` (default ""), ``source`` (default: the file's
name) and ``model`` (the answering model, default ``unknown``) are optional. ``label`` is a
boolean, 0/1, ``yes``/``no``, ``positive``/``negative``, or the question's own words (refusal:
``refusal``/``compliance``; harmful: ``harmful``/``harmless``, ``unsafe``/``safe``; hate:
``hate``/``not_hate``). A line that is not JSON, lacks a field or has an unknown label is an error
naming the file and line (exit 2); nothing is validated from a half-read file.

Metrics (precision, recall, F1, Cohen's kappa, accuracy, sensitivity, specificity) come with 95%
intervals -- the shares from ``assay.stats.rate_interval``, F1 and kappa from a seeded bootstrap
over items -- overall, per source and per answering model. An item the judge left unparsed counts as a wrong answer in these metrics (never a pass)
and is reported as ``unparsed``; sensitivity and specificity for correcting rates
(:mod:`assay.evaluate.judged`) are taken over the parsed items, with their counts.

A validation is recorded against the judge's *version* under ``ASSAY_HOME/judges/validations``;
the packaged validations of the built-in judges (``assay/judges/validations/NAME.json``, made on
the held-out split of the judges' training sources) count only while the version matches.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assay.classify.encoder import environment
from assay.errors import BadInput
from assay.files import read_jsonl
from assay.judges.base import Judge, Judgment
from assay.stats import BOOTSTRAP, DEFAULT_RATE_METHOD

PACKAGED = Path(__file__).with_name("validations")
RESAMPLES = 1000
SEED = 20240518
MIN_GROUP = 20  # per-source / per-model rows below this are listed with counts only (no intervals)

TRUE_WORDS = {"true", "1", "yes", "positive", "pos"}
FALSE_WORDS = {"false", "0", "no", "negative", "neg"}
QUESTION_WORDS: dict[str, tuple[set[str], set[str]]] = {
    "refusal": ({"refusal", "refused", "refuse"}, {"compliance", "complied", "comply", "not_refusal"}),
    "harmful": ({"harmful", "unsafe", "jailbroken"}, {"harmless", "safe", "benign", "not_harmful"}),
    "hate": ({"hate", "hateful"}, {"not_hate", "non_hateful", "nothate", "not_hateful"}),
    "toxicity": ({"toxic", "offensive"}, {"not_toxic", "non_toxic"}),
    "injection": ({"success", "injected"}, {"failure", "blocked"}),
}


@dataclass(frozen=True, slots=True)
class Labelled:
    prompt: str
    response: str
    label: bool
    source: str
    model: str
    line: int


def parse_label(value: Any, question: str) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower().replace("-", "_").replace(" ", "_")
        pos, neg = QUESTION_WORDS.get(question, (set(), set()))
        if v in TRUE_WORDS or v in pos:
            return True
        if v in FALSE_WORDS or v in neg:
            return False
    return None


def read_labels(path: str | Path, question: str, *, label_field: str = "label") -> list[Labelled]:
    """The labelled pairs of a JSONL file; any bad line is a :class:`BadInput` naming file:line."""
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{p}: no such label file")
    pos, neg = QUESTION_WORDS.get(question, (set(), set()))
    accepted = sorted(TRUE_WORDS | FALSE_WORDS | pos | neg)
    out: list[Labelled] = []
    for lineno, row in read_jsonl(p, "labels"):
        if not isinstance(row, dict):
            raise BadInput(f"{p}:{lineno}: each line must be a JSON object, got {type(row).__name__}")
        for key in ("response", label_field):
            if key not in row or row[key] is None:
                raise BadInput(f"{p}:{lineno}: missing field {key!r}")
        response, prompt = row["response"], row.get("prompt", "")
        if not isinstance(response, str):
            raise BadInput(f"{p}:{lineno}: field 'response' must be a string, got {type(response).__name__}")
        if prompt is None:
            prompt = ""
        if not isinstance(prompt, str):
            raise BadInput(f"{p}:{lineno}: field 'prompt' must be a string, got {type(prompt).__name__}")
        label = parse_label(row[label_field], question)
        if label is None:
            raise BadInput(f"{p}:{lineno}: unknown label {row[label_field]!r} for a {question} judge "
                           f"(accepted: true/false, 0/1, {', '.join(accepted)})")
        source, model = row.get("source", p.stem), row.get("model", "unknown")
        for key, value in (("source", source), ("model", model)):
            if not isinstance(value, str) or not value:
                raise BadInput(f"{p}:{lineno}: field {key!r} must be a non-empty string")
        out.append(Labelled(prompt, response, label, source, model, lineno))
    if not out:
        raise BadInput(f"{p}: no labelled rows")
    return out


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------- metrics

def _rates(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric from confusion counts (arrays: one entry per resample)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = tp + fp + fn + tn
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        po = (tp + tn) / n
        pe = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
        kappa = np.where(pe < 1, (po - pe) / (1 - pe), np.nan)
    return {"precision": precision, "recall": recall, "f1": f1, "kappa": kappa, "accuracy": po,
            "sensitivity": recall, "specificity": specificity}


def agreement(predicted: Sequence[bool | None], labels: Sequence[bool], *, resamples: int = RESAMPLES,
              seed: int = SEED) -> dict[str, Any]:
    """Metrics of ``predicted`` (None = unparsed, scored as wrong) against ``labels``, each
    ``{value, ci_low, ci_high}``: the shares (precision, recall, sensitivity, specificity,
    accuracy) with :func:`assay.stats.rate_interval`, F1 and kappa with a seeded bootstrap over
    items (:func:`assay.stats.bootstrap_interval`); plus the confusion counts (all and parsed)."""
    from assay.stats import bootstrap_interval, rate_interval

    y = np.asarray(labels, dtype=bool)
    unparsed = np.asarray([p is None for p in predicted], dtype=bool)
    pred, cat = _confusion_codes(predicted, y)
    n = len(y)
    tp, fp, fn, tn = (int(c) for c in np.bincount(cat, minlength=4))
    out: dict[str, Any] = {"n": n, "positives": int(y.sum()), "unparsed": int(unparsed.sum())}
    for key, (k, m) in {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "sensitivity": (tp, tp + fn),
                        "specificity": (tn, tn + fp), "accuracy": (tp + tn, n)}.items():
        lo, hi = rate_interval(k, m) if m else (math.nan, math.nan)
        out[key] = {"value": _r(k / m if m else math.nan), "ci_low": _r(lo), "ci_high": _r(hi)}
    point = {k: float(v[0]) for k, v in _rates(*(np.array([float(c)]) for c in (tp, fp, fn, tn))).items()}
    samples: dict[str, list[np.ndarray]] = {"f1": [], "kappa": []}
    if n >= 2 and resamples:
        rng = np.random.default_rng(seed)
        chunk = max(1, min(resamples, 4_000_000 // n))
        done = 0
        while done < resamples:
            size = min(chunk, resamples - done)
            c = cat[rng.integers(0, n, size=(size, n))]
            rates = _rates(*((c == k).sum(axis=1).astype(float) for k in range(4)))
            samples["f1"].append(rates["f1"])
            samples["kappa"].append(rates["kappa"])
            done += size
    for key in ("f1", "kappa"):
        if samples[key]:
            agg = bootstrap_interval(point[key], n, np.concatenate(samples[key]))
            lo, hi = agg.ci_low, agg.ci_high
        else:
            lo = hi = math.nan
        out[key] = {"value": _r(point[key]), "ci_low": _r(lo), "ci_high": _r(hi)}
    out["confusion"] = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    parsed = ~unparsed
    out["parsed_confusion"] = {"tp": int((pred & y & parsed).sum()), "fp": int((pred & ~y & parsed).sum()),
                               "fn": int((~pred & y & parsed).sum()), "tn": int((~pred & ~y & parsed).sum())}
    return out


def _confusion_codes(predicted: Sequence[bool | None], y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Verdicts with unparsed (None) scored as wrong, and each item's cell: 0 tp, 1 fp, 2 fn, 3 tn."""
    pred = np.asarray([(not lab) if p is None else bool(p) for p, lab in zip(predicted, y, strict=True)], dtype=bool)
    return pred, np.where(pred & y, 0, np.where(pred & ~y, 1, np.where(~pred & y, 2, 3)))


def f1_difference(predicted: Sequence[bool | None], baseline: Sequence[bool | None], labels: Sequence[bool], *,
                  resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """F1 of ``predicted`` minus F1 of ``baseline`` on the same items, ``{value, ci_low,
    ci_high}``, the interval from a *paired* seeded bootstrap (both judges' verdicts on each drawn
    item together), so it answers "is this judge worse than that one on these rows?" without
    counting the items' shared difficulty twice, as two separate F1 intervals would."""
    from assay.stats import bootstrap_interval

    y = np.asarray(labels, dtype=bool)
    if not (len(predicted) == len(baseline) == len(y)):
        raise BadInput(f"f1_difference: {len(predicted)} verdicts, {len(baseline)} baseline verdicts and {len(y)} labels")
    cats = [_confusion_codes(v, y)[1] for v in (predicted, baseline)]

    def f1s(c: np.ndarray) -> np.ndarray:  # c: (resamples, n) cells -> F1 per resample
        return _rates(*((c == k).sum(axis=-1).astype(float) for k in range(4)))["f1"]

    point = float(f1s(cats[0][None, :])[0] - f1s(cats[1][None, :])[0])
    n = len(y)
    if n < 2 or not resamples:
        return {"value": _r(point), "ci_low": None, "ci_high": None}
    rng = np.random.default_rng(seed)
    chunk, done, samples = max(1, min(resamples, 4_000_000 // n)), 0, []
    while done < resamples:
        idx = rng.integers(0, n, size=(min(chunk, resamples - done), n))
        samples.append(f1s(cats[0][idx]) - f1s(cats[1][idx]))
        done += len(idx)
    agg = bootstrap_interval(point, n, np.concatenate(samples))
    return {"value": _r(point), "ci_low": _r(agg.ci_low), "ci_high": _r(agg.ci_high)}


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def _grouped(keys: Sequence[str], predicted: Sequence[bool | None], labels: Sequence[bool], resamples: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(keys)):
        idx = [i for i, k in enumerate(keys) if k == key]
        p = [predicted[i] for i in idx]
        y = [labels[i] for i in idx]
        out[key] = agreement(p, y, resamples=resamples if len(idx) >= MIN_GROUP else 0, seed=seed)
    return out


@dataclass
class Validation:
    """One judge version measured against one label set."""

    judge: str
    version: str
    question: str
    labels: dict[str, Any]
    overall: dict[str, Any]
    by_source: dict[str, Any]
    by_model: dict[str, Any]
    created_at: str
    judge_config: dict[str, Any]
    # where it was measured (``classify.encoder.environment``): int8 verdicts near a threshold
    # can differ between CPUs and ONNX Runtime releases; empty in validations made before
    scored_on: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, "version": self.version, "question": self.question, "labels": self.labels,
                "overall": self.overall, "by_source": self.by_source, "by_model": self.by_model,
                "created_at": self.created_at, "judge_config": self.judge_config, "scored_on": self.scored_on}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Validation:
        return cls(**{k: d[k] for k in ("judge", "version", "question", "labels", "overall", "by_source", "by_model",
                                        "created_at", "judge_config")}, scored_on=dict(d.get("scored_on") or {}))

    def summary(self) -> dict[str, Any]:
        """What a report shows next to a judged metric."""
        o = self.overall
        worst = None
        measured = {k: v for k, v in self.by_source.items() if v["n"] >= MIN_GROUP and v.get("f1", {}).get("value") is not None}
        if measured:
            name = min(measured, key=lambda k: measured[k]["f1"]["value"])
            worst = {"source": name, "n": measured[name]["n"], "f1": measured[name]["f1"]}
        return {"validated": True, "judge": self.judge, "version": self.version, "labels": self.labels.get("name"),
                "labels_sha256": self.labels.get("sha256"), "n": o["n"], "unparsed": o["unparsed"],
                "f1": o["f1"], "kappa": o["kappa"], "precision": o["precision"], "recall": o["recall"],
                "sensitivity": o["sensitivity"], "specificity": o["specificity"],
                "parsed_confusion": o["parsed_confusion"], "worst_source": worst, "created_at": self.created_at}


def validate(judge: Judge, rows: Sequence[Labelled], *, labels_info: dict[str, Any] | None = None,
             resamples: int = RESAMPLES, seed: int = SEED, judgments: Sequence[Judgment] | None = None) -> Validation:
    """Run ``judge`` on the labelled pairs (or use given ``judgments``) and measure it."""
    if not rows:
        raise BadInput("no labelled rows to validate against")
    if judgments is None:
        judgments = judge.judge([(r.prompt, r.response) for r in rows])
    if len(judgments) != len(rows):
        raise RuntimeError(f"judge {judge.name} returned {len(judgments)} verdicts for {len(rows)} pairs")
    predicted = [j.verdict for j in judgments]
    labels = [r.label for r in rows]
    return Validation(
        judge=judge.name, version=judge.version, question=judge.question,
        labels=dict(labels_info or {"name": "given rows", "rows": len(rows)}),
        overall=agreement(predicted, labels, resamples=resamples, seed=seed),
        by_source=_grouped([r.source for r in rows], predicted, labels, resamples, seed),
        by_model=_grouped([r.model for r in rows], predicted, labels, resamples, seed),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        judge_config=judge.config(),
        scored_on=environment(),
    )


# ------------------------------------------------------------------------------------ records

def _home() -> Path:
    from assay.config import settings

    return settings().path("judges", "validations", "x").parent


def _version_hex(version: str) -> str:
    return version.rsplit(":", 1)[-1]


_RATES = {"precision": ("tp", "fp"), "recall": ("tp", "fn"), "sensitivity": ("tp", "fn"), "specificity": ("tn", "fp"),
          "accuracy": ("tp", "fp", "fn", "tn")}  # a rate's n: the confusion cells it is a share of


def _metrics(v: Validation) -> dict[str, Any]:
    """The validation's agreement figures as run log metrics, each with its n and interval method."""
    out = {}
    for scope, groups in (("", {"": v.overall}), ("source", v.by_source), ("model", v.by_model)):
        for group, o in groups.items():
            conf = o.get("parsed_confusion") or o.get("confusion") or {}
            for name in ("f1", "kappa", *_RATES):
                agg = o.get(name)
                if not isinstance(agg, dict) or "value" not in agg:
                    continue
                n = sum(int(conf.get(c, 0)) for c in _RATES[name]) if name in _RATES else int(o.get("n", 0)) - int(o.get("unparsed", 0))
                key = name if not scope else f"{name}[{scope}={group}]"
                out[key] = {"value": agg["value"], "n": n, "ci_low": agg.get("ci_low"), "ci_high": agg.get("ci_high"),
                            "method": DEFAULT_RATE_METHOD if name in _RATES else BOOTSTRAP}
    return out


def record(v: Validation) -> Path:
    """Store a validation under the judge's version as a run log (``assay.runlog``, kind
    ``judge-validation``: the agreement figures as metrics, the whole validation in its results),
    written atomically; returns its path."""
    from assay import runlog

    folder = _home() / v.judge / _version_hex(v.version)
    stamp = v.created_at.replace(":", "").replace("-", "")
    sha = str(v.labels.get("sha256") or "rows")[:12]
    path = folder / f"{stamp}-{sha}{runlog.SUFFIX}"
    labels = [runlog.DatasetRef(name=str(v.labels.get("name", "labels")), sha256=str(v.labels["sha256"]))] if v.labels.get("sha256") else []
    head = runlog.header(run_id=f"{v.judge}-{_version_hex(v.version)}-{stamp}", kind="judge-validation", name=v.judge,
                         created_at=v.created_at, datasets=labels,
                         judges={v.question: runlog.JudgeRef(name=v.judge, version=v.version, question=v.question)},
                         config={"judge_config": v.judge_config, "labels": v.labels})
    return runlog.write_runlog(path, head, (), runlog.Summary(
        samples=0, counts={"labels": v.overall.get("n"), "unparsed": v.overall.get("unparsed")},
        metrics=_metrics(v), results={"validation": v.to_dict()},
        timings=runlog.Timings(started_at=v.created_at, finished_at=runlog.now_iso())))


def recorded_for(name: str, version: str) -> list[Validation]:
    """Every validation of exactly this judge version: recorded ones (newest first), then the
    packaged one when its version matches."""
    from assay import runlog

    out: list[Validation] = []
    folder = _home() / name / _version_hex(version)
    if folder.is_dir():
        for p in sorted(folder.glob(f"*{runlog.SUFFIX}"), reverse=True):
            try:
                v = Validation.from_dict(runlog.read_runlog(p).summary.results["validation"])
            except (runlog.RunLogError, ValueError, KeyError, TypeError):
                continue  # a damaged record vouches for nothing
            if v.version == version:
                out.append(v)
    packaged = PACKAGED / f"{name}.json"
    if packaged.is_file():
        v = Validation.from_dict(json.loads(packaged.read_text(encoding="utf-8")))
        if v.version == version:
            out.append(v)
    return out


def recorded(judge: Judge) -> list[Validation]:
    return recorded_for(judge.name, judge.version)


def latest(judge: Judge) -> Validation | None:
    found = recorded(judge)
    return found[0] if found else None


def summary_for_version(name: str, version: str) -> dict[str, Any]:
    """The validation summary reports show beside a judged metric; ``validated: false`` (with
    the reason) when this version was never measured against human labels."""
    found = recorded_for(name, version)
    if not found:
        return {"validated": False, "judge": name, "version": version,
                "note": "this judge version was never validated against human labels (assay judge validate)"}
    return found[0].summary()


def summary(judge: Judge) -> dict[str, Any]:
    try:
        version = judge.version
    except Exception as e:  # a judge whose config cannot be read (e.g. an untrained head) is unvalidated
        return {"validated": False, "judge": judge.name, "note": f"could not read the judge: {e}"}
    return summary_for_version(judge.name, version)


def write_packaged(v: Validation) -> Path:
    """Store ``v`` as the packaged validation of a built-in judge (maintainers, after retraining)."""
    PACKAGED.mkdir(exist_ok=True)
    path = PACKAGED / f"{v.judge}.json"
    path.write_text(json.dumps(v.to_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path
