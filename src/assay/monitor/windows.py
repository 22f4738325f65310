"""Windows over decision streams and score streams, and the statistics alert rules read.

A window is a slice of a stream by time (tumbling, ``duration_s``) or by count. Its statistics
become the CEL context of the bundle's ``alerts`` section as ``window.*``:

=======================  ===================  ==============================================
attribute                CEL type             meaning
=======================  ===================  ==============================================
window.n                 int                  decisions in the window
window.requests          int                  distinct request ids
window.surface           string               the surface (or "*" when mixed)
window.duration_s        double               end - start
window.drop_rate         double               share of decisions whose action is ``drop``
window.demote_rate ...   double               same for demote / label / cap / allow
window.action_rate       map(string, double)  every action's share (registered actions too)
window.rule_rate         map(string, double)  share of decisions each rule fired on
window.fallback_rate     double               share decided while a breaker was not closed
window.score_mean        double               mean ``score_before`` (0 when none)
window.harm_rate         double               share of score-stream values >= harm threshold
window.harm_mean         double               mean of the score stream (0 when none)
window.rate_low         map(string, double)  lower 95% bound of each rate: keys are the
window.rate_high         map(string, double)  actions, "fallback" and "harm" (assay.stats.rate_interval)
window.rule_rate_low     map(string, double)  the same for each rule's rate
window.rule_rate_high    map(string, double)
window.psi / window.ks   map(string, double)  drift effect per feature (when a drift check ran)
window.drifted           int                  features judged drifted
window.drift_insufficient int                 features whose window was too small to decide
=======================  ===================  ==============================================

The bounds let an alert ask for evidence instead of a bare share: ``window.rate_low["drop"] >
0.2`` fires only when the window shows, at 95%, more than a fifth of its decisions dropped (a
window with no decisions has bounds 0 and 1).

Statistics are computed column-wise (pyarrow ``value_counts`` / numpy), because a window of a
busy surface holds millions of decisions; :func:`naive_stats` is the per-record loop kept as the
benchmark baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.policy.actions import BUILTIN_ACTIONS, action_names
from assay.policy.supplied import WINDOW
from assay.stats import rate_interval

# the built-in actions, each with its own ``window.<action>_rate``; an action registered beside
# them (assay.policy.actions) is counted in action_rate and the bounds
ACTIONS = BUILTIN_ACTIONS

# CEL types of the window attributes, for a bundle's ``attributes: alerts:`` section: the monitor's
# declaration lives in the policy foundation (``assay.policy.supplied.WINDOW``), which the bundle
# loader holds every alert to; ``WindowStats.context`` fills exactly these (tests/monitor).
WINDOW_ATTRIBUTES: dict[str, str] = dict(WINDOW.attributes)


@dataclass
class WindowStats:
    """What one window of one surface looked like."""

    start: float
    end: float
    surface: str
    n: int
    requests: int
    action_counts: dict[str, int]
    rule_counts: dict[str, int]
    fallback: int
    score_sum: float = 0.0
    score_n: int = 0
    harm_n: int = 0
    harm_hits: int = 0
    harm_sum: float = 0.0
    psi: dict[str, float] = field(default_factory=dict)
    ks: dict[str, float] = field(default_factory=dict)
    drifted: int = 0
    drift_insufficient: int = 0
    harm_judge: str = ""  # the judge (name@version) whose verdicts the harm stream holds, when judged
    harm_judge_validated: bool = False
    harm_unparsed: int = 0
    request_ids: tuple[str, ...] = ()  # a sample of the window's requests, for the trace chain
    values: dict[str, np.ndarray] = field(default_factory=dict)  # raw streams for drift tests ("score")

    def rate(self, action: str) -> float:
        return self.action_counts.get(action, 0) / self.n if self.n else 0.0

    def context(self) -> dict[str, Any]:
        """The nested dict ``bundle.check_alerts`` reads (``window.*``)."""
        n = self.n
        window: dict[str, Any] = {
            "n": int(n),
            "requests": int(self.requests),
            "surface": self.surface,
            "duration_s": float(self.end - self.start),
            "action_rate": {a: (c / n if n else 0.0) for a, c in self.action_counts.items()},
            "rule_rate": {r: (c / n if n else 0.0) for r, c in self.rule_counts.items()},
            "fallback_rate": self.fallback / n if n else 0.0,
            "score_mean": self.score_sum / self.score_n if self.score_n else 0.0,
            "harm_rate": self.harm_hits / self.harm_n if self.harm_n else 0.0,
            "harm_mean": self.harm_sum / self.harm_n if self.harm_n else 0.0,
            "psi": {k: float(v) for k, v in self.psi.items()},
            "ks": {k: float(v) for k, v in self.ks.items()},
            "drifted": int(self.drifted),
            "drift_insufficient": int(self.drift_insufficient),
        }
        for a in ACTIONS:
            window[f"{a}_rate"] = self.rate(a)
        counts = {a: (self.action_counts.get(a, 0), n) for a in {*ACTIONS, *action_names(), *self.action_counts}}
        counts["fallback"] = (self.fallback, n)
        counts["harm"] = (self.harm_hits, self.harm_n)
        bounds = {k: rate_interval(int(c), int(m)) for k, (c, m) in counts.items()}
        rule_bounds = {r: rate_interval(int(c), int(n)) for r, c in self.rule_counts.items()}
        window["rate_low"] = {k: b[0] for k, b in sorted(bounds.items())}
        window["rate_high"] = {k: b[1] for k, b in sorted(bounds.items())}
        window["rule_rate_low"] = {r: b[0] for r, b in rule_bounds.items()}
        window["rule_rate_high"] = {r: b[1] for r, b in rule_bounds.items()}
        return {"window": window}

    def add_scores(self, scores: Any, harm_threshold: float = 0.5) -> None:
        """Fold a score stream (e.g. harm labels of served items) into this window."""
        arr = np.asarray(scores, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        self.harm_n += int(arr.size)
        self.harm_hits += int(np.count_nonzero(arr >= harm_threshold))
        self.harm_sum += float(arr.sum())
        self.values["harm"] = np.concatenate([self.values["harm"], arr]) if "harm" in self.values else arr

    def add_judged(self, judge: Any, pairs: Any) -> None:
        """Judge sampled live (prompt, response) pairs with a judge of :mod:`assay.judges` and
        fold its verdicts in as the harm stream (1 harmful, 0 not): ``window.harm_rate`` is then
        that judge's rate, and the window records which judge and whether it was validated.
        Unparsed verdicts are counted (``harm_unparsed``), never folded in as harmless."""
        from assay.judges import validation_summary

        if self.harm_judge and self.harm_judge != judge.version:
            raise ValueError(f"window already holds verdicts of {self.harm_judge}, not {judge.version}")
        judgments = judge.judge(pairs)
        self.harm_unparsed += sum(1 for j in judgments if j.verdict is None)
        self.add_scores([1.0 if j.verdict else 0.0 for j in judgments if j.verdict is not None])
        self.harm_judge = judge.version
        self.harm_judge_validated = bool(validation_summary(judge).get("validated"))

    def to_dict(self) -> dict[str, Any]:
        out = {"start": self.start, "end": self.end, **self.context()["window"]}
        if self.harm_judge:
            out.update(harm_judge=self.harm_judge, harm_judge_validated=self.harm_judge_validated, harm_unparsed=self.harm_unparsed)
        return out


def _value_counts(values: Any) -> dict[str, int]:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    vc = pc.value_counts(arr)
    return {str(v): int(c) for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True) if v is not None}


def stats_from_columns(
    columns: Mapping[str, Any], *, surface: str = "*", start: float | None = None, end: float | None = None,
) -> WindowStats:
    """Window statistics from column arrays (numpy, lists or pyarrow): ``action`` (required),
    ``request_id``, ``rule_ids`` (list per row), ``breaker_state``, ``score_before``, ``ts``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "action" not in columns:
        raise BadInput("a decision window needs an 'action' column")
    actions = columns["action"]
    n = len(actions)
    action_counts = _value_counts(actions)
    known = action_names()
    unknown = sorted(set(action_counts) - set(known))
    if unknown:
        raise BadInput(f"unknown action(s) in decision window: {', '.join(unknown)}; expected {', '.join(known)}")
    requests = 0
    sample: tuple[str, ...] = ()
    if "request_id" in columns and n:
        rid = columns["request_id"]
        rid = rid if isinstance(rid, pa.Array | pa.ChunkedArray) else pa.array(rid)
        uniq = pc.unique(rid)
        requests = len(uniq)
        sample = tuple(str(x) for x in uniq.slice(0, 20).to_pylist())
    rule_counts: dict[str, int] = {}
    if "rule_ids" in columns and n:
        rules = columns["rule_ids"]
        rules = rules if isinstance(rules, pa.Array | pa.ChunkedArray) else pa.array([list(r) for r in rules], type=pa.list_(pa.string()))
        flat = pc.list_flatten(rules)
        if len(flat):
            rule_counts = _value_counts(flat)
    fallback = 0
    if "breaker_state" in columns and n:
        bs = columns["breaker_state"]
        fallback = n - _value_counts(bs).get("closed", 0)
    score_sum, score_n = 0.0, 0
    values: dict[str, np.ndarray] = {}
    if "score_before" in columns and n:
        sc = np.asarray(pa.array(columns["score_before"], type=pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        finite = np.isfinite(sc)
        score_sum, score_n = float(sc[finite].sum()), int(finite.sum())
        values = {"score": sc[finite]}
    if "ts" in columns and n and (start is None or end is None):
        ts = np.asarray(columns["ts"], dtype=np.float64)
        start = float(ts.min()) if start is None else start
        end = float(ts.max()) if end is None else end
    return WindowStats(
        start=start or 0.0, end=end or 0.0, surface=surface, n=n, requests=requests,
        action_counts=action_counts, rule_counts=rule_counts, fallback=fallback,
        score_sum=score_sum, score_n=score_n, request_ids=sample, values=values,
    )


def _field(d: Any, name: str, default: Any = None) -> Any:
    return d.get(name, default) if isinstance(d, Mapping) else getattr(d, name, default)


def decisions_to_columns(decisions: Sequence[Any]) -> dict[str, list]:
    """Columns from :class:`assay.records.Decision` objects or their dicts."""
    cols: dict[str, list] = {k: [] for k in ("action", "request_id", "rule_ids", "breaker_state", "score_before", "ts", "surface")}
    for d in decisions:
        cols["action"].append(_field(d, "action"))
        cols["request_id"].append(_field(d, "request_id"))
        cols["rule_ids"].append(list(_field(d, "rule_ids", ()) or ()))
        cols["breaker_state"].append(_field(d, "breaker_state", "closed"))
        s = _field(d, "score_before")
        cols["score_before"].append(float("nan") if s is None else float(s))
        cols["ts"].append(float(_field(d, "ts", 0.0)))
        cols["surface"].append(_field(d, "surface", "*"))
    return cols


def stats_from_decisions(decisions: Sequence[Any], *, surface: str | None = None,
                         start: float | None = None, end: float | None = None) -> WindowStats:
    cols = decisions_to_columns(decisions)
    surfaces = set(cols.pop("surface"))
    label = surface or (next(iter(surfaces)) if len(surfaces) == 1 else "*")
    return stats_from_columns(cols, surface=label, start=start, end=end)


def naive_stats(decisions: Iterable[Any]) -> dict[str, Any]:
    """The per-record loop (benchmark baseline): the same rates, one Python object at a time."""
    actions: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    requests: set[str] = set()
    fallback = n = 0
    for d in decisions:
        n += 1
        actions[_field(d, "action")] += 1
        requests.add(_field(d, "request_id"))
        for r in _field(d, "rule_ids", ()) or ():
            rules[r] += 1
        if _field(d, "breaker_state", "closed") != "closed":
            fallback += 1
    return {"n": n, "requests": len(requests), "drop_rate": actions["drop"] / n if n else 0.0,
            "rule_rate": {r: c / n for r, c in rules.items()}, "fallback_rate": fallback / n if n else 0.0}


class TumblingWindows:
    """Assigns decisions to fixed, non-overlapping time windows per surface and hands back each
    window once a decision at or after its end arrives (event time; ``flush`` closes the rest).

    ``duration_s`` cuts by time; ``max_n`` (optional) also closes a window when it holds that
    many decisions, so a surge is seen before its time window ends."""

    def __init__(self, duration_s: float, *, max_n: int | None = None, by_surface: bool = True):
        if duration_s <= 0:
            raise BadInput(f"window duration must be > 0 seconds, got {duration_s}")
        if max_n is not None and max_n < 1:
            raise BadInput(f"max_n must be >= 1, got {max_n}")
        self.duration_s = duration_s
        self.max_n = max_n
        self.by_surface = by_surface
        self._open: dict[str, tuple[float, list[Any]]] = {}
        self._scores: dict[str, list[float]] = {}

    def _key(self, record: Any) -> str:
        return str(_field(record, "surface", "*")) if self.by_surface else "*"

    def add(self, records: Iterable[Any], scores: Mapping[str, Sequence[float]] | None = None) -> list[WindowStats]:
        """Add decisions (and optional score-stream values per surface); return closed windows."""
        closed: list[WindowStats] = []
        for rec in records:
            key = self._key(rec)
            ts = float(_field(rec, "ts", 0.0))
            start, bucket = self._open.get(key, (None, None))
            if start is not None and ts >= start + self.duration_s:
                closed.append(self._close(key))
                start = None
            if start is None:
                start = ts - (ts % self.duration_s)
                bucket = []
                self._open[key] = (start, bucket)
            bucket.append(rec)
            if self.max_n is not None and len(bucket) >= self.max_n:
                closed.append(self._close(key, end=ts))
        for key, vals in (scores or {}).items():
            self._scores.setdefault(key, []).extend(float(v) for v in vals)
        return closed

    def _close(self, key: str, end: float | None = None) -> WindowStats:
        start, bucket = self._open.pop(key)
        stats = stats_from_decisions(bucket, surface=key, start=start,
                                     end=start + self.duration_s if end is None else end)
        if key in self._scores:
            stats.add_scores(self._scores.pop(key))
        return stats

    def flush(self) -> list[WindowStats]:
        return [self._close(k, end=max(float(_field(r, "ts", 0.0)) for r in self._open[k][1]))
                for k in list(self._open)]
