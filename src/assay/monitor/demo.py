"""Demo step: a live feed under watch. Normal traffic, then a surge of harmful candidates; the
monitor's drop-surge alert fires, trips the surface breaker, the fallback serves, and the trace
records alert -> mitigation -> decisions. Then a drift check on the ranker's score stream.

In the full story the replay step tells the surge on real MovieLens traffic just before this
step, so the synthetic surge is told only when this step runs without it (``--only monitor``)."""

from __future__ import annotations

from typing import Any

import numpy as np

TITLE = "Monitor: alerts that trip the breaker; drift on the score stream"

BUNDLE = """\
bundle: demo-monitor
version: "1"
attributes:
  rules:
    item.labels.toxic: double
  alerts:
    window.n: int
    window.drop_rate: double
rules:
  - id: toxic-drop
    surface: [for_you]
    when: item.labels.toxic >= 0.8
    action: drop
    reason: toxic content is not served
alerts:
  - id: drop-surge
    when: window.n >= 40 && window.drop_rate > 0.4
    severity: page
    reason: harmful candidates are flooding the feed
    then: ['trip_breaker("for_you")']
"""


def step(ctx: Any) -> None:
    replayed = ctx.will_run("assay.cli.demo:replay") if hasattr(ctx, "will_run") else False
    if not replayed:  # the replay, when it runs, tells the surge -> alert -> trip story on real traffic
        _surge(ctx)
    _drift(ctx)


def _surge(ctx: Any) -> None:
    from assay.guard import (
        BreakerConfig,
        BreakerRegistry,
        DecisionQueue,
        Fallback,
        Guard,
        GuardConfig,
        ScopePolicy,
    )
    from assay.monitor.engine import Monitor, chain, trace_records
    from assay.monitor.loop import InboxSource, WatchLoop
    from assay.monitor.mitigations import Mitigator
    from assay.monitor.windows import TumblingWindows
    from assay.policy import load_bundle
    from assay.store.labels import InMemoryLabelStore
    from assay.trace.log import TraceLog

    path = ctx.settings.path("monitor", "demo-bundle.yaml")
    path.write_text(BUNDLE)
    bundle = load_bundle(path)
    safe = [f"film-{i}" for i in range(10)]
    harmful = [f"spam-{i}" for i in range(40)]
    labels = InMemoryLabelStore()
    labels.put(safe + harmful, {"toxic": [0.05] * 10 + [0.97] * 40}, "demo-labeler")
    trace = TraceLog.open(ctx.settings.path("monitor", "trace", "x").parent, checkpoint_every=None)
    inbox = InboxSource()

    def sink_records(records: list) -> None:
        trace.append(records)
        inbox.extend([r for r in records if hasattr(r, "action")])

    sink = DecisionQueue(sink_records, maxsize=10_000)
    breakers = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate"))})
    guard = Guard(bundle, labels, breakers=breakers, sink=sink, config=GuardConfig(deadline_ms=60_000))
    monitor = Monitor(bundle, mitigator=Mitigator(breakers=breakers), recorder=trace.append)
    loop = WatchLoop(monitor, inbox, TumblingWindows(3600, max_n=50), poll_s=0.01)
    rng = np.random.default_rng(0)

    def serve(prefix: str, n: int, ids_for) -> list:
        slates = [guard.apply({"request_id": f"{prefix}{k}", "surface": "for_you", "user": {"id": f"user-{k}"},
                               "deadline_ms": 60_000}, {"id": np.array(ids_for(k), dtype=object), "score": rng.random(10)})
                  for k in range(n)]
        sink.flush()
        return slates

    try:
        serve("calm", 10, lambda k: safe)
        loop.step()
        ctx.say(f"normal traffic: {loop.stats.records} decisions in {loop.stats.windows} windows, no alert")
        serve("surge", 5, lambda k: safe[:2] + harmful[k * 8 : k * 8 + 8])
        firings = loop.step()
        for f in firings:
            ctx.say(f"surge: alert {f.alert_id} ({f.severity}) at drop rate {f.window.rate('drop'):.0%} -> "
                    + ", ".join(f"{m.payload['call']} ({m.payload.get('to', m.payload.get('error'))})" for m in f.mitigations))
        after = serve("after", 3, lambda k: safe[:2] + harmful[:8])
        ctx.say(f"while the breaker is {after[0].breaker_state}, the fallback serves each user's last safe slate "
                f"({after[0].fallback}: {len(after[0].item_ids)} items, none harmful)")
        sink.flush()
        if firings:
            c = chain(trace_records(trace), firings[0].key)
            ctx.say(f"trace chain: alert {c['alert']['payload']['alert']} -> {len(c['mitigations'])} mitigation(s) -> "
                    f"{len(c['decisions'])} decisions under the open breaker")
            ctx.state["monitor_alert_key"] = firings[0].key
    finally:
        sink.close()
        trace.close()



def _drift(ctx: Any) -> None:
    """Drift on the ranker's score stream: last week's scores vs today's, with effect sizes."""
    from assay.monitor.drift import ReferenceProfile, drift_report

    rng = np.random.default_rng(1)
    n = 20_000 if ctx.quick else 1_000_000
    ref = {"score": rng.beta(2, 5, n), "latency_ms": rng.gamma(2.0, 5.0, n)}
    cur = {"score": rng.beta(2.6, 5, n), "latency_ms": rng.gamma(2.0, 5.0, n)}
    report = drift_report({k: ReferenceProfile.numeric(k, v) for k, v in ref.items()}, cur)
    for f in report.features:
        ctx.say(f"drift {f.feature}: PSI {f.psi:.3f}, KS {f.ks:.3f} (BH-adjusted p {f.ks_p_adjusted:.2g}), "
                f"Wasserstein {f.wasserstein_std:.3f} std -> {'DRIFTED: ' + '; '.join(f.reasons) if f.drifted else 'stable'}")
