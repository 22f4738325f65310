"""Traced decisions, decided again: the check behind ``explain_agreement``.

:func:`traced_mix` serves random requests through a guard that writes to a real trace log, in a
mix meant to exercise every slate step an explanation must reproduce: rules on a partial
rollout and in shadow, caps, labels missing for some items and all of others (fail-closed drops
and the unlabeled pre-drop), open source breakers, a surface breaker's fallbacks (cached slate,
stricter rules, drop), and requests whose label read outlives their deadline. Then every traced
decision is explained again from the inputs recorded with its request
(``assay.explain.guard.check_trace``), and the share that reproduce the served action, rules and
rank is the agreement.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# the example feed bundle with three of its rules on a partial rollout, for this check
ROLLOUTS = {"teen-violence-drop": 40, "clickbait-demote": 60, "stale-news-demote": 25}


def rollout_bundle(folder: Path) -> Any:
    """The example feed bundle, with :data:`ROLLOUTS` set."""
    import re

    from assay.guard.cli import resolve_bundle_path
    from assay.policy import load_bundle

    text = resolve_bundle_path("builtin:feed").read_text()
    for rule_id, percent in ROLLOUTS.items():
        text, n = re.subn(rf"(  - id: {re.escape(rule_id)}\n)", rf"\1    rollout: {percent}\n", text)
        if n != 1:
            raise RuntimeError(f"rule {rule_id} not found in the feed bundle")
    path = folder / "feed-rollout.yaml"
    path.write_text(text)
    return load_bundle(path)


class _SlowSometimes:
    """A label store that outlives the request's deadline when told to (a real sleep)."""

    def __init__(self, store: Any):
        self.store = store
        self.delay_s = 0.0

    def get(self, item_ids, label_names, *, timeout_s=None):
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.store.get(item_ids, label_names, timeout_s=timeout_s)


def traced_mix(n_requests: int = 130, candidates: int = 100, seed: int = 0, folder: Path | None = None) -> dict[str, Any]:
    """Serve ``n_requests`` random requests into a trace log, then re-decide every decision.
    Returns ``check_trace``'s counts plus how many decisions each slate step produced."""
    from assay.explain.guard import check_trace
    from assay.guard.bench import USERS, candidate_batch, catalog
    from assay.guard.breakers import BreakerConfig, BreakerRegistry, Fallback, ScopePolicy
    from assay.guard.core import Guard, GuardConfig
    from assay.guard.sink import DecisionQueue, TraceSink
    from assay.trace import TraceLog

    with tempfile.TemporaryDirectory(prefix="assay-replay-") as tmp:
        work = Path(folder or tmp)
        bundle = rollout_bundle(work)
        ids, store, meta = catalog(4000, seed=seed)
        rng = np.random.default_rng(seed)
        # some labels absent for some items (fail-closed drops), every label absent for others (unlabeled)
        missing_ids = rng.choice(ids, 200, replace=False).tolist()
        store.put(missing_ids[:100], {"mature": np.full(100, np.nan), "spam": np.full(100, np.nan)}, "partial")
        store.put(missing_ids[100:], {n: np.full(100, np.nan) for n in store.label_names}, "none")
        slow = _SlowSometimes(store)
        log = TraceLog.open(work / "trace", checkpoint_every=None, fsync="off")
        sink = DecisionQueue(TraceSink(log), maxsize=100_000, when_full="backpressure", put_timeout_s=5.0)
        registry = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate")),
                                    "source": ScopePolicy(BreakerConfig(), Fallback("drop")),
                                    "creator": ScopePolicy(BreakerConfig(), Fallback("drop"))})
        fallbacks = [Fallback("cached_slate"), Fallback("stricter_rules", surface="for_you"), Fallback("drop")]
        config = GuardConfig(deadline_ms=2_000, surface_modes={"search": "fail_open"}, fallbacks={}, extra_surfaces=("search",))
        guard = Guard(bundle, slow, config=config, breakers=registry, sink=sink)
        for surface in ("for_you", "search"):  # what a cached_slate fallback serves a subject with no slate of its own
            guard.set_safe_slate(surface, ids[:10].tolist())
        try:
            for k in range(n_requests):
                user = dict(USERS[int(rng.integers(len(USERS)))], id=f"user-{int(rng.integers(60))}")
                surface = "for_you" if rng.random() < 0.7 else "search"
                request = {"request_id": f"replay-{seed}-{k}", "surface": surface, "user": user, "deadline_ms": 2_000}
                batch = candidate_batch(ids, meta, candidates, rng)
                kind = rng.random()
                if kind < 0.06:  # the label read outlives the deadline
                    slow.delay_s, request["deadline_ms"] = 0.03, 5
                elif kind < 0.16:  # an open source breaker, and a creator's
                    registry.get(f"source:{rng.choice(['ugc:creators', 'ads:network', 'news:wire'])}").force_open("replay")
                    registry.get(f"creator:{meta['creator'][int(rng.integers(len(meta['creator'])))]}").force_open("replay")
                elif kind < 0.26:  # the surface's breaker: a fallback serves
                    config.fallbacks = {f"surface:{surface}": fallbacks[int(rng.integers(len(fallbacks)))]}
                    registry.get(f"surface:{surface}").force_open("replay")
                guard.apply(request, batch)
                slow.delay_s = 0.0
                for scope in list(registry.states()):
                    registry.get(scope).reset()
            if not sink.flush(120):
                raise RuntimeError("the decision queue did not drain")
        finally:
            sink.close()
        log = TraceLog.open(work / "trace", read_only=True)
        try:
            report = check_trace(log, bundle)
            rows = log.table(["type", "rule_ids", "shadow_rule_ids", "action", "reasons"]).to_pylist()
        finally:
            log.close()
    decisions = [r for r in rows if r["type"] == "decision"]
    names = [r["rule_ids"] or [] for r in decisions]
    report["mix"] = {
        "rollout_rules_acting": sum(any(n in ROLLOUTS for n in ns) for ns in names),
        "rollout_rules_shadowed": sum(any(n in ROLLOUTS for n in (r["shadow_rule_ids"] or [])) for r in decisions),
        "capped": sum(r["action"] == "cap" for r in decisions),
        "fail_closed": sum(any(x.startswith("fail-closed") for x in (r["reasons"] or [])) for r in decisions),
        "unlabeled": sum("guard:unlabeled" in ns for ns in names),
        "deadline": sum("guard:deadline" in ns for ns in names),
        "source_breaker": sum(any(n.startswith(("breaker:source:", "breaker:creator:")) for n in ns) for ns in names),
        "surface_breaker": sum(any(n.startswith("breaker:surface:") for n in ns) for ns in names),
        "fallback_items": sum(any(n.startswith("fallback:") for n in ns) for ns in names),
    }
    return report
