"""The circuit breakers around a decision: the surface's and the ranker's gate a whole request
(and pick its fallback: a cached safe slate, safe sources, or drop all), a source's removes
its candidates, and what was served is reported back to them. ``Guard`` takes these methods
from :class:`Gating`. Split out of ``core.py`` (issue 22).
"""

from __future__ import annotations

import numpy as np

from assay.errors import BadInput
from assay.guard import candidates as cand_mod
from assay.guard.breakers import CallOutcome, Fallback, Permits, State
from assay.guard.candidates import MAX_NAME_CHARS, Candidates
from assay.guard.compiled import CompiledBundle, CompiledSurface
from assay.guard.slate import Slate
from assay.policy.actions import BREAKER
from assay.policy.record import SlateInputs
from assay.policy.slate import breaker_slate, decide_slate, factorize


class Gating:
    """Breakers, fallbacks and reports of harm (mixed into ``Guard``)."""

    # -- feedback ------------------------------------------------------------------------------
    def report_harmful(self, *, item_id: str, source: str | None = None, model_version: str | None = None,
                       surface: str | None = None, creator: str | None = None, severe: bool = False) -> dict[str, str]:
        """A served candidate was later found harmful: a failure against the breaker of every scope
        named (whatever that breaker's failure predicate counts), never a success; ``severe`` also
        counts toward the absolute-count trip. Returns the state of each breaker reached."""
        if not isinstance(item_id, str) or not item_id:
            raise BadInput("harm report: item_id must be a non-empty string")
        if len(item_id) > MAX_NAME_CHARS:
            raise BadInput(f"harm report: item_id has {len(item_id)} characters; at most {MAX_NAME_CHARS}")
        if not isinstance(severe, bool):
            raise BadInput(f"harm report: severe must be true or false, got {severe!r}")
        scopes = []
        for kind, field, name in (("source", "source", source), ("model", "model_version", model_version),
                                  ("surface", "surface", surface), ("creator", "creator", creator)):
            if name is None:
                continue
            if not isinstance(name, str) or not name:
                raise BadInput(f"harm report: {field} must be a non-empty string, got {name!r}")
            if len(name) > MAX_NAME_CHARS:
                raise BadInput(f"harm report: {field} has {len(name)} characters; at most {MAX_NAME_CHARS}")
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
