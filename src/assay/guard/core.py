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

This module is the guard itself (``Guard.apply``, the decision and its deadline); its other jobs
are modules of their own, whose names stay importable from here: the bundle compiled for serving
(``compiled``), reading a request's labels and building its policy batch (``inputs``; the batch
is the one place inputs are typed), the breakers and fallbacks around a decision (``gating``) and
the slate it returns (``slate``).
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
from assay.guard.breakers import BreakerRegistry, CallOutcome, Fallback, State
from assay.guard.candidates import Candidates
from assay.guard.compiled import (
    CompiledBundle,
    CompiledSurface,
    _warm_imports,
    compile_bundle,
    freeze_startup_heap,
)
from assay.guard.gating import MAX_NAME_CHARS, Gating
from assay.guard.inputs import Inputs
from assay.guard.slate import Slate
from assay.records import Event

# the guard's names, and those of the modules it was split into (compiled, slate, inputs,
# gating), importable from here as before
__all__ = ["CompiledBundle", "CompiledSurface", "Guard", "GuardConfig", "Slate", "compile_bundle",
           "freeze_startup_heap"]


# a deadline budget longer than a minute is no deadline: 1e300 was accepted, 10**400 a 500 (float overflow)
MAX_DEADLINE_MS = 60_000


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
        if isinstance(self.deadline_ms, bool) or not isinstance(self.deadline_ms, (int, float)) \
                or not 0 < self.deadline_ms <= MAX_DEADLINE_MS:
            raise BadInput(f"deadline_ms must be a number above 0 and at most {MAX_DEADLINE_MS:,}, got {self.deadline_ms!r}")


def _request_name(value: Any, field: str) -> str:
    """An id or name from the request: a string or a whole number (as its decimal), at most
    ``MAX_NAME_CHARS``; "" when absent. Anything else was stringified (a dict became its Python
    repr in every decision record) and any length was echoed and stored."""
    if value is None or value == "":
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadInput(f"request: {field!r} must be a string, got {type(value).__name__}")
    if isinstance(value, int) and value.bit_length() > 64:
        raise BadInput(f"request: {field!r} must be a string, got a number beyond 64 bits")
    text = str(value)
    if len(text) > MAX_NAME_CHARS:
        raise BadInput(f"request: {field!r} has {len(text)} characters; at most {MAX_NAME_CHARS}")
    return text


class Guard(Inputs, Gating):
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
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, (int, float)) \
                or not 0 < deadline_ms <= MAX_DEADLINE_MS:
            shown = (f"{float(deadline_ms):g}" if abs(deadline_ms) < 1e308 else "a number past 1e308") \
                if isinstance(deadline_ms, (int, float)) and not isinstance(deadline_ms, bool) else repr(deadline_ms)[:40]
            raise BadInput(f"request: 'deadline_ms' must be a number above 0 and at most {MAX_DEADLINE_MS:,} "
                           f"(a minute), got {shown}")
        deadline = started + float(deadline_ms) / 1000.0
        user = request.get("user") if isinstance(request.get("user"), dict) else {}
        subject_id = _request_name(request.get("subject_id") or user.get("id"), "subject_id" if request.get("subject_id") else "user.id")
        request_id = _request_name(request.get("request_id"), "request_id") or uuid.uuid4().hex
        model_version = _request_name(request.get("model_version"), "model_version") or None
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


