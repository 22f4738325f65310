"""Live replay through the guard's stream worker on the real Redis with an injected harmful surge:
the monitor reads the worker's output stream, the drop-surge alert fires, the surface breaker is
forced open, the fallback serves, and the trace shows alert -> mitigation -> decisions."""

from __future__ import annotations

import numpy as np
import pytest

from assay.guard import (
    BreakerConfig,
    BreakerRegistry,
    DecisionQueue,
    Fallback,
    Guard,
    GuardConfig,
    ScopePolicy,
)
from assay.guard.stream import RedisStreamsTransport, StreamWorker, encode_request
from assay.monitor.engine import Monitor, chain, trace_records
from assay.monitor.loop import RedisSlateSource, WatchLoop
from assay.monitor.mitigations import Mitigator
from assay.monitor.windows import TumblingWindows
from assay.policy import load_bundle
from assay.store.labels import InMemoryLabelStore
from assay.trace.log import TraceLog

pytestmark = pytest.mark.redis

BUNDLE = """\
bundle: live-replay
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

SAFE = [f"safe-{i}" for i in range(10)]
HARMFUL = [f"bad-{i}" for i in range(40)]


def candidates(ids: list[str], seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"id": np.array(ids, dtype=object), "score": rng.random(len(ids))}


def request(rid: str, user: str) -> dict:
    return {"request_id": rid, "surface": "for_you", "user": {"id": user}, "deadline_ms": 60_000}


def test_harmful_surge_trips_the_breaker_and_the_trace_shows_the_chain(redis_url, tmp_path):
    bundle_path = tmp_path / "bundle.yaml"
    bundle_path.write_text(BUNDLE)
    bundle = load_bundle(bundle_path)
    labels = InMemoryLabelStore()
    labels.put(SAFE + HARMFUL, {"toxic": [0.05] * len(SAFE) + [0.97] * len(HARMFUL)}, "clf-1")
    trace = TraceLog.open(tmp_path / "trace", checkpoint_every=None)
    sink = DecisionQueue(trace.append, maxsize=10_000)
    breakers = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate"))})
    guard = Guard(bundle, labels, breakers=breakers, sink=sink, config=GuardConfig(deadline_ms=60_000))
    transport = RedisStreamsTransport(redis_url, input_stream="live:in", output_stream="live:out")
    worker = StreamWorker(guard, transport, block_ms=20, decisions_in_output=True)
    monitor = Monitor(bundle, mitigator=Mitigator(breakers=breakers), recorder=trace.append)
    loop = WatchLoop(monitor, RedisSlateSource(redis_url, "live:out"), TumblingWindows(3600, max_n=50), poll_s=0.01)

    def replay(messages: list[bytes]) -> list[dict]:
        before = len(transport.read_output())
        for m in messages:
            transport.publish(m)
        assert worker.run(max_messages=len(messages), idle_exit_s=2.0) == len(messages)
        assert sink.flush()
        return transport.read_output()[before:]

    try:
        # normal traffic: nothing dropped, no alert; each user's slate is cached as safe
        healthy = replay([encode_request(request(f"ok{k}", f"u{k}"), candidates(SAFE, k)) for k in range(10)])
        assert all(s.get("dropped") == 0 and s["breaker_state"] == "closed" for s in healthy), healthy[:1]
        assert loop.step() == []
        assert loop.stats.windows == 2 and loop.stats.alerts == 0

        # the surge: 8 of every 10 candidates are harmful and get dropped
        surge = replay([encode_request(request(f"surge{k}", f"u{k}"), candidates(SAFE[:2] + HARMFUL[k * 4 : k * 4 + 8], 100 + k))
                        for k in range(5)])
        assert all(s["dropped"] == 8 for s in surge)
        firings = loop.step()
        assert [f.alert_id for f in firings] == ["drop-surge"]
        assert firings[0].window.rate("drop") == pytest.approx(0.8)
        assert breakers.states()["surface:for_you"] == "forced_open"

        # while forced open the fallback serves each user's last safe slate (the guard caches the
        # last fully labelled slate: for these users that is their surge slate, harmful items dropped)
        after = replay([encode_request(request(f"after{k}", f"u{k}"), candidates(SAFE[:2] + HARMFUL[:8], 200 + k)) for k in range(3)])
        for k, slate in enumerate(after):
            assert slate["fallback"] == "cached_slate" and slate["breaker_state"] == "forced_open"
            assert [i["id"] for i in slate["items"]] == [i["id"] for i in surge[k]["items"]]
            assert not {i["id"] for i in slate["items"]} & set(HARMFUL)
        loop.stop("test done")
        stats = loop.run(max_steps=1, install_signals=False)
        assert stats.stopped_by == "test done"

        # the trace: alert -> mitigation -> the fallback decisions, in that order
        assert sink.flush()
        records = trace_records(trace)
        c = chain(records, firings[0].key)
        assert c["alert"]["payload"]["alert"] == "drop-surge"
        assert c["alert"]["payload"]["window"]["drop_rate"] == pytest.approx(0.8)
        assert [m["payload"]["name"] for m in c["mitigations"]] == ["trip_breaker"]
        assert c["mitigations"][0]["payload"]["to"] == "forced_open"
        fallback_decisions = [d for d in c["decisions"] if d["request_id"].startswith("after")]
        # every candidate of the 3 requests (dropped by the breaker) plus the fallback items served
        assert len(fallback_decisions) == 30 + sum(len(s["items"]) for s in after)
        # every decision, dropped candidate or fallback item served, carries the breaker's real state
        assert {d["breaker_state"] for d in fallback_decisions} == {"forced_open"}
        assert sum(d["action"] == "drop" for d in fallback_decisions) == 30
        served = [d for d in fallback_decisions if d["action"] != "drop"]
        assert served and {d["breaker_state"] for d in served} == {"forced_open"}
        idx = {id(r): i for i, r in enumerate(records)}
        assert idx[id(c["alert"])] < idx[id(c["mitigations"][0])] < min(idx[id(d)] for d in fallback_decisions)
        transitions = [r for r in records if r.get("kind") == "breaker_transition"]
        assert transitions and transitions[-1]["payload"]["to"] == "forced_open"
    finally:
        sink.close()
        transport.close()
        trace.close()
