"""What the guard returns: a :class:`Slate` keeps the per-candidate facts as columns; the
Decision records (``slate.decisions``) and the Arrow table the trace sink writes
(``slate.to_arrow()``) are built only when asked, off the serving path. Split out of
``core.py`` (issue 22).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.policy.actions import ACTION_NAMES, BREAKER, DEADLINE, GUARD_REASONS, UNLABELED, Act
from assay.policy.slate import SlateDecision
from assay.records import Decision


def _by_candidate(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, rule) of every True cell of a (rules, n) matrix, ordered by candidate, then
    rule: flat positions in a transposed copy (np.nonzero on the transposed view is ~3x slower)."""
    rules = matrix.shape[0]
    flat = np.flatnonzero(np.ascontiguousarray(matrix.T))
    cand = flat // rules
    return cand, flat - cand * rules


@dataclass
class Slate:
    """The re-ranked slate, and everything needed to write one decision per candidate.

    The per-candidate facts are the policy library's :class:`~assay.policy.slate.SlateDecision`
    columns; :attr:`decisions` turns them into :class:`assay.records.Decision` records on first
    use (the decision queue does that off the serving path, so serving does not pay for 1,000
    Python objects per request).
    """

    request_id: str
    ts: float
    surface: str
    subject_id: str
    bundle_version: str
    bundle_hash: str
    item_ids: list[str]  # served, best first
    scores: np.ndarray  # served scores after demotions
    item_labels: dict[str, tuple[str, ...]]  # served item id -> interstitial labels
    breaker_state: str = "closed"
    fallback: str | None = None
    model_versions: tuple[str, ...] = ()
    candidate_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))  # in the order given
    decision: SlateDecision | None = None
    breaker_states: dict[int, str] = field(default_factory=dict)  # candidate -> state of the breaker that dropped it
    fallback_ids: list[str] = field(default_factory=list)  # items served from a fallback, not candidates
    notes: tuple[str, ...] = ()
    inputs: Any = None  # assay.policy.record.SlateInputs: what it was decided from, for explanations
    _decisions: tuple[Decision, ...] | None = None

    def __len__(self) -> int:
        return len(self.item_ids)

    def _column(self, name: str, dtype: Any) -> np.ndarray:
        return getattr(self.decision, name) if self.decision is not None else np.empty(0, dtype=dtype)

    @property
    def scores_before(self) -> np.ndarray:
        return self._column("scores_before", np.float64)

    @property
    def scores_after(self) -> np.ndarray:
        return self._column("scores_after", np.float64)

    @property
    def rank_after(self) -> np.ndarray:
        return self._column("rank_after", np.int64)

    @property
    def action(self) -> np.ndarray:
        """int8 :class:`~assay.policy.actions.Act` codes per candidate."""
        return self._column("action", np.int8)

    @property
    def hard_rule(self) -> np.ndarray:
        return self._column("hard_rule", np.int32)

    @property
    def failed_closed(self) -> np.ndarray:
        return self._column("failed_closed", bool)

    @property
    def breaker_scope(self) -> dict[int, str]:
        return self.decision.breaker_scopes if self.decision is not None else {}

    @property
    def _resolution(self):
        return self.decision.resolution if self.decision is not None else None

    @property
    def acting(self) -> np.ndarray | None:
        return self.decision.acting if self.decision is not None else None

    @property
    def shadowed(self) -> np.ndarray | None:
        return self.decision.shadowed if self.decision is not None else None

    @property
    def n_candidates(self) -> int:
        return len(self.candidate_ids)

    @property
    def dropped(self) -> int:
        action = self.action
        return int(((action == Act.DROP) | (action == Act.CAP)).sum())

    @property
    def decisions(self) -> tuple[Decision, ...]:
        if self._decisions is None:
            self._decisions = tuple(self._build_decisions())
        return self._decisions

    def _build_decisions(self) -> list[Decision]:
        n = self.n_candidates
        d = self.decision
        out = []
        if d is not None and n:
            d.fallback = self.fallback
            acting, shadowed = d.acting, d.shadowed
            for i in range(n):
                rule_ids, reasons = d.rule_ids(i, acting)
                h = int(d.hard_rule[i])
                rank = int(d.rank_after[i])
                out.append(Decision(
                    request_id=self.request_id, ts=self.ts, surface=self.surface, subject_id=self.subject_id,
                    item_id=str(self.candidate_ids[i]), rank_before=i, rank_after=rank, action=ACTION_NAMES[int(d.action[i])],
                    rule_ids=tuple(rule_ids), reasons=tuple(reasons), shadow_rule_ids=tuple(d.shadow_ids(i, shadowed)),
                    bundle_hash=self.bundle_hash, bundle_version=self.bundle_version, model_versions=self.model_versions,
                    breaker_state=(self.breaker_states.get(i, "open") if h == BREAKER else self.breaker_state),
                    score_before=float(d.scores_before[i]),
                    score_after=(float(d.scores_after[i]) if rank >= 0 else None),
                ))
        for k, item_id in enumerate(self.fallback_ids):
            pos = self.item_ids.index(item_id) if item_id in self.item_ids else -1
            out.append(Decision(
                request_id=self.request_id, ts=self.ts, surface=self.surface, subject_id=self.subject_id,
                item_id=item_id, rank_before=-1, rank_after=pos, action="allow",
                rule_ids=(f"fallback:{self.fallback}",), reasons=(f"served from fallback {self.fallback} (item {k})",),
                bundle_hash=self.bundle_hash, bundle_version=self.bundle_version, model_versions=self.model_versions,
                breaker_state=self.breaker_state, score_after=float(self.scores[pos]) if pos >= 0 else None,
            ))
        return out

    def _breaker_state_column(self, hard_rule: np.ndarray) -> np.ndarray:
        """Per candidate: the state of the breaker that dropped it, else the request's state."""
        out = np.full(len(hard_rule), self.breaker_state, dtype=object)
        for i in np.flatnonzero(hard_rule == BREAKER):
            out[i] = self.breaker_states.get(int(i), "open")
        return out

    def to_arrow(self):
        """The decisions as one Arrow table in the trace's decision columns, built column-wise
        (no per-candidate Python objects): what ``TraceLog.append_table`` takes. Row for row the
        same as :attr:`decisions`."""
        import pyarrow as pa

        n = self.n_candidates
        d = self.decision
        plan = d.plan if d is not None else None
        rule_ids = plan.ids if plan is not None else ()
        n_rules = len(rule_ids)
        h = self.hard_rule
        names = np.array(ACTION_NAMES, dtype=object)
        # which rules to name per candidate: those that acted (a cap only where it removed the item)
        full = np.zeros((n_rules + 3, n), dtype=bool)
        acting = d.acting if d is not None else None
        if acting is not None and n_rules:
            full[:n_rules] = acting
            if len(plan.cap_rows):
                full[plan.cap_rows, :] = False
        decided = np.flatnonzero(h >= 0)
        full[h[decided], decided] = True
        full[n_rules] = h == UNLABELED
        full[n_rules + 1] = h == DEADLINE
        full[n_rules + 2] = h == BREAKER
        cand, rule = _by_candidate(full)
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(cand, minlength=n), out=offsets[1:])
        reasons_of = [r.reason for r in plan.rules] if plan is not None else []
        ids = np.array([*rule_ids, GUARD_REASONS[UNLABELED][0], GUARD_REASONS[DEADLINE][0], ""], dtype=object)
        reasons = np.array([*reasons_of, GUARD_REASONS[UNLABELED][1], GUARD_REASONS[DEADLINE][1], ""], dtype=object)
        string = pa.string()
        fc_rows = np.empty(0, dtype=np.int64)
        if d is not None and len(rule):
            fc_rows = np.flatnonzero(d.failed_closed[cand] & (rule == h[cand]))
        breaker_rows = np.flatnonzero(rule == n_rules + 2)
        if not len(fc_rows) and not len(breaker_rows):
            # the usual case: every name and reason is the rule's own, gathered by Arrow in C
            rule_array = pa.array(ids.tolist(), type=string).take(rule)
            reason_array = pa.array(reasons.tolist(), type=string).take(rule)
        else:
            rule_values = ids[rule]
            reason_values = reasons[rule]
            for k in fc_rows:
                reason_values[k] = f"fail-closed: {ids[rule[k]]} could not be evaluated (missing labels or budget)"
            for k in breaker_rows:
                scope = self.breaker_scope.get(int(cand[k]), "breaker")
                rule_values[k] = f"breaker:{scope}"
                reason_values[k] = f"circuit breaker {scope} is open" + (f"; fallback {self.fallback}" if self.fallback else "")
            rule_array, reason_array = pa.array(rule_values, type=string), pa.array(reason_values, type=string)
        s_offsets = np.zeros(n + 1, dtype=np.int32)
        shadowed = d.shadowed if d is not None else None
        if shadowed is not None and n_rules:
            s_cand, s_rule = _by_candidate(shadowed)
            np.cumsum(np.bincount(s_cand, minlength=n), out=s_offsets[1:])
            shadow_values = pa.array(ids.tolist(), type=string).take(s_rule)
        else:
            shadow_values = pa.array([], type=string)
        served = self.rank_after >= 0

        def same(value: Any, type_: Any = string):  # one value for every row, repeated in C
            return pa.repeat(pa.scalar(value, type=type_), n)

        cols: dict[str, Any] = {
            "request_id": same(self.request_id), "ts": pa.array(np.full(n, self.ts)), "surface": same(self.surface),
            "subject_id": same(self.subject_id), "item_id": pa.array(self.candidate_ids.astype(object), type=string),
            "rank_before": pa.array(np.arange(n, dtype=np.int64)), "rank_after": pa.array(self.rank_after.astype(np.int64)),
            "action": pa.array(names.tolist(), type=string).take(self.action.astype(np.int64)),
            "rule_ids": pa.ListArray.from_arrays(offsets, rule_array),
            "reasons": pa.ListArray.from_arrays(offsets, reason_array),
            "shadow_rule_ids": pa.ListArray.from_arrays(s_offsets, shadow_values),
            "bundle_hash": same(self.bundle_hash), "bundle_version": same(self.bundle_version),
            "model_versions": pa.ListArray.from_arrays(  # the request's versions on every row
                pa.array(np.arange(n + 1, dtype=np.int32) * len(self.model_versions)),
                pa.array(list(self.model_versions), type=string).take(np.tile(np.arange(len(self.model_versions)), n))),
            "breaker_state": (pa.array(self._breaker_state_column(h), type=string) if len(breaker_rows) or (h == BREAKER).any()
                              else same(self.breaker_state)),
            "score_before": pa.array(self.scores_before.astype(np.float64)),
            "score_after": pa.array(self.scores_after.astype(np.float64), mask=~served),
            "attribution": pa.nulls(n, string),
        }
        table = pa.table(cols)
        if self.fallback_ids:
            extra = [x.to_dict() for x in self.decisions[n:]]
            for row in extra:
                row["attribution"] = None
            table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)])
        return table

    def to_dict(self, *, decisions: bool = False) -> dict[str, Any]:
        items = [{"id": item_id, "score": score} for item_id, score in zip(self.item_ids, self.scores.tolist(), strict=True)]
        if self.item_labels:  # few items carry labels: find them by id rather than test every item
            at = dict(zip(self.item_ids, range(len(items)), strict=True))
            for item_id, labels in self.item_labels.items():
                if labels and item_id in at:
                    items[at[item_id]]["labels"] = list(labels)
        out: dict[str, Any] = {
            "request_id": self.request_id, "surface": self.surface, "bundle_version": self.bundle_version,
            "bundle_hash": self.bundle_hash, "breaker_state": self.breaker_state, "fallback": self.fallback,
            "items": items, "candidates": self.n_candidates, "dropped": self.dropped,
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if decisions:
            out["decisions"] = [x.to_dict() for x in self.decisions]
        return out
