"""The stream worker on the machine's real Redis: at-least-once delivery, idempotent redelivery,
and breakers driven through the stream by a labeler outage and a harmful-content surge."""

from __future__ import annotations

import json
import time

import pytest
from guard_helpers import make_candidates, make_labels

from assay.guard import (
    BreakerConfig,
    BreakerRegistry,
    DecisionQueue,
    Fallback,
    Guard,
    GuardConfig,
    ScopePolicy,
)
from assay.guard.breakers import HARMFUL, LABEL_STORE_FAILED
from assay.guard.stream import RedisStreamsTransport, StreamWorker, encode_feedback, encode_request
from assay.store.labels import InMemoryLabelStore, RedisLabelStore

pytestmark = pytest.mark.redis


def request(rid: str, user: str = "u0") -> dict:
    return {"request_id": rid, "surface": "for_you", "user": {"id": user, "age": 30}, "deadline_ms": 60_000}


def drain(worker: StreamWorker, expect: int) -> None:
    handled = worker.run(max_messages=expect, idle_exit_s=2.0)
    assert handled == expect, (handled, worker.stats)


def in_memory_guard(bundle, cands):
    store = InMemoryLabelStore()
    store.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    return Guard(bundle, store)


def test_worker_writes_slates_and_acks(redis_url, test_bundle):
    cands = make_candidates(60)
    guard = in_memory_guard(test_bundle, cands)
    t = RedisStreamsTransport(redis_url, input_stream="t:in", output_stream="t:out", consumer="w1")
    for k in range(5):
        t.publish(encode_request(request(f"r{k}", f"u{k}"), cands))
    worker = StreamWorker(guard, t, count=2, block_ms=20)
    drain(worker, 5)
    out = t.read_output()
    assert [s["request_id"] for s in out] == [f"r{k}" for k in range(5)]
    expected = guard.apply(request("again", "u0"), cands)
    assert [i["id"] for i in out[0]["items"]] == expected.item_ids
    assert out[0]["bundle_hash"] == test_bundle.hash
    assert t.pending() == 0
    t.close()


def test_duplicates_bad_messages_and_redelivery_after_a_crash(redis_url, test_bundle):
    cands = make_candidates(20)
    guard = in_memory_guard(test_bundle, cands)
    t = RedisStreamsTransport(redis_url, input_stream="t:in", output_stream="t:out", consumer="live", claim_idle_ms=50)
    t.publish(encode_request(request("dup"), cands))
    t.publish(encode_request(request("dup"), cands))  # the producer retried
    t.publish(b"{not json")
    t.publish(encode_request({"surface": "for_you"}, cands))  # no request id
    t.publish(encode_request({**request("bad-batch"), "surface": "nowhere"}, cands))
    worker = StreamWorker(guard, t, block_ms=20)
    drain(worker, 5)
    out = t.read_output()
    assert [s["request_id"] for s in out if "items" in s] == ["dup"]
    errors = [s["error"] for s in out if "error" in s]
    assert len(errors) == 3
    assert any("not JSON" in e or "unexpected" in e.lower() for e in errors)
    assert any("request_id must be a non-empty string" in e for e in errors)
    assert any("unknown surface 'nowhere'" in e for e in errors)
    assert worker.stats.duplicates == 1 and worker.stats.bad_input == 3

    # a worker that reads and dies before acknowledging: its messages stay pending ...
    dead = RedisStreamsTransport(redis_url, input_stream="t:in", output_stream="t:out", consumer="dead")
    for k in range(3):
        t.publish(encode_request(request(f"lost{k}"), cands))
    assert len(dead.read(10, 20)) == 3
    assert t.pending() == 3
    time.sleep(0.1)  # past claim_idle_ms
    # ... and a live worker claims and finishes them; a second redelivery is only acknowledged
    drain(worker, 3)
    assert t.pending() == 0
    done = [s["request_id"] for s in t.read_output() if "items" in s]
    assert done == ["dup", "lost0", "lost1", "lost2"]
    t.publish(encode_request(request("lost1"), cands))
    drain(worker, 1)
    assert [s["request_id"] for s in t.read_output() if "items" in s].count("lost1") == 1
    t.close()
    dead.close()


class FailingWrites(RedisStreamsTransport):
    """The real transport, whose batched slate write fails ``fail`` times (Redis gone mid-batch)."""

    fail = 1

    def write_and_ack_many(self, writes, acks=()):
        if self.fail:
            self.fail -= 1
            from assay.errors import Unavailable

            raise Unavailable("Redis went away mid-batch")
        super().write_and_ack_many(writes, acks)


def test_a_failed_batch_write_leaves_the_whole_read_pending_and_feedback_is_not_replayed(redis_url, test_bundle):
    cands = make_candidates(20)
    guard = in_memory_guard(test_bundle, cands)
    seen = []
    guard.report_harmful = lambda **kw: seen.append(kw["item_id"])  # count feedback deliveries
    t = FailingWrites(redis_url, input_stream="f:in", output_stream="f:out", consumer="w1", claim_idle_ms=50)
    t.publish(encode_request(request("f0"), cands))
    t.publish(encode_feedback(item_id="item-3", source="ugc:a"))
    t.publish(encode_request(request("f1"), cands))
    t.publish(encode_request(request("f0"), cands))  # a retried duplicate in the same read
    worker = StreamWorker(guard, t, count=10, block_ms=20)
    assert worker.run_once() == 4
    assert worker.stats.errors == 1 and t.read_output() == [] and t.pending() == 3  # only the feedback was acked
    assert seen == ["item-3"]
    time.sleep(0.1)  # past claim_idle_ms: the pending three are claimed and decided once each
    drain(worker, 3)
    assert [s["request_id"] for s in t.read_output()] == ["f0", "f1"]
    assert t.pending() == 0 and worker.stats.duplicates == 1 and worker.stats.processed == 2
    assert seen == ["item-3"]
    t.close()


def test_breakers_through_the_stream_outage_and_harmful_surge(redis_url, fault_proxy, test_bundle, clock):
    cands = make_candidates(60, seed=2)
    store = RedisLabelStore(fault_proxy.url, prefix="scn:labels", timeout_s=0.5)
    store.put(list(cands["id"]), make_labels(cands["id"], seed=2), "clf-1")
    registry = BreakerRegistry({
        "surface": ScopePolicy(BreakerConfig(failure_predicate=LABEL_STORE_FAILED, window_size=10, minimum_calls=4,
                                             failure_rate_threshold=50, wait_in_open_s=30, permitted_calls_in_half_open=2,
                                             max_wait_in_half_open_s=120), Fallback("cached_slate")),
        "source": ScopePolicy(BreakerConfig(failure_predicate=HARMFUL, window_size=100, minimum_calls=100, severe_threshold=3,
                                            severe_window_s=600, wait_in_open_s=60, permitted_calls_in_half_open=2),
                              Fallback("drop")),
    }, clock=clock)
    records: list = []
    sink = DecisionQueue(records.extend, maxsize=10_000)
    guard = Guard(test_bundle, store, breakers=registry, sink=sink, config=GuardConfig(deadline_ms=60_000))
    t = RedisStreamsTransport(redis_url, input_stream="scn:in", output_stream="scn:out")
    worker = StreamWorker(guard, t, block_ms=20)

    def run(*messages: bytes) -> list[dict]:
        before = len(t.read_output())
        for m in messages:
            t.publish(m)
        drain(worker, len(messages))
        return t.read_output()[before:]

    # healthy traffic: every subject gets a slate, which becomes its cached safe slate
    healthy = run(*(encode_request(request(f"ok{k}", f"u{k}"), cands) for k in range(3)))
    assert all(s["items"] and s["breaker_state"] == "closed" for s in healthy)
    u0_items = [i["id"] for i in healthy[0]["items"]]

    # the labeler goes down: fail-closed slates until the surface breaker trips
    fault_proxy.set_mode("down")
    # (3 healthy calls + 3 failures = 50% of 6 >= 50%, past the minimum of 4 calls)
    outage = run(*(encode_request(request(f"down{k}"), cands) for k in range(3)))
    assert all(s["items"] == [] and s["fallback"] is None for s in outage), [(s["items"][:1], s["fallback"], s.get("notes")) for s in outage]
    assert registry.states()["surface:for_you"] == "open"
    # while open the guard does not touch the label store and serves the subject's cached slate
    accepted = fault_proxy.accepted
    fallback = run(encode_request(request("fb1"), cands))[0]
    assert fault_proxy.accepted == accepted
    assert fallback["fallback"] == "cached_slate" and fallback["breaker_state"] == "open"
    assert [i["id"] for i in fallback["items"]] == u0_items
    other = run(encode_request(request("fb2", "never-seen"), cands))[0]
    assert other["items"] == [] and other["fallback"] == "cached_slate"  # nothing cached for them: serve nothing

    # the labeler recovers; after the wait the breaker probes, then closes
    fault_proxy.set_mode("up")
    clock.advance(30.5)  # strictly more than the 30 s wait
    probes = run(encode_request(request("probe1"), cands), encode_request(request("probe2"), cands))
    assert [s["breaker_state"] for s in probes] == ["half_open", "half_open"]
    assert all(s["items"] for s in probes) and probes[0]["items"] == healthy[0]["items"]
    assert registry.states()["surface:for_you"] == "closed"
    assert run(encode_request(request("after"), cands))[0]["breaker_state"] == "closed"

    # a harmful-content surge from one source: three severe reports trip that source's breaker
    ugc = [i for i, s in zip(cands["id"], cands["source"], strict=True) if s == "ugc:a"]
    served_before = [i["id"] for i in run(encode_request(request("pre-surge"), cands))[0]["items"]]
    assert set(served_before) & set(ugc)
    # (the reports name the source only: one naming the surface too would count against it as well)
    run(*(encode_feedback(item_id=ugc[k], source="ugc:a", severe=True) for k in range(3)))
    assert worker.stats.feedback == 3
    assert registry.states()["source:ugc:a"] == "open"
    surge = run(encode_request(request("surge", "u1"), cands))[0]
    served = [i["id"] for i in surge["items"]]
    assert served and not set(served) & set(ugc)
    # half-open probing lets the source back in; two clean probes close it
    clock.advance(60.5)
    probes = run(encode_request(request("sprobe1", "u1"), cands), encode_request(request("sprobe2", "u1"), cands))
    assert all(set(i["id"] for i in s["items"]) & set(ugc) for s in probes)
    assert registry.states()["source:ugc:a"] == "closed"

    # every transition was written as a record, with the decisions
    assert sink.flush(10)
    transitions = [(r.subject, r.payload["from"], r.payload["to"]) for r in records if getattr(r, "kind", None) == "breaker_transition"]
    assert transitions == [
        ("surface:for_you", "closed", "open"), ("surface:for_you", "open", "half_open"), ("surface:for_you", "half_open", "closed"),
        ("source:ugc:a", "closed", "open"), ("source:ugc:a", "open", "half_open"), ("source:ugc:a", "half_open", "closed"),
    ]
    decisions = [r for r in records if hasattr(r, "item_id")]
    surge_drops = [d for d in decisions if d.request_id == "surge" and d.item_id in ugc]
    assert surge_drops and all(d.action in ("drop", "cap") and d.rank_after == -1 for d in surge_drops)
    assert any(d.rule_ids == ("breaker:source:ugc:a",) and d.breaker_state == "open" for d in surge_drops)
    fb_decisions = [d for d in decisions if d.request_id == "fb1"]
    assert {d.action for d in fb_decisions if d.rank_before >= 0} == {"drop"}
    assert [d.item_id for d in fb_decisions if d.rank_before == -1] == u0_items
    sink.close()
    t.close()
    store.close()


def test_assay_guard_worker_cli(redis_url, tmp_path, bundle_path):
    import subprocess
    import sys

    cands = make_candidates(15)
    store = InMemoryLabelStore()
    store.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    labels = store.to_parquet(tmp_path / "labels.parquet")
    t = RedisStreamsTransport(redis_url, input_stream="cli:in", output_stream="cli:out", group="cli")
    for k in range(3):
        t.publish(encode_request(request(f"c{k}", f"u{k}"), cands))
    proc = subprocess.run([sys.executable, "-m", "assay.cli.main", "guard", "worker", "--redis", redis_url, "--input", "cli:in",
                           "--output", "cli:out", "--group", "cli", "--bundle", str(bundle_path), "--labels", str(labels),
                           "--max-messages", "3", "--idle-exit", "20", "--decisions-out", str(tmp_path / "d.jsonl")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert [s["request_id"] for s in t.read_output()] == ["c0", "c1", "c2"]
    written = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len([r for r in written if "item_id" in r]) == 45  # and each request's inputs, for explanations
    assert sorted(r["subject"] for r in written if r.get("kind") == "guard.slate_inputs") == ["c0", "c1", "c2"]
    assert t.pending() == 0
    bad = subprocess.run([sys.executable, "-m", "assay.cli.main", "guard", "worker", "--bundle", str(bundle_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "exactly one of --redis" in bad.stderr
    t.close()
