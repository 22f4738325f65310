"""The guard: policy rules applied to a candidate batch as column operations, in milliseconds.

``Guard(bundle, labels).apply(request, candidates) -> Slate``.

What a slate means (first hard match, stacking soft actions, fail-closed drops, the unlabeled
pre-drop, rollout, caps, the deadline, which candidates a breaker removes) is written once, in the
policy library: :func:`assay.policy.slate.decide_slate`, which ``assay policy test`` and
``assay explain guard`` use too. The guard owns what needs a live system around it:

- reading the labels from the label store within the request's deadline (a store that is down,
  slow or returns garbage gives MISSING labels and a breaker failure, never an exception to the
  caller);
- validating the candidates (ids, scores, shapes) and handing their columns to the policy batch,
  which types every input;
- the circuit breakers: the surface's and the ranker's gate a whole request (and pick its
  fallback), a source's removes its candidates;
- atomic bundle reloads: the guard holds a reference to an immutable :class:`CompiledBundle`;
  each request reads that reference once, so a slate is decided by exactly one bundle version,
  which every decision records.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.errors import BadInput
from assay.guard import candidates as cand_mod
from assay.guard.breakers import BreakerRegistry, CallOutcome, Fallback, Permits, State
from assay.guard.candidates import LABEL_PREFIX, Candidates
from assay.policy.actions import ACTION_NAMES, BREAKER, DEADLINE, GUARD_REASONS, UNLABELED, Act
from assay.policy.record import SlateInputs
from assay.policy.slate import RulePlan, SlateDecision, breaker_slate, decide_slate, factorize
from assay.policy.types import MISSING, lookup
from assay.records import Decision, Event


@dataclass(frozen=True)
class CompiledSurface:
    surface: str
    compiled: Any  # assay.policy CompiledRules
    plan: RulePlan
    label_names: tuple[str, ...]  # the X of item.labels.X read by the rules
    # what building a request's batch needs, sorted out once: (attribute, label) for item.labels.X,
    # (attribute, candidate field) for the other item.* attributes, (attribute, path under the
    # request) for request.*
    label_attrs: tuple[tuple[str, str], ...]
    field_attrs: tuple[tuple[str, str], ...]
    request_paths: tuple[tuple[str, tuple[str, ...]], ...]
    label_columns: tuple[str, ...]  # labels.X per label_names
    recorded_fields: tuple[str, ...] = ()  # candidate fields a re-decision needs: those the rules read, the cap keys

    @property
    def specs(self) -> tuple[Any, ...]:
        return self.plan.rules


@dataclass(frozen=True)
class CompiledBundle:
    """An immutable, compiled bundle: what one request is decided by."""

    bundle: Any
    version: str
    hash: str
    surfaces: dict[str, CompiledSurface]

    def surface(self, name: str) -> CompiledSurface:
        s = self.surfaces.get(name)
        if s is None:
            known = ", ".join(sorted(self.surfaces)) or "(none)"
            raise BadInput(f"unknown surface {name!r}; bundle {self.bundle.name} {self.version} has rules for: {known}")
        return s


def compile_bundle(bundle: Any, extra_surfaces: tuple[str, ...] = ()) -> CompiledBundle:
    """Compile every surface the bundle names (plus ``extra_surfaces``) before it serves."""
    surfaces: dict[str, CompiledSurface] = {}
    for name in sorted(set(bundle.surfaces()) | set(extra_surfaces)):
        compiled = bundle.compile_rules(name)
        plan = RulePlan.of(compiled)
        reads = compiled.reads
        labels = tuple(sorted(a[len("item.labels."):] for a in reads if a.startswith("item.labels.")))
        surfaces[name] = CompiledSurface(
            name, compiled, plan, labels,
            label_attrs=tuple(("item.labels." + x, x) for x in labels),
            field_attrs=tuple((a, a[len("item."):]) for a in reads if a.startswith("item.") and not a.startswith("item.labels.")),
            request_paths=tuple((a, tuple(a.split(".")[1:])) for a in reads if a.startswith("request.")),
            label_columns=tuple(LABEL_PREFIX + x for x in labels),
            recorded_fields=tuple(sorted(({a[len("item."):] for a in reads if a.startswith("item.") and not a.startswith("item.labels.")}
                                          | {plan.rules[r].action.key for r in plan.cap_rows.tolist()}) - {"id", "score"})),
        )
    return CompiledBundle(bundle, str(bundle.version), str(bundle.hash), surfaces)


def _warm_imports() -> None:
    """Import what the first request would otherwise import inside its deadline budget."""
    import pandas
    import pandas.api.types  # noqa: F401
    import pyarrow
    import pyarrow.compute  # noqa: F401  (list columns are converted by Arrow)


def freeze_startup_heap() -> None:
    """Put everything allocated while starting (the compiled bundle, the label tables, imported
    libraries) out of the cyclic garbage collector's reach (``gc.freeze``). A full collection
    then scans only what serving allocates, instead of pausing one request in a few hundred for
    the whole heap: the guard's server and stream worker call this once they are built."""
    import gc

    gc.collect()
    gc.freeze()


def _by_candidate(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, rule) of every True cell of a (rules, n) matrix, ordered by candidate, then
    rule: flat positions in a transposed copy (np.nonzero on the transposed view is ~3x slower)."""
    rules = matrix.shape[0]
    flat = np.flatnonzero(np.ascontiguousarray(matrix.T))
    cand = flat // rules
    return cand, flat - cand * rules


def _nested(columns: dict[str, Any], path: str) -> np.ndarray | None:
    """``item.a.b`` where no column is named ``a.b``: key ``b`` of the objects in column ``a``
    (absent where a row has no such key), the way a bundle test's nested input reads."""
    head, _, rest = path.partition(".")
    while head not in columns and "." in rest:
        step, _, rest = rest.partition(".")
        head = f"{head}.{step}"
    col = columns.get(head)
    if col is None or not isinstance(col, np.ndarray) or col.dtype != object:
        return None
    parts = tuple(rest.split("."))
    out = np.empty(len(col), dtype=object)
    out[:] = [_value(v, parts) for v in col.tolist()]
    return out


def _value(root: Any, parts: tuple[str, ...]) -> Any:
    """``lookup`` with its MISSING as None, what a typed column marks missing."""
    value = lookup(root, parts)
    return None if value is MISSING else value


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


@dataclass
class GuardConfig:
    deadline_ms: float = 50.0
    # per surface: "fail_closed" (default) drops unlabeled candidates; "fail_open" lets rules decide
    surface_modes: dict[str, str] = field(default_factory=dict)
    default_mode: str = "fail_closed"
    extra_surfaces: tuple[str, ...] = ()  # surfaces served by bundle-wide rules only
    fallbacks: dict[str, Fallback] = field(default_factory=dict)  # breaker scope (or kind) -> fallback
    cache_safe_slates: bool = True
    cached_slates_max: int = 10000  # subjects whose last safe slate is kept for a cached_slate fallback
    # labels come from the label store; only a trusted in-process caller (a test, an offline
    # replay with labels at hand) may hand them over with the candidates
    caller_labels: bool = False
    # record with each slate what it was decided from (assay.policy.record), for `assay explain
    # guard`: written by the decision sink beside the decisions (nothing is recorded without one)
    record_inputs: bool = True

    def __post_init__(self) -> None:
        for s, m in {**self.surface_modes, "(default)": self.default_mode}.items():
            if m not in ("fail_closed", "fail_open"):
                raise BadInput(f"surface mode for {s!r} must be fail_closed or fail_open, got {m!r}")
        if not self.deadline_ms > 0:
            raise BadInput(f"deadline_ms must be positive, got {self.deadline_ms}")


class Guard:
    """Applies a policy bundle's serving rules to candidate batches. Thread-safe."""

    def __init__(self, bundle: Any, labels: Any = None, *, config: GuardConfig | None = None,
                 breakers: BreakerRegistry | None = None, sink: Callable[[Any], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config or GuardConfig()
        self.labels = labels
        self.breakers = breakers or BreakerRegistry()
        if sink is not None and not hasattr(sink, "submit"):
            from assay.guard.sink import DecisionQueue

            sink = DecisionQueue(sink)
        self.sink = sink
        self._clock = clock
        self._state: CompiledBundle = compile_bundle(bundle, self.config.extra_surfaces)
        _warm_imports()
        self._safe_slates: dict[str, tuple[list[str], np.ndarray]] = {}  # seeded, per surface
        self._subject_slates: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self.events: deque[Event] = deque(maxlen=1000)
        self.breakers.add_listener(self._on_event)
        self.counters = {"requests": 0, "label_store_errors": 0, "label_store_timeouts": 0, "budget_exhausted": 0,
                         "fallbacks": 0, "garbage_labels": 0}

    # -- bundle --------------------------------------------------------------------------------
    @property
    def bundle(self) -> CompiledBundle:
        return self._state

    def swap(self, bundle: Any) -> CompiledBundle:
        """Compile ``bundle`` completely, then switch to it with one reference assignment.
        Requests in flight finish on the bundle they started with."""
        new = compile_bundle(bundle, self.config.extra_surfaces)
        self._state = new
        return new

    def _on_event(self, event: Event) -> None:
        event = Event(event.kind, event.ts, event.subject, event.payload, self._state.hash)
        self.events.append(event)
        if self.sink is not None:
            with contextlib.suppress(Exception):  # a full or broken sink never fails serving
                self.sink(event)

    # -- feedback ------------------------------------------------------------------------------
    def report_harmful(self, *, item_id: str, source: str | None = None, model_version: str | None = None,
                       surface: str | None = None, creator: str | None = None, severe: bool = False) -> dict[str, str]:
        """A served candidate was later found harmful: a failure against the breaker of every scope
        named (whatever that breaker's failure predicate counts), never a success; ``severe`` also
        counts toward the absolute-count trip. Returns the state of each breaker reached."""
        if not isinstance(item_id, str) or not item_id:
            raise BadInput("harm report: item_id must be a non-empty string")
        if not isinstance(severe, bool):
            raise BadInput(f"harm report: severe must be true or false, got {severe!r}")
        scopes = []
        for kind, name in (("source", source), ("model", model_version), ("surface", surface), ("creator", creator)):
            if name is None:
                continue
            if not isinstance(name, str) or not name:
                raise BadInput(f"harm report: {kind} must be a non-empty string, got {name!r}")
            scopes.append(f"{kind}:{name}")
        return self.breakers.report(scopes, severe=severe, reason=f"{'severe ' if severe else ''}harm report on {item_id}")

    def set_safe_slate(self, surface: str, item_ids: list[str], scores: list[float] | None = None, *,
                       sources: list[str | None] | None = None, creators: list[str | None] | None = None) -> None:
        """Seed the cached safe slate a ``cached_slate`` fallback serves. With each item's source and
        creator given, items of an open source or creator are left out when it is served."""
        s = np.asarray(scores if scores is not None else np.linspace(1.0, 0.0, len(item_ids), endpoint=False), dtype=np.float64)
        scopes = {k: list(v) for k, v in (("source", sources), ("creator", creators)) if v is not None}
        for k, v in scopes.items():
            if len(v) != len(item_ids):
                raise BadInput(f"safe slate: {len(v)} {k}s for {len(item_ids)} items")
        self._safe_slates[surface] = (list(item_ids), s, scopes)

    def _fallback_for(self, scope: str) -> Fallback:
        fb = self.config.fallbacks.get(scope) or self.config.fallbacks.get(scope.split(":", 1)[0])
        if fb is None:
            policy = self.breakers.policy(scope)
            fb = policy.fallback if policy is not None else Fallback("cached_slate")
        return fb

    # -- serving -------------------------------------------------------------------------------
    def apply(self, request: dict[str, Any], candidates: Any, *, evaluator: str = "compiled") -> Slate:
        """Decide one request. ``request``: ``{"request_id", "surface", "user": {"id", ...},
        "deadline_ms", "model_version"}``; ``candidates``: columns or a list of dicts."""
        started = time.perf_counter()
        state = self._state  # read once: this request is decided by this bundle only
        if not isinstance(request, dict):
            raise BadInput(f"request must be an object, got {type(request).__name__}")
        surface_name = request.get("surface")
        if not isinstance(surface_name, str) or not surface_name:
            raise BadInput("request: 'surface' must name a surface, e.g. \"for_you\"")
        surface = state.surface(surface_name)
        cands = cand_mod.coerce(candidates, labels_allowed=self.config.caller_labels)
        deadline_ms = request.get("deadline_ms", self.config.deadline_ms)
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, (int, float)) or not deadline_ms > 0:
            raise BadInput(f"request: 'deadline_ms' must be a positive number, got {deadline_ms!r}")
        deadline = started + float(deadline_ms) / 1000.0
        user = request.get("user") if isinstance(request.get("user"), dict) else {}
        subject_id = str(request.get("subject_id") or user.get("id") or "")
        request_id = str(request.get("request_id") or uuid.uuid4().hex)
        model_version = request.get("model_version")
        models = (str(model_version),) if model_version else ()
        self.counters["requests"] += 1

        # breakers that gate the whole request: the surface, then the ranker's model version; every
        # permit taken is recorded with the outcome or, on any other way out, given back
        permits = self.breakers.acquire((f"surface:{surface_name}", f"model:{model_version}" if model_version else None))
        if permits.refused is not None:
            return self._serve_fallback(state, surface, request, request_id, subject_id, models, cands, permits.refused,
                                        permits.refused_state, started, deadline, evaluator)
        with permits:
            slate, outcome = self._decide(state, surface, request, request_id, subject_id, models, cands, started, deadline, evaluator)
            permits.record(outcome)
        slate.breaker_state = State.HALF_OPEN.value if permits.half_open else State.CLOSED.value
        if self.config.cache_safe_slates and outcome.kind == "drop_rate" and len(slate) and subject_id:
            # the subject's own last fully labelled slate: safe *for this subject* (never another's),
            # with each item's source and creator, so a fallback can leave out those now open
            cache = self._subject_slates
            cache[(surface_name, subject_id)] = (slate.item_ids, slate.scores, self._served_scopes(cands, slate))
            if len(cache) > self.config.cached_slates_max:
                cache.pop(next(iter(cache)))
        if self.sink is not None:
            self.sink(slate)
        return slate

    def _serve_fallback(self, state: CompiledBundle, surface: CompiledSurface, request: dict, request_id: str,
                        subject_id: str, models: tuple[str, ...], cands: Candidates, scope: str, refused_state: State,
                        started: float, deadline: float, evaluator: str) -> Slate:
        fb = self._fallback_for(scope)
        self.counters["fallbacks"] += 1
        st = refused_state.value
        strict_permits = self.breakers.acquire((f"surface:{fb.surface}",)) if fb.kind == "stricter_rules" else None
        if strict_permits is not None and strict_permits.refused is None:
            with strict_permits:  # the stricter surface's own breaker sees its label read
                strict = state.surface(fb.surface or "")
                slate, outcome = self._decide(state, strict, request, request_id, subject_id, models, cands, started, deadline, evaluator)
                strict_permits.record(outcome)
            slate.surface = surface.surface
            slate.fallback, slate.breaker_state = "stricter_rules", st
            slate.notes = (*slate.notes, f"breaker {scope} {st}: decided by the rules of {fb.surface}")
            if slate.inputs is not None:
                slate.inputs.surface = surface.surface
                slate.inputs.fallback = {"kind": "stricter_rules", "scope": scope, "surface": strict.surface}
        elif fb.kind == "safe_source":
            # the vetted candidates (trusted, with the labels they carry) are decided instead; the
            # request's own candidates are recorded as dropped by the breaker
            safe = cand_mod.coerce(fb.candidates(request), labels_allowed=True)  # type: ignore[misc]
            slate, _ = self._decide(state, surface, request, request_id, subject_id, models, safe, started, deadline, evaluator,
                                    use_store=False)
            slate.fallback_ids = list(slate.item_ids)
            slate.candidate_ids = cands.ids
            slate.decision = breaker_slate(cands.scores, scope, surface.plan, "safe_source")
            slate.breaker_states = dict.fromkeys(range(cands.n), st)
            slate.fallback, slate.breaker_state, slate._decisions = "safe_source", st, None
            slate.inputs = self._fallback_inputs(state, surface, cands, scope, "safe_source", slate) if self.config.record_inputs and self.sink is not None else None
        else:
            slate = self._all_dropped(state, surface, request_id, subject_id, models, cands, scope, st, fb.kind)
            cached = self._subject_slates.get((surface.surface, subject_id)) or self._safe_slates.get(surface.surface)
            if fb.kind == "cached_slate" and cached is not None:
                ids, scores, scopes = cached
                blocked = self.breakers.blocked_items(scopes)
                if blocked:  # never an item of a source or creator whose breaker is open
                    gone = {i for i, _, _ in blocked}
                    keep = [i for i in range(len(ids)) if i not in gone]
                    ids, scores = [ids[i] for i in keep], scores[keep]
                    slate.notes = (*slate.notes, "left out of the fallback: " + ", ".join(sorted({f"{s} {b.value}" for _, s, b in blocked})))
                slate.item_ids, slate.scores, slate.fallback_ids = list(ids), scores.copy(), list(ids)
            elif strict_permits is not None:
                slate.notes = (*slate.notes, f"breaker surface:{fb.surface} of the stricter rules is not closed: nothing served")
            slate.fallback = fb.kind
            slate.inputs = self._fallback_inputs(state, surface, cands, scope, fb.kind, slate) if self.config.record_inputs and self.sink is not None else None
        if self.sink is not None:
            self.sink(slate)
        return slate

    @staticmethod
    def _fallback_inputs(state: CompiledBundle, surface: CompiledSurface, cands: Candidates, scope: str, kind: str,
                         slate: Slate) -> SlateInputs:
        return SlateInputs(surface=surface.surface, decided_by=surface.surface, bundle_hash=state.hash, bundle_version=state.version,
                           request={}, rollout={}, unlabeled_drop=False, deadline_exhausted=False, ids=cands.ids, scores=cands.scores,
                           columns={}, missing={}, labels={}, blocked={},
                           fallback={"kind": kind, "scope": scope, "all_dropped": True,
                                     "items": list(zip(slate.item_ids, slate.scores.tolist(), strict=True))})

    def _all_dropped(self, state: CompiledBundle, surface: CompiledSurface, request_id: str, subject_id: str,
                     models: tuple[str, ...], cands: Candidates, scope: str, st: str, fallback: str) -> Slate:
        return Slate(
            request_id=request_id, ts=self._clock(), surface=surface.surface, subject_id=subject_id,
            bundle_version=state.version, bundle_hash=state.hash, item_ids=[], scores=np.empty(0), item_labels={},
            breaker_state=st, fallback=fallback, model_versions=models, candidate_ids=cands.ids,
            decision=breaker_slate(cands.scores, scope, surface.plan, fallback), breaker_states=dict.fromkeys(range(cands.n), st),
        )

    # -- the decision itself -------------------------------------------------------------------
    def _read_labels(self, surface: CompiledSurface, cands: Candidates, deadline: float, use_store: bool):
        """Label columns for the surface's rules: caller-supplied ``labels.X`` first, the store
        for the rest. Returns (values, present, outcome kind, duration, complete): complete when
        the store vouched that every label is present for every candidate."""
        n = cands.n
        values: dict[str, np.ndarray] = {}
        present: dict[str, np.ndarray] = {}
        columns = cands.columns
        wanted: Any = surface.label_names  # the usual case: the caller gives no labels
        if any(map(columns.__contains__, surface.label_columns)):
            wanted = []
            for name, key in zip(surface.label_names, surface.label_columns, strict=True):
                given = columns.get(key)
                if given is not None:
                    values[name] = given
                    present[name] = ~np.isnan(given)
                else:
                    wanted.append(name)
        kind, duration, complete = "drop_rate", 0.0, False
        if wanted:
            store_ok = False
            if use_store and self.labels is not None and n:
                t0 = time.perf_counter()
                try:
                    remaining = max(deadline - t0, 0.0)
                    got = self.labels.get(cands.ids.tolist(), wanted, timeout_s=remaining)
                    duration = time.perf_counter() - t0
                    if len(got.item_ids) != n:
                        raise ValueError(f"label store answered {len(got.item_ids)} items for {n}")
                    if getattr(got, "columns_checked", False) is True:
                        # the in-memory store's own batch: float64/bool arrays of n values, by construction
                        values.update(got.values)
                        present.update(got.present)
                    else:  # any other store's answer is converted and its shapes checked
                        for name in wanted:
                            v = np.asarray(got.values[name], dtype=np.float64)
                            p = np.asarray(got.present[name], dtype=bool)
                            if v.shape != (n,) or p.shape != (n,):
                                raise ValueError(f"label {name!r}: store returned shape {v.shape}/{p.shape} for {n} items")
                            values[name], present[name] = v, p
                    self.counters["garbage_labels"] += int(getattr(got, "garbage", 0))
                    store_ok = True
                    complete = len(wanted) == len(surface.label_names) and getattr(got, "complete", False) is True
                except Exception as e:  # down, slow, garbage: fail closed, count, never raise
                    duration = time.perf_counter() - t0
                    timed_out = bool(getattr(e, "timeout", False)) or isinstance(e, TimeoutError)
                    kind = "label_store_timeout" if timed_out else "label_store_error"
                    self.counters["label_store_timeouts" if timed_out else "label_store_errors"] += 1
            if not store_ok:
                for name in wanted:
                    values[name] = np.full(n, np.nan)
                    present[name] = np.zeros(n, dtype=bool)
        return values, present, kind, duration, complete

    def _batch(self, surface: CompiledSurface, request: dict, cands: Candidates, values, present, complete: bool = False):
        """The policy batch for this request: label columns with their presence, the candidates'
        columns as given (the policy batch types them against the declared attributes, the one
        place inputs are typed), the request's values. A candidate field nobody gave is left out:
        the batch then treats it as absent for every candidate."""
        from assay.policy import Batch

        columns: dict[str, Any] = {attr: values[name] for attr, name in surface.label_attrs}
        # all present (complete): no masks to build, invert and check
        missing: dict[str, Any] = {} if complete else {attr: ~present[name] for attr, name in surface.label_attrs}
        given, given_missing = cands.columns, cands.missing
        nested: dict[str, Any] = {}  # fields read from inside an object column, as the batch got them
        for attr, path in surface.field_attrs:
            col = cands.ids if path == "id" else cands.scores if path == "score" else given.get(path)
            if col is None and "." in path:
                col = nested[path] = _nested(given, path)
            if col is None:
                continue
            columns[attr] = col
            mask = given_missing.get(path)
            if mask is not None:
                missing[attr] = mask
        scalars = {}
        for attr, parts in surface.request_paths:
            value = lookup(request, parts)
            if value is not MISSING:
                scalars[attr] = value
        batch = Batch.from_columns(cands.n, columns=columns, missing=missing, scalars=scalars)
        batch.nested_fields = nested
        return batch

    def _decide(self, state: CompiledBundle, surface: CompiledSurface, request: dict, request_id: str, subject_id: str,
                models: tuple[str, ...], cands: Candidates, started: float, deadline: float, evaluator: str,
                use_store: bool = True) -> tuple[Slate, CallOutcome]:
        n = cands.n
        values, present, kind, duration, complete = self._read_labels(surface, cands, deadline, use_store)
        budget_out = time.perf_counter() >= deadline
        notes: list[str] = []
        if kind != "drop_rate":
            notes.append(f"label store failed ({kind}); fail-closed")
        if budget_out and n:
            self.counters["budget_exhausted"] += 1
            notes.append("deadline budget exhausted; fail-closed")
            if kind == "drop_rate":
                kind = "label_store_timeout"  # the read used up the budget: a slow call
        # open source (creator) breakers remove their candidates before the rules decide; permits
        # taken are recorded below or, if deciding fails, given back
        gate = self._item_gate(cands)
        try:
            return self._decide_gated(state, surface, request, request_id, subject_id, models, cands, values, present, kind,
                                      duration, complete, budget_out, notes, gate, evaluator)
        except BaseException:
            if gate:
                self._release_items(gate[2])
            raise

    def _decide_gated(self, state: CompiledBundle, surface: CompiledSurface, request: dict, request_id: str, subject_id: str,
                      models: tuple[str, ...], cands: Candidates, values, present, kind: str, duration: float, complete: bool,
                      budget_out: bool, notes: list[str], gate, evaluator: str) -> tuple[Slate, CallOutcome]:
        n = cands.n
        batch = self._batch(surface, request, cands, values, present, complete)
        mode = self.config.surface_modes.get(surface.surface, self.config.default_mode)
        keys = {**cands.columns, "id": cands.ids, "score": cands.scores}
        unlabeled_drop = mode == "fail_closed" and not complete
        plan = surface.plan
        live = plan.live(subject_id)
        decision = decide_slate(surface.compiled, batch, scores=cands.scores, live=live, unlabeled_drop=unlabeled_drop,
                                deadline_exhausted=budget_out, blocked=gate[0] if gate else None, keys=keys, evaluator=evaluator)
        order = decision.order
        ids = cands.ids
        item_labels = {ids[j]: texts for j, texts in decision.labels.items()}
        slate = Slate(
            request_id=request_id, ts=self._clock(), surface=surface.surface, subject_id=subject_id,
            bundle_version=state.version, bundle_hash=state.hash, item_ids=ids[order].tolist(),
            scores=decision.scores_after[order], item_labels=item_labels, model_versions=models, candidate_ids=ids,
            decision=decision, notes=tuple(notes),
            inputs=None if not (self.config.record_inputs and self.sink is not None) else SlateInputs(
                surface=surface.surface, decided_by=surface.surface, bundle_hash=state.hash, bundle_version=state.version,
                request=batch.scalars, rollout={plan.ids[r]: bool(live[r]) for r in plan.partial},
                unlabeled_drop=unlabeled_drop, deadline_exhausted=budget_out, ids=ids, scores=cands.scores,
                columns={path: cands.columns[path] if path in cands.columns else batch.nested_fields[path]
                         for path in surface.recorded_fields if path in cands.columns or batch.nested_fields.get(path) is not None},
                missing=cands.missing, labels={name: (values[name], present[name]) for name in surface.label_names},
                blocked=gate[0] if gate else {}),
        )
        dropped = decision.resolution.dropped if decision.resolution is not None else np.zeros(n, dtype=bool)
        if gate:
            blocked, states, permitted = gate
            slate.breaker_states = states
            if blocked:
                dropped = dropped & (decision.hard_rule != BREAKER)  # the rules' drops, not the breakers'
                slate.notes = (*slate.notes, "item breakers open: " + ", ".join(sorted(set(blocked.values()))))
            self._record_items(permitted, dropped)
        drop_rate = np.count_nonzero(dropped) / n if n else 0.0
        return slate, CallOutcome(kind=kind, duration_s=duration, value=drop_rate)

    def _item_gate(self, cands: Candidates) -> tuple[dict[int, str], dict[int, str], list[tuple[np.ndarray, Permits]]] | None:
        """Per-source (and per-creator) breakers, asked before the rules decide: the candidates
        whose source or creator breaker is open (position -> scope, and that breaker's state; they
        leave the slate first), and for the others the permits ``_record_items`` records their
        drop rates with. None when no such breakers are configured. Only string values have
        breakers."""
        kinds = self.breakers.item_kinds
        if not kinds or not cands.n:
            return None
        blocked: dict[int, str] = {}
        states: dict[int, str] = {}
        permitted: list[tuple[np.ndarray, Permits]] = []
        try:
            for kind in kinds:
                column = cands.columns.get(kind)
                if not isinstance(column, np.ndarray):
                    continue
                if column.dtype.kind != "U":
                    named = np.empty(len(column), dtype=object)
                    named[:] = [v if isinstance(v, str) and v else None for v in column.tolist()]
                    column = named
                code, uniques = factorize(column, with_uniques=True)
                for c, value in enumerate(uniques.tolist()):
                    if not isinstance(value, str) or not value:
                        continue
                    scope = f"{kind}:{value}"
                    members = code == c
                    permits = self.breakers.acquire((scope,))
                    if permits.refused is not None:
                        st = permits.refused_state.value
                        for i in np.flatnonzero(members).tolist():
                            blocked.setdefault(i, scope)
                            states.setdefault(i, st)
                        continue
                    permitted.append((members, permits))
        except BaseException:
            self._release_items(permitted)
            raise
        return blocked, states, permitted

    @staticmethod
    def _release_items(permitted: list[tuple[np.ndarray, Permits]]) -> None:
        for _, permits in permitted:
            permits.release()

    @staticmethod
    def _record_items(permitted: list[tuple[np.ndarray, Permits]], dropped: np.ndarray) -> None:
        """Every permitted source's (creator's) drop rate in this batch is one call for its breaker."""
        for members, permits in permitted:
            total = np.count_nonzero(members)
            permits.record(CallOutcome(kind="drop_rate", value=float(np.count_nonzero(dropped & members)) / float(total)))

    def _served_scopes(self, cands: Candidates, slate: Slate) -> dict[str, list]:
        """The source and creator of each served item, in slate order (for the kinds with breakers)."""
        kinds = self.breakers.item_kinds
        if not kinds or not len(slate.item_ids):
            return {}
        order = np.flatnonzero(slate.rank_after >= 0)
        order = order[np.argsort(slate.rank_after[order], kind="stable")]
        out: dict[str, list] = {}
        for kind in kinds:
            col = cands.columns.get(kind)
            if isinstance(col, np.ndarray):
                out[kind] = col[order].tolist()
        return out
