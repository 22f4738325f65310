"""What a surface's rules decide for a whole slate, written once.

``decide_slate(compiled, batch, scores=..., ...)`` is the one implementation of the serving
semantics of docs/policy.md and docs/guard.md. The guard serves with it; ``assay policy test``,
``assay explain guard`` (which re-decides traced slates) and the monitor (through the guard) use
it too; nothing else resolves rules. In order:

1. candidates that leave before any rule runs: no label the surface's rules read (on a
   fail-closed surface: ``guard:unlabeled``), then an open breaker of their source
   (``breaker:<scope>``), then the deadline (``guard:deadline``), first reason first;
2. per candidate, the rules in bundle order: the first matching **hard** rule (drop, allow)
   decides; a condition that is MISSING on a ``fail_closed`` rule drops the candidate there,
   whatever the rule's action; **soft** rules (demote, label, cap) matching before it stack;
   shadow rules and rules outside their rollout (crc32 of rule id and subject) are recorded,
   never act;
3. the slate: survivors ranked by score x the product of their demotion factors (ties keep the
   ranker's order), then each cap rule in rule order keeps at most n of the candidates it acted on
   per value of its key, best ranked first; interstitials for the served candidates.

The per-candidate walk runs in C (``_native.resolve``, one pass down each candidate's rules; the
extension is required). Its test oracle is a whole-matrix numpy resolution written from the
rules above, in tests/policy/policy_oracles.py. Both read how each action acts from the action
types' table (:func:`assay.policy.actions.action_table`), so neither names an action: a new action
is one type in its own file. A cap's key is grouped in one place, :func:`cap_ordinals` (strings
in C; anything else by value in Python).
"""

from __future__ import annotations

import itertools
import zlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.policy import _native
from assay.policy.actions import (
    ACTION_NAMES,
    BREAKER,
    DEADLINE,
    GUARD_REASONS,
    NO_RULE,
    UNLABELED,
    Act,
    action_table,
)
from assay.policy.batch import inferred
from assay.policy.model import CandidateDecision, Outcome, Rule

_TRUE, _MISSING = int(Outcome.TRUE), int(Outcome.MISSING)


# -- per rule list, once ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RulePlan:
    """What the slate steps need of a surface's rules, as arrays, computed once per rule list."""

    rules: tuple[Rule, ...]
    ids: tuple[str, ...]
    kinds: np.ndarray  # int8 action code per rule
    fail_closed: np.ndarray  # bool per rule
    static_live: np.ndarray  # bool per rule: not shadow, rollout > 0 (partial rollouts refined per subject)
    partial: tuple[int, ...]  # rules with 0 < rollout < 100, not shadow
    factors: np.ndarray  # float64 per rule: its action's score factor (1.0 for actions that do not scale)
    label_rows: np.ndarray  # rules whose action shows an interstitial
    cap_rows: np.ndarray  # rules whose action is a slate step (acts after ranking), in rule order
    label_texts: tuple[str, ...]
    label_attrs: tuple[str, ...]  # the item.labels.* attributes the rules read
    table: np.ndarray = field(default_factory=action_table)  # int8 (codes, 3): hard, drops, precedence

    @staticmethod
    def of(compiled: Any) -> RulePlan:
        plan = getattr(compiled, "_slate_plan", None)
        if plan is None:
            plan = RulePlan.build(list(compiled.rules), compiled.reads)
            compiled._slate_plan = plan
        return plan

    @staticmethod
    def build(rules: list[Rule], reads: tuple[str, ...] = ()) -> RulePlan:
        actions = [r.action for r in rules]
        return RulePlan(
            rules=tuple(rules), ids=tuple(r.id for r in rules),
            kinds=np.array([a.code for a in actions], dtype=np.int8).reshape(len(rules)),
            fail_closed=np.array([r.on_missing == "fail_closed" for r in rules], dtype=bool).reshape(len(rules)),
            static_live=np.array([not r.shadow and r.rollout > 0 for r in rules], dtype=bool).reshape(len(rules)),
            partial=tuple(i for i, r in enumerate(rules) if 0 < r.rollout < 100 and not r.shadow),
            factors=np.array([a.score_factor for a in actions], dtype=np.float64).reshape(len(rules)),
            label_rows=np.array([i for i, a in enumerate(actions) if a.interstitial is not None], dtype=np.int64),
            cap_rows=np.array([i for i, a in enumerate(actions) if a.slate_step], dtype=np.int64),
            label_texts=tuple(a.interstitial or "" for a in actions if a.interstitial is not None),
            label_attrs=tuple(a for a in reads if a.startswith("item.labels.")),
            table=action_table(),
        )

    @property
    def hard(self) -> np.ndarray:
        """bool per rule: its action decides the candidate (the first that acts wins)."""
        return self.table[self.kinds, 0].astype(bool) if len(self.kinds) else np.zeros(0, dtype=bool)

    def live(self, subject_id: str) -> np.ndarray:
        """Per rule: acts for this subject (not shadow, inside its rollout)."""
        if not self.partial:
            return self.static_live
        live = self.static_live.copy()
        for r in self.partial:
            live[r] = in_rollout(self.ids[r], subject_id, self.rules[r].rollout)
        return live


def in_rollout(rule_id: str, subject_id: str, percent: float) -> bool:
    """Stable across processes and restarts (crc32 of rule id, NUL, subject id; not Python's
    salted hash): bucket ``crc32 % 10000`` is inside when below ``percent * 100``."""
    if percent >= 100.0:
        return True
    if percent <= 0.0:
        return False
    return zlib.crc32(f"{rule_id}\x00{subject_id}".encode()) % 10000 < percent * 100.0


# -- per candidate: the rule walk ------------------------------------------------------------------
@dataclass(slots=True)
class Resolution:
    """What a surface's rules decide for each candidate, from the rule outcomes: the deciding
    hard rule (the first drop/allow that acts, or any rule failing closed) and the soft rules
    (demote, label, cap) acting before it."""

    first: np.ndarray  # int32 (n,): the deciding hard rule, len(rules) when none
    failed_closed: np.ndarray  # bool (n,): it decided by failing closed
    dropped: np.ndarray  # bool (n,): by the deciding rule, or before any rule ran
    action: np.ndarray  # int8 (n,) Act: DROP, else DEMOTE, LABEL, ALLOW by what acted
    factor: np.ndarray  # float64 (n,): the acting demote factors multiplied in rule order
    soft: np.ndarray  # bool (rules, n): a soft rule acting before the deciding one
    outcomes: np.ndarray  # int8 (rules, n)
    fail_closed: np.ndarray  # bool (rules,)
    live: np.ndarray  # bool (rules,)
    pre_dropped: np.ndarray  # bool (n,)

    def matched(self) -> np.ndarray:
        """(rules, n): TRUE, or MISSING on a fail-closed rule; nothing matches a pre-dropped candidate."""
        matched = (self.outcomes == _TRUE) | ((self.outcomes == _MISSING) & self.fail_closed[:, None])
        return matched & ~self.pre_dropped


def resolve(plan: RulePlan, outcomes: np.ndarray, live: np.ndarray, pre_dropped: np.ndarray) -> Resolution:
    """One walk down each candidate's rules, in C (tested equal to the whole-matrix oracle in
    tests/policy/policy_oracles.py)."""
    n_rules, n = outcomes.shape
    outcomes = np.ascontiguousarray(outcomes, dtype=np.int8)
    pre_dropped = np.ascontiguousarray(pre_dropped, dtype=bool)
    live = np.ascontiguousarray(live, dtype=bool)
    first = np.empty(n, dtype=np.int32)
    failed, dropped = np.empty(n, dtype=bool), np.empty(n, dtype=bool)
    action, factor = np.empty(n, dtype=np.int8), np.empty(n)
    soft = np.zeros((n_rules, n), dtype=bool)
    if n:
        _native.resolve(outcomes, plan.kinds, plan.table, int(Act.DROP), int(Act.ALLOW), plan.fail_closed, live,
                        pre_dropped, plan.factors, first, failed, dropped, action, factor, soft)
    return Resolution(first, failed, dropped, action, factor, soft, outcomes, plan.fail_closed, live, pre_dropped)


# -- the slate ------------------------------------------------------------------------------------
@dataclass
class SlateDecision:
    """A decided slate as columns, one value per candidate in the order given."""

    plan: RulePlan | None
    scores_before: np.ndarray
    scores_after: np.ndarray
    action: np.ndarray  # int8 Act
    hard_rule: np.ndarray  # int32: the deciding (or capping) rule, else NO_RULE or why it left (UNLABELED, ...)
    failed_closed: np.ndarray  # bool
    rank_after: np.ndarray  # int64, -1 when not served
    order: np.ndarray  # positions served, best first
    labels: dict[int, tuple[str, ...]]  # served position -> interstitials, in rule order
    resolution: Resolution | None = None
    breaker_scopes: dict[int, str] = field(default_factory=dict)  # position -> scope of the breaker that dropped it
    fallback: str | None = None
    outcomes: np.ndarray | None = None  # the rule outcomes, None where no rule was evaluated

    @property
    def n(self) -> int:
        return len(self.scores_before)

    @property
    def acting(self) -> np.ndarray | None:
        """(rules, n) bool: the rule acted on the candidate (matched, live, no later than the
        deciding hard rule)."""
        res = self.resolution
        if res is None:
            return None
        acting = res.soft.copy()
        decided = np.flatnonzero(res.first < len(acting))
        acting[res.first[decided], decided] = True
        return acting

    @property
    def shadowed(self) -> np.ndarray | None:
        """(rules, n) bool: matched by a shadow rule or a rule outside its rollout."""
        res = self.resolution
        if res is None or res.live.all():
            return None
        return res.matched() & ~res.live[:, None]

    def rule_ids(self, j: int, acting: np.ndarray | None = None) -> tuple[list[str], list[str]]:
        """(rule ids, reasons) a decision names for candidate ``j``: every rule that acted on it
        in rule order (a cap only where it removed the candidate), and why it left the slate
        before any rule, if it did."""
        plan = self.plan
        h = int(self.hard_rule[j])
        ids: list[str] = []
        reasons: list[str] = []
        if plan is not None:
            acting = self.acting if acting is None else acting
            rows = set(np.flatnonzero(acting[:, j]).tolist()) if acting is not None else set()
            rows = {r for r in rows if not plan.rules[r].action.slate_step}  # named where it removed the candidate
            if h >= 0:
                rows.add(h)
            for r in sorted(rows):
                ids.append(plan.ids[r])
                failed = bool(self.failed_closed[j]) and r == h
                reasons.append(f"fail-closed: {plan.ids[r]} could not be evaluated (missing labels or budget)" if failed
                               else plan.rules[r].reason)
        if h in GUARD_REASONS:
            ids.append(GUARD_REASONS[h][0])
            reasons.append(GUARD_REASONS[h][1])
        elif h == BREAKER:
            scope = self.breaker_scopes.get(j, "breaker")
            ids.append(f"breaker:{scope}")
            reasons.append(f"circuit breaker {scope} is open" + (f"; fallback {self.fallback}" if self.fallback else ""))
        return ids, reasons

    def shadow_ids(self, j: int, shadowed: np.ndarray | None = None) -> list[str]:
        shadowed = self.shadowed if shadowed is None else shadowed
        if shadowed is None or self.plan is None:
            return []
        return [self.plan.ids[r] for r in np.flatnonzero(shadowed[:, j])]

    def candidate(self, j: int) -> CandidateDecision:
        """Candidate ``j`` as a small record (what ``policy test`` and explanations read)."""
        ids, reasons = self.rule_ids(j)
        plan = self.plan
        acting = self.acting
        caps = [plan.ids[r] for r in np.flatnonzero(acting[:, j]) if plan.rules[r].action.slate_step] \
            if plan is not None and acting is not None else []
        texts = [plan.rules[r].action.interstitial for r in np.flatnonzero(acting[:, j])
                 if plan.rules[r].action.interstitial is not None and r != self.hard_rule[j]] \
            if plan is not None and acting is not None else []
        return CandidateDecision(
            action=ACTION_NAMES[int(self.action[j])], rule_ids=ids, reasons=reasons,
            factor=float(self.resolution.factor[j]) if self.resolution is not None else 1.0,
            labels=[t for t in texts if t], caps=caps, shadow_rule_ids=self.shadow_ids(j),
            fail_closed=bool(self.failed_closed[j]), rank=int(self.rank_after[j]),
        )


def decide_slate(compiled: Any, batch: Any, *, scores: np.ndarray, subject_id: str = "", unlabeled_drop: bool = True,
                 deadline_exhausted: bool = False, blocked: Mapping[int, str] | None = None,
                 keys: Mapping[str, Any] | None = None, outcomes: np.ndarray | None = None, label_present: np.ndarray | None = None,
                 live: np.ndarray | None = None, evaluator: str = "compiled", native: bool = True) -> SlateDecision:
    """Decide a slate. ``compiled``: a surface's ``CompiledRules``; ``batch``: the candidates as
    a policy ``Batch``; ``scores``: the ranker's scores (finite), in rank order of the input;
    ``subject_id``: whose rollout buckets apply; ``unlabeled_drop``: the surface is fail-closed
    (a candidate with none of the labels the rules read leaves first); ``blocked``: candidate
    position -> scope of the open breaker (its source's) that removes it; ``keys``: candidate
    field -> column, what caps group by; ``outcomes``: the rule outcomes when already known;
    ``label_present``: (n,) whether a candidate has any label the rules read, when the caller
    knows it already (otherwise read from the batch's label columns); ``live``: per rule, whether
    it acts for this subject, when recorded (otherwise from the rollout buckets of
    ``subject_id``); ``native=False``: the compiled rules run on their numpy closures alone
    (``CompiledRules.evaluate``; what the tests compare the C rule programs with)."""
    plan = RulePlan.of(compiled)
    n = len(scores)
    scores = np.asarray(scores, dtype=np.float64)
    pre_dropped = np.zeros(n, dtype=bool)
    why = np.full(n, NO_RULE, dtype=np.int32)
    if unlabeled_drop and plan.label_attrs and n:
        present = label_present if label_present is not None else _label_present(batch, compiled, plan)
        if present is not None and not present.all():
            pre_dropped = ~present
            why[pre_dropped] = UNLABELED
    breaker_scopes: dict[int, str] = {}
    if blocked:
        for j, scope in blocked.items():
            if not pre_dropped[j]:
                pre_dropped[j] = True
                why[j] = BREAKER
                breaker_scopes[j] = scope
    if deadline_exhausted and n:
        why[~pre_dropped] = DEADLINE
        pre_dropped = np.ones(n, dtype=bool)
    evaluated = outcomes
    if outcomes is None:
        if n and len(plan.rules) and not pre_dropped.all():
            outcomes = evaluated = np.asarray(compiled.evaluate_reference(batch) if evaluator == "reference" else
                                              compiled.evaluate(batch, native=native), dtype=np.int8)
        else:  # every candidate left before any rule: nothing to evaluate
            outcomes = np.zeros((len(plan.rules), n), dtype=np.int8)
    res = resolve(plan, outcomes, plan.live(subject_id) if live is None else live, pre_dropped)
    action = res.action.copy()  # caps act on top of what the rules decided
    hard_rule = np.where(res.first < len(plan.rules), res.first, why).astype(np.int32, copy=False)
    keep = ~res.dropped
    scores_after = scores * res.factor
    # rank survivors by demoted score; ties keep the ranker's order (a stable sort)
    order = np.argsort(-scores_after, kind="stable")
    order = order[keep[order]]
    if len(plan.cap_rows):
        capping = res.soft[plan.cap_rows]
        for c, r in enumerate(plan.cap_rows.tolist()):
            in_cap = capping[c][order]
            if not in_cap.any():
                continue
            positions = order[in_cap]  # the candidates it acted on, best first
            rule = plan.rules[r]
            over = rule.action.after_ranking(positions, (keys or {}).get(rule.action.key))
            if len(over):
                keep[over] = False
                action[over] = rule.action.code
                hard_rule[over] = r
                order = order[keep[order]]
    rank_after = np.full(n, -1, dtype=np.int64)
    rank_after[order] = np.arange(len(order))
    labels: dict[int, tuple[str, ...]] = {}
    if len(plan.label_rows):
        # flat positions (rule * n + candidate): labelled survivors are few
        shown = np.flatnonzero(res.soft[plan.label_rows] & keep).tolist()
        for j, k in sorted((f % n, f // n) for f in shown):  # by candidate, then rule order
            labels[j] = (*labels.get(j, ()), plan.label_texts[k])
    return SlateDecision(plan, scores, scores_after, action, hard_rule, res.failed_closed, rank_after, order, labels,
                         resolution=res, breaker_scopes=breaker_scopes, outcomes=evaluated)


def breaker_slate(scores: np.ndarray, scope: str, plan: RulePlan | None = None, fallback: str | None = None) -> SlateDecision:
    """Every candidate dropped because the breaker of the whole request (``surface:<name>``,
    ``model:<version>``) is open: what is served instead is the fallback's."""
    n = len(scores)
    scores = np.asarray(scores, dtype=np.float64)
    return SlateDecision(plan, scores, scores.copy(), np.full(n, Act.DROP, dtype=np.int8), np.full(n, BREAKER, dtype=np.int32),
                         np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64), np.empty(0, dtype=np.int64), {},
                         breaker_scopes=dict.fromkeys(range(n), scope), fallback=fallback)


def _label_present(batch: Any, compiled: Any, plan: RulePlan) -> np.ndarray | None:
    decls = compiled.bundle.attributes["rules"]
    present = None
    for attr in plan.label_attrs:
        col = batch.column(attr, decls[attr])
        has = np.ones(batch.n, dtype=bool) if col.missing is None else ~np.asarray(col.missing, dtype=bool)
        present = has if present is None else (present | has)
        if present.all():
            return present
    return present


# -- grouping a cap's key -------------------------------------------------------------------------------
_ABSENT = object()


def group_ordinals(values: np.ndarray) -> np.ndarray:
    """For values in rank order, how many earlier values are equal: 0 for the best of each creator
    (topic, ...), 1 for the next, ... — what a cap compares with its limit. One pass driven by
    ``map()`` over a dict of ``itertools.count`` per value (no Python loop body, no sort); absent
    values (None, NaN) are one group."""
    kind = values.dtype.kind
    keys = values.tolist()
    if kind == "f" or (kind == "O" and inferred(values) != "string"):  # all strings: nothing absent
        if kind == "f":
            absent = np.isnan(values)
        else:
            import pandas as pd

            absent = pd.isna(values)
        if absent.any():
            for i in np.flatnonzero(absent).tolist():
                keys[i] = _ABSENT
    counters: defaultdict[Any, itertools.count] = defaultdict(itertools.count)
    return np.fromiter(map(next, map(counters.__getitem__, keys)), dtype=np.int64, count=len(keys))


def cap_ordinals(column: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``group_ordinals(column[positions])``, the one grouping of a cap's key: a fixed-width
    string column grouped in C by exact bytes (a hash table, no sort and no copy of the rows),
    Python strings in C by their own hashes, anything else (numbers, absent values, lists and
    maps) by value with :func:`group_ordinals`."""
    if column.dtype.kind == "U" and column.dtype.itemsize:
        out = np.empty(len(positions), dtype=np.int64)
        _native.group_ordinals(np.ascontiguousarray(column), column.dtype.itemsize,
                               np.ascontiguousarray(positions, dtype=np.int64), out)
        return out
    if column.dtype == object:  # Python strings (JSON): grouped by their own hashes
        out = np.empty(len(positions), dtype=np.int64)
        if _native.group_ordinals_str(column.tolist(), np.ascontiguousarray(positions, dtype=np.int64), out) >= 0:
            return out
    if column.dtype == object:  # anything a caller sent, lists and maps included, made hashable
        return group_ordinals(hashable(column, positions))
    return group_ordinals(column[positions])


def hashable(col: Any, positions: np.ndarray) -> np.ndarray:
    """The values at ``positions`` of a column that may hold lists or maps (a numpy object column,
    or an Arrow list column), each list as a tuple (a map as its sorted items) so it can be a
    cap's group key."""
    values = col.take(positions).to_pylist() if not isinstance(col, np.ndarray) else col[positions].tolist()
    out = np.empty(len(values), dtype=object)
    out[:] = [_frozen(v) for v in values]
    return out


def _frozen(v: Any) -> Any:
    """A value as a hashable group key: lists (and arrays) as tuples, maps as their items in key
    order, recursively; anything else unhashable by its repr."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(_frozen(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v))
    if isinstance(v, dict):
        return ("__map__", tuple(sorted(((repr(k), _frozen(x)) for k, x in v.items()), key=lambda kv: kv[0])))
    try:
        hash(v)
    except TypeError:
        return ("__repr__", repr(v))
    return v


def factorize(values: np.ndarray, with_uniques: bool = False):
    """Integer codes per distinct value, numbered in order of first appearance; None is a value of
    its own. Strings (fixed-width or Python str) are grouped by the extension's hash table (the
    tests compare it with pandas' factorize); anything else by pandas. Absent values (None, NaN)
    come back as None among the uniques."""
    n = len(values)
    if values.dtype.kind == "U" and values.dtype.itemsize:
        values = np.ascontiguousarray(values)
    if n and ((values.dtype.kind == "U" and values.dtype.itemsize) or values.dtype == object):
        codes, ordinals, positions = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64), np.arange(n, dtype=np.int64)
        if values.dtype.kind == "U":
            groups = _native.group_ordinals(values, values.dtype.itemsize, positions, ordinals, codes)
        else:
            groups = _native.group_ordinals_str(values.tolist(), positions, ordinals, codes)
        if groups >= 0:
            if not with_uniques:
                return codes
            uniques = np.empty(groups, dtype=object)
            uniques[:] = values[ordinals == 0].tolist()  # each group's first row, in order
            return codes, uniques
    import pandas as pd

    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    codes = np.asarray(codes, dtype=np.int64)
    if not with_uniques:
        return codes
    uniques = np.asarray(uniques, dtype=object)
    uniques[pd.isna(uniques)] = None  # pandas gives NaN for None: absent either way
    return codes, uniques


def decide_records(compiled: Any, context: dict[str, Any], items: list[dict[str, Any]], *, scores: Any = None,
                   unlabeled_drop: bool = True, evaluator: str = "compiled", native: bool = True) -> SlateDecision:
    """:func:`decide_slate` for candidates given as nested records (``{"labels": {...}, "topic":
    ...}`` per candidate, read under ``item.``; ``context`` holds ``request``), the form a bundle's
    tests and a single-candidate explanation use. Scores default to the order given; the subject
    is ``request.subject_id`` or ``request.user.id``; caps group by the candidates' fields."""
    from assay.policy.batch import Batch

    n = len(items)
    plan = RulePlan.of(compiled)
    request = context.get("request") if isinstance(context.get("request"), dict) else {}
    user = request.get("user") if isinstance(request.get("user"), dict) else {}
    subject_id = str(request.get("subject_id") or user.get("id") or "")
    keys: dict[str, Any] = {}
    for r in plan.cap_rows.tolist():
        key = plan.rules[r].action.key
        if any(isinstance(it, dict) and key in it for it in items):
            col = np.empty(n, dtype=object)
            col[:] = [it.get(key) if isinstance(it, dict) else None for it in items]
            keys[key] = col
    score_col = np.linspace(1.0, 0.0, n, endpoint=False) if scores is None else np.asarray(scores, dtype=np.float64)
    return decide_slate(compiled, Batch.from_records(context, items), scores=score_col, subject_id=subject_id,
                        unlabeled_drop=unlabeled_drop, keys=keys, evaluator=evaluator, native=native)
