"""The guard's step of ``assay demo``: decide live candidate batches with the example feed bundle,
show what the rules did and how fast, then take the labeler down and watch the breaker trip,
serve the fallback, probe and recover."""

from __future__ import annotations

import socket
import time
from collections import Counter

import numpy as np

TITLE = "Guard: policy on live slates in milliseconds, with circuit breakers"


def _closed_port() -> int:
    """A loopback port with nothing listening: a label store that is really down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step(ctx) -> None:
    from assay.guard.bench import USERS, candidate_batch, catalog
    from assay.guard.cli import resolve_bundle_path
    from assay.guard.core import Guard, GuardConfig
    from assay.guard.sink import DecisionQueue, JsonlSink
    from assay.policy import load_bundle
    from assay.store.labels import InMemoryLabelStore

    home = ctx.settings.home / "guard"
    home.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(resolve_bundle_path("builtin:feed"))
    ctx.say(f"bundle {bundle.name} {bundle.version} ({bundle.short_hash}): {len(bundle.rules_for('for_you'))} rules on for_you")

    n_items = 5_000 if ctx.quick else 50_000
    labels_path = home / f"labels-{n_items}.parquet"
    ids, store, meta = catalog(n_items)
    if labels_path.exists():
        store = InMemoryLabelStore.from_parquet(labels_path)
        ctx.say(f"labels for {len(store)} items reused from {labels_path}")
    else:
        store.to_parquet(labels_path)
        ctx.say(f"labelled {n_items} items at ingestion -> {labels_path} (the guard never runs a model)")

    decisions_path = home / "decisions.jsonl"
    sink = DecisionQueue(JsonlSink(decisions_path), maxsize=4096)
    guard = Guard(bundle, store, sink=sink, config=GuardConfig(deadline_ms=1000))
    rng = np.random.default_rng(0)
    batch = candidate_batch(ids, meta, 1000, rng)
    for user in USERS[:2]:
        slate = guard.apply({"surface": "for_you", "user": user}, batch)
        fired = Counter(r for d in slate.decisions for r in d.rule_ids)
        ctx.say(f"user aged {user['age']} ({user['region']}): 1,000 candidates -> {len(slate)} served, {slate.dropped} removed; "
                f"top rules: {', '.join(f'{r} x{c}' for r, c in fired.most_common(4))}")
    labelled = [(i, lab) for i, lab in slate.item_labels.items()][:2]
    for item_id, texts in labelled:
        ctx.say(f"  {item_id} is shown with an interstitial: {'; '.join(texts)}")

    # timed without the JSON-lines writer: its thread turns every slate into 1,000 Python records
    # and would share the interpreter lock with the requests being timed (the trace's own sink
    # writes Arrow tables instead; `assay bench guard` measures that cost separately)
    sink.flush(10)
    guard.sink = None
    times = []
    for k in range(30 if ctx.quick else 200):
        t0 = time.perf_counter()
        guard.apply({"surface": "for_you", "user": USERS[k % len(USERS)]}, batch)
        times.append(time.perf_counter() - t0)
    guard.sink = sink
    ctx.say(f"latency per 1,000-candidate request: median {np.median(times) * 1000:.2f} ms, "
            f"p99 {np.percentile(times, 99) * 1000:.2f} ms (these requests are timed without recording their decisions; "
            "`assay bench guard` measures the figures)")

    if ctx.will_run("assay.cli.demo:replay"):
        ctx.say("breakers under a labeller outage are shown on real traffic in the replay next")
    else:
        _outage(ctx, bundle, store, sink, batch)
    sink.flush(10)
    sink.close()
    ctx.say(f"{sink.stats.written_records} decision and event records written to {decisions_path}")
    ctx.state["guard"] = {"bundle_hash": bundle.hash, "decisions": str(decisions_path), "labels": str(labels_path)}


def _outage(ctx, bundle, store, sink, batch) -> None:
    """A labeler outage: the store is a Redis that is not there; the breaker trips, the fallback
    serves, the probes close it again."""
    from assay.guard.bench import USERS
    from assay.guard.breakers import (
        LABEL_STORE_FAILED,
        BreakerConfig,
        BreakerRegistry,
        Fallback,
        ScopePolicy,
    )
    from assay.guard.core import Guard, GuardConfig
    from assay.store.labels import RedisLabelStore

    clock = [0.0]
    registry = BreakerRegistry({"surface": ScopePolicy(
        BreakerConfig(failure_predicate=LABEL_STORE_FAILED, window_size=10, minimum_calls=3, wait_in_open_s=30,
                      permitted_calls_in_half_open=2), Fallback("cached_slate"))}, clock=lambda: clock[0])
    events = []
    registry.add_listener(events.append)
    down = RedisLabelStore(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.02, connect_timeout_s=0.02)
    outage = Guard(bundle, store, breakers=registry, sink=sink, config=GuardConfig(deadline_ms=1000))
    user = {"surface": "for_you", "user": USERS[1]}
    healthy = outage.apply(user, batch)
    outage.labels = down
    fail_closed = [outage.apply(user, batch) for _ in range(3)]
    closed_slates = [s for s in fail_closed if s.fallback is None]
    ctx.say(f"labeler down: {len(closed_slates)} fail-closed slates with {sum(len(s) for s in closed_slates)} items "
            f"(nothing unlabeled is served) until breaker surface:for_you opened: it is {registry.states()['surface:for_you']}")
    fb = outage.apply(user, batch)
    ctx.say(f"while open: fallback {fb.fallback} serves the user's last safe slate ({len(fb)} items, "
            f"same as before: {fb.item_ids == healthy.item_ids}) without calling the store")
    outage.labels = store
    clock[0] += 31  # the open wait ends strictly after 30 s
    probes = [outage.apply(user, batch) for _ in range(2)]
    ctx.say(f"labeler back: half-open probes served {[len(p) for p in probes]} items; breaker is {registry.states()['surface:for_you']}")
    ctx.say("transitions recorded: " + ", ".join(f"{e.payload['from']}->{e.payload['to']}" for e in events))
