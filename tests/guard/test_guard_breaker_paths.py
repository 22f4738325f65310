"""The guard's breakers end to end (issue 26): safety signals count against the breaker they
name, for every signal and scope; every permit is recorded or given back on every path through
Guard.apply; fallbacks never serve an item of an open source, creator or surface; the number of
breakers stays bounded under a flood of names."""

from __future__ import annotations

import time

import numpy as np
import pytest
from guard_helpers import make_candidates, make_labels

from assay.errors import BadInput
from assay.guard import (
    BreakerConfig,
    BreakerRegistry,
    Fallback,
    Guard,
    GuardConfig,
    ScopePolicy,
    State,
)
from assay.guard.breakers import LABEL_STORE_FAILED
from assay.monitor.mitigations import Mitigator
from assay.store.labels import InMemoryLabelStore

ADULT = {"request_id": "r1", "surface": "for_you", "user": {"id": "u1", "age": 30}, "deadline_ms": 60_000}
# one name of each scope kind the guard knows, and the request or report field that names it
SCOPES = {"surface": ("for_you", "surface"), "model": ("ranker-v7", "model_version"), "source": ("ugc:a", "source"),
          "creator": ("creator-1", "creator")}


def store_for(cands) -> InMemoryLabelStore:
    store = InMemoryLabelStore()
    store.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    return store


def guard_for(bundle, cands, clock, policies: dict, **kw) -> tuple[Guard, BreakerRegistry]:
    reg = BreakerRegistry(policies, clock=clock)
    return Guard(bundle, store_for(cands), breakers=reg, **kw), reg


def request(**extra) -> dict:
    return {**ADULT, "model_version": "ranker-v7", **extra}


def served_scope(slate, cands, kind: str, name: str) -> list[str]:
    """The served items that belong to ``kind:name``."""
    of = dict(zip(cands["id"], cands[kind], strict=True))
    return [i for i in slate.item_ids if of.get(i) == name]


def assert_scope_blocked(g: Guard, cands, kind: str, name: str) -> None:
    """The scope's breaker keeps it out of what is served: a gating breaker serves the fallback,
    an item breaker removes that scope's items."""
    slate = g.apply(request(), cands)
    if kind in ("surface", "model"):
        assert slate.fallback == "drop" and slate.item_ids == []
    else:
        assert not served_scope(slate, cands, kind, name)
        assert f"breaker:{kind}:{name}" in {r for d in slate.decisions for r in d.rule_ids}


# -- item 1: safety signals, each signal and scope ------------------------------------------------
@pytest.mark.parametrize("kind", list(SCOPES))
def test_a_harm_report_is_a_failure_against_the_breaker_it_names(test_bundle, clock, kind):
    """Even a breaker whose predicate counts only label-store errors counts a harm report as a
    failure: four reports fill a window of four and open it."""
    name, field = SCOPES[kind]
    cands = make_candidates(60, seed=5, creators=5)
    policy = ScopePolicy(BreakerConfig(failure_predicate=LABEL_STORE_FAILED, window_size=4, minimum_calls=4), Fallback("drop"))
    g, reg = guard_for(test_bundle, cands, clock, {kind: policy})
    breaker = reg.get(f"{kind}:{name}")
    for k in range(3):
        assert g.report_harmful(item_id=f"item-{k}", **{field: name}) == {f"{kind}:{name}": "closed"}
    assert breaker.metrics() == (3, 3, 0)
    assert g.report_harmful(item_id="item-3", **{field: name}) == {f"{kind}:{name}": "open"}
    assert_scope_blocked(g, cands, kind, name)


@pytest.mark.parametrize("kind", list(SCOPES))
def test_severe_reports_trip_the_breaker_they_name_whatever_the_rate(test_bundle, clock, kind):
    name, field = SCOPES[kind]
    cands = make_candidates(60, seed=5, creators=5)
    policy = ScopePolicy(BreakerConfig(window_size=1000, minimum_calls=1000, severe_threshold=2, severe_window_s=600),
                         Fallback("drop"))
    g, reg = guard_for(test_bundle, cands, clock, {kind: policy})
    for _ in range(20):
        g.apply(request(), cands)  # healthy traffic: many good calls
    g.report_harmful(item_id="item-1", **{field: name})  # not severe: one failure among many
    g.report_harmful(item_id="item-2", severe=True, **{field: name})
    assert reg.get(f"{kind}:{name}").state is State.CLOSED
    assert g.report_harmful(item_id="item-3", severe=True, **{field: name}) == {f"{kind}:{name}": "open"}
    assert "2 severe events" in reg.get(f"{kind}:{name}").transitions[-1].reason
    assert_scope_blocked(g, cands, kind, name)


@pytest.mark.parametrize("kind", list(SCOPES))
def test_an_alert_forces_open_the_breaker_it_names_and_good_calls_cannot_close_it(test_bundle, clock, kind):
    name, _ = SCOPES[kind]
    cands = make_candidates(60, seed=5, creators=5)
    g, reg = guard_for(test_bundle, cands, clock, {kind: ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2), Fallback("drop"))})
    event = Mitigator(breakers=reg).apply("trip_breaker", (f"{kind}:{name}",), alert_id="harm-surge", alert_event_key="k1",
                                          reason="harm surge")
    assert event.payload["ok"] and event.payload["to"] == "forced_open"
    clock.advance(10_000)
    for _ in range(5):
        assert_scope_blocked(g, cands, kind, name)
    b = reg.get(f"{kind}:{name}")
    for _ in range(5):
        b.on_success()
    assert b.state is State.FORCED_OPEN


def test_harm_reports_after_an_outage_cannot_close_the_surface_breaker(test_bundle, clock):
    """Issue 26: with results counted while OPEN, five harm reports after a label-store outage
    closed the breaker with no label read at all."""
    cands = make_candidates(20)
    policy = ScopePolicy(BreakerConfig(window_size=4, minimum_calls=2, wait_in_open_s=10, permitted_calls_in_half_open=5),
                         Fallback("drop"))
    g, reg = guard_for(test_bundle, cands, clock, {"surface": policy})
    good = g.labels
    g.labels = BrokenStore()
    g.apply(ADULT, cands)
    g.apply(ADULT, cands)
    b = reg.get("surface:for_you")
    assert b.state is State.OPEN
    g.labels = good
    clock.advance(11)
    for k in range(5):
        g.report_harmful(item_id=f"item-{k}", surface="for_you")
    assert b.state is State.OPEN and len(b.transitions) == 1
    assert g.apply(ADULT, cands).breaker_state == "half_open"  # a real probe
    g.report_harmful(item_id="item-9", surface="for_you")
    assert b.state is State.OPEN


@pytest.mark.parametrize("bad, message", [
    ({"item_id": ""}, "item_id must be a non-empty string"),
    ({"item_id": "x", "source": 5}, "source must be a non-empty string"),
    ({"item_id": "x", "surface": ""}, "surface must be a non-empty string"),
    ({"item_id": "x", "severe": "yes"}, "severe must be true or false"),
])
def test_a_bad_harm_report_is_refused_whole(test_bundle, clock, bad, message):
    cands = make_candidates(5)
    g, reg = guard_for(test_bundle, cands, clock, {"source": ScopePolicy(BreakerConfig())})
    with pytest.raises(BadInput, match=message):
        g.report_harmful(**bad)
    assert reg.states() == {}


# -- item 2: permits on every path ---------------------------------------------------------------
class BrokenStore:
    def get(self, item_ids, label_names, *, timeout_s=None):
        raise ConnectionError("label store down")


class SlowStore:
    """A store that answers after the request's deadline."""

    def __init__(self, inner, delay_s: float):
        self.inner, self.delay_s = inner, delay_s

    def get(self, item_ids, label_names, *, timeout_s=None):
        time.sleep(self.delay_s)
        return self.inner.get(item_ids, label_names, timeout_s=timeout_s)


def half_open_surface(test_bundle, cands, clock, permitted: int = 1, **policies):
    """A guard whose surface breaker is half-open with ``permitted`` probes."""
    policy = ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2, wait_in_open_s=5, permitted_calls_in_half_open=permitted,
                                       max_wait_in_half_open_s=0), Fallback("drop"))
    g, reg = guard_for(test_bundle, cands, clock, {"surface": policy, **policies})
    b = reg.get("surface:for_you")
    b.trip()
    clock.advance(6)
    assert b.try_acquire_permission()
    b.release_permission()
    assert b.state is State.HALF_OPEN and b.half_open_permits() == permitted
    return g, reg, b


def test_a_permit_is_given_back_when_another_breaker_refuses(test_bundle, clock):
    """Issue 26: the surface's half-open probe permit leaked when the model breaker refused, and
    requests got the fallback for 70 s after the system was healthy again."""
    cands = make_candidates(20)
    g, reg, surface = half_open_surface(test_bundle, cands, clock,
                                        model=ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2), Fallback("drop")))
    reg.get("model:ranker-v7").force_open()
    for _ in range(3):
        s = g.apply(request(), cands)
        assert s.fallback == "drop" and s.breaker_state == "forced_open"
    assert surface.half_open_permits() == 1 and surface.metrics().calls == 0
    reg.get("model:ranker-v7").close()
    s = g.apply(request(), cands)
    assert s.breaker_state == "half_open" and s.item_ids  # the probe went through at once
    assert surface.state is State.CLOSED  # one probe of one permitted decided


def test_a_permit_is_recorded_when_the_deadline_runs_out(test_bundle, clock):
    cands = make_candidates(20)
    g, _, surface = half_open_surface(test_bundle, cands, clock, permitted=2)
    g.labels = SlowStore(g.labels, 0.02)
    s = g.apply({**ADULT, "deadline_ms": 1}, cands)
    assert s.item_ids == [] and "deadline budget exhausted" in " ".join(s.notes)
    assert surface.metrics() == (1, 1, 0) and surface.half_open_permits() == 1  # a failed probe, recorded


def test_a_permit_is_given_back_when_deciding_raises(test_bundle, clock, monkeypatch):
    cands = make_candidates(20)
    g, reg, surface = half_open_surface(test_bundle, cands, clock,
                                        model=ScopePolicy(BreakerConfig(permitted_calls_in_half_open=1, wait_in_open_s=5),
                                                          Fallback("drop")))
    model = reg.get("model:ranker-v7")
    model.trip()
    clock.advance(6)

    def boom(*a, **k):
        raise RuntimeError("a bug in deciding")

    monkeypatch.setattr(g, "_decide", boom)
    with pytest.raises(RuntimeError):
        g.apply(request(), cands)
    assert surface.half_open_permits() == 1 and model.half_open_permits() == 1
    assert surface.metrics().calls == 0 and model.metrics().calls == 0
    monkeypatch.undo()
    assert g.apply(request(), cands).breaker_state == "half_open"
    assert surface.state is State.CLOSED and model.state is State.CLOSED


def test_the_stricter_surface_breaker_gets_its_permit_recorded_or_released(test_bundle, clock, monkeypatch):
    cands = make_candidates(20)
    policies = {"surface": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2, wait_in_open_s=5,
                                                     permitted_calls_in_half_open=2, max_wait_in_half_open_s=0),
                                       Fallback("stricter_rules", surface="search_strict"))}
    g, reg = guard_for(test_bundle, cands, clock, policies)
    reg.get("surface:for_you").force_open()
    strict = reg.get("surface:search_strict")
    strict.trip()
    clock.advance(6)
    assert strict.try_acquire_permission()
    strict.release_permission()
    real = g._decide
    monkeypatch.setattr(g, "_decide", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        g.apply(ADULT, cands)
    assert strict.half_open_permits() == 2
    monkeypatch.setattr(g, "_decide", real)
    s = g.apply(ADULT, cands)
    assert s.fallback == "stricter_rules" and s.item_ids
    assert strict.metrics() == (1, 0, 0) and strict.half_open_permits() == 1


def test_item_breaker_permits_are_recorded_per_request(test_bundle, clock):
    cands = make_candidates(60, seed=2)
    policy = ScopePolicy(BreakerConfig(window_size=10, minimum_calls=10, wait_in_open_s=5, permitted_calls_in_half_open=2,
                                       max_wait_in_half_open_s=0), Fallback("drop"))
    g, reg = guard_for(test_bundle, cands, clock, {"source": policy})
    g.apply(ADULT, cands)
    assert {s: reg.get(s).metrics().calls for s in reg.states()} == {"source:ads:b": 1, "source:catalog": 1, "source:ugc:a": 1}
    ugc = reg.get("source:ugc:a")
    ugc.trip()
    clock.advance(6)
    for _ in range(3):
        g.apply(ADULT, cands)
    assert ugc.state is State.CLOSED  # two probes recorded, decided; the third request ran closed


# -- item 4: fallbacks honour every open scope ---------------------------------------------------
def cached_fallback_guard(test_bundle, clock, cands, **policies):
    policies = {"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate")), **policies}
    g, reg = guard_for(test_bundle, cands, clock, policies)
    healthy = g.apply(ADULT, cands)  # becomes u1's cached safe slate
    assert healthy.item_ids
    reg.get("surface:for_you").force_open()
    return g, reg, healthy


@pytest.mark.parametrize("kind, name", [("source", "ugc:a"), ("creator", "creator-1")])
@pytest.mark.parametrize("how", ["force_open", "trip", "half_open"])
def test_a_cached_slate_leaves_out_items_of_an_open_source_or_creator(test_bundle, clock, kind, name, how):
    """Issue 26: 12 of 29 items of the cached slate came from the source that was forced open."""
    cands = make_candidates(60, seed=7, creators=4)
    g, reg, healthy = cached_fallback_guard(test_bundle, clock, cands,
                                            **{kind: ScopePolicy(BreakerConfig(wait_in_open_s=5), Fallback("drop"))})
    assert served_scope(healthy, cands, kind, name)
    b = reg.get(f"{kind}:{name}")
    if how == "half_open":
        b.trip()
        clock.advance(6)
        assert b.try_acquire_permission() and b.state is State.HALF_OPEN
    else:
        getattr(b, how)()
    s = g.apply(ADULT, cands)
    assert s.fallback == "cached_slate" and s.item_ids
    assert not served_scope(s, cands, kind, name)
    assert s.item_ids == [i for i in healthy.item_ids if i not in served_scope(healthy, cands, kind, name)]
    assert f"{kind}:{name} {b.state.value}" in " ".join(s.notes)
    b.close()
    assert g.apply(ADULT, cands).item_ids == healthy.item_ids  # closed again: the whole cached slate


def test_a_seeded_safe_slate_leaves_out_items_of_an_open_source(test_bundle, clock):
    cands = make_candidates(10)
    g, reg = guard_for(test_bundle, cands, clock, {"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate")),
                                                   "source": ScopePolicy(BreakerConfig(), Fallback("drop"))})
    g.set_safe_slate("for_you", ["s1", "s2", "s3"], sources=["catalog", "ugc:a", None])
    reg.get("surface:for_you").force_open()
    reg.get("source:ugc:a").force_open()
    s = g.apply({**ADULT, "user": {"id": "never-seen", "age": 30}}, cands)
    assert s.item_ids == ["s1", "s3"]
    with pytest.raises(BadInput, match="2 sources for 3 items"):
        g.set_safe_slate("for_you", ["s1", "s2", "s3"], sources=["catalog", "ugc:a"])


def test_stricter_rules_never_decide_through_an_open_surface(test_bundle, clock):
    cands = make_candidates(20)
    g, reg = guard_for(test_bundle, cands, clock, {
        "surface": ScopePolicy(BreakerConfig(), Fallback("stricter_rules", surface="search_strict"))})
    reg.get("surface:for_you").force_open()
    assert g.apply(ADULT, cands).item_ids
    reg.get("surface:search_strict").force_open()
    s = g.apply(ADULT, cands)
    assert s.item_ids == [] and "surface:search_strict of the stricter rules is not closed" in " ".join(s.notes)
    assert {d.action for d in s.decisions} == {"drop"}


def test_a_safe_source_fallback_leaves_out_its_open_sources(test_bundle, clock):
    cands = make_candidates(10)
    safe = {"id": ["safe-1", "safe-2"], "score": [0.9, 0.8], "source": ["vetted", "ugc:a"], "creator": ["ed", "ed2"],
            "topic": ["film", "film"], "verified": [True, True], "labels.mature": [0.0, 0.0], "labels.spam": [0.0, 0.0],
            "labels.toxic": [0.0, 0.0]}
    g, reg = guard_for(test_bundle, cands, clock, {
        "surface": ScopePolicy(BreakerConfig(), Fallback("safe_source", candidates=lambda req: safe)),
        "source": ScopePolicy(BreakerConfig(), Fallback("drop"))})
    reg.get("surface:for_you").force_open()
    reg.get("source:ugc:a").force_open()
    s = g.apply(ADULT, cands)
    assert s.fallback == "safe_source" and s.item_ids == ["safe-1"]


# -- item 6: bounded under a flood ---------------------------------------------------------------
def test_a_flood_of_model_versions_keeps_the_registry_bounded(test_bundle, clock):
    cands = make_candidates(5)
    g, reg = guard_for(test_bundle, cands, clock, {
        "model": ScopePolicy(BreakerConfig(), Fallback("drop"), max_breakers=50),
        "source": ScopePolicy(BreakerConfig(), Fallback("drop"), max_breakers=20)})
    for k in range(2000):
        assert g.apply({**ADULT, "model_version": f"m-{k}"}, cands).item_ids
    flood = {"id": np.array([f"f{k}" for k in range(300)], dtype=object), "score": np.linspace(1, 0, 300),
             "source": np.array([f"src-{k}" for k in range(300)], dtype=object)}
    g.apply({**ADULT, "deadline_ms": 60_000}, flood)
    counts = {kind: sum(by.values()) for kind, by in reg.counts().items()}
    assert counts["model"] <= 50 and counts["source"] <= 20
    assert reg.evictions[("model", "lru")] >= 1950 and reg.evictions[("source", "lru")] >= 280
    assert not reg.overflows


def test_guard_config_fallbacks_still_win(test_bundle, clock):
    cands = make_candidates(10)
    reg = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate"))}, clock=clock)
    g = Guard(test_bundle, store_for(cands), breakers=reg, config=GuardConfig(fallbacks={"surface": Fallback("drop")}))
    reg.get("surface:for_you").force_open()
    assert g.apply(ADULT, cands).fallback == "drop"


# -- over HTTP -----------------------------------------------------------------------------------
def test_http_feedback_status_pages_and_metrics(test_bundle, clock):
    import orjson
    from fastapi.testclient import TestClient

    from assay.guard.http import create_app

    cands = make_candidates(10)
    g, reg = guard_for(test_bundle, cands, clock, {
        "source": ScopePolicy(BreakerConfig(severe_threshold=1), Fallback("drop"), max_breakers=3),
        "surface": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2))})
    with TestClient(create_app(g, access=None)) as client:  # authentication: tests/guard/test_guard_trust.py
        r = client.post("/v1/guard/feedback", content=orjson.dumps({"item_id": "item-1", "source": "ugc:a", "severe": True}))
        assert r.status_code == 200 and r.json()["breakers"] == {"source:ugc:a": "open"}
        r = client.post("/v1/guard/feedback", content=orjson.dumps({"item_id": "item-1", "surface": "for_you", "creator": None}))
        assert r.json()["breakers"] == {"surface:for_you": "closed"}  # no creator policy: nothing else reached
        for bad, message in [({"item_id": "x", "severe": "false"}, "severe must be true or false"),
                             ({"item_id": "x", "source": ["a"]}, "source must be a non-empty string"),
                             ({"source": "a"}, "item_id must be a non-empty string")]:
            r = client.post("/v1/guard/feedback", content=orjson.dumps(bad))
            assert r.status_code == 400 and message in r.json()["error"]
        for k in range(5):
            reg.get(f"source:s{k}")
        status = client.get("/v1/guard/status", params={"breakers_limit": 2}).json()
        # three sources (the cap: the least recently used went, the open one stays) and the surface
        assert list(status["breakers"]) == ["source:s3", "source:s4"] and status["breakers_next"] == "source:s4"
        assert status["breakers_total"] == 4
        rest = client.get("/v1/guard/status", params={"breakers_after": "source:s4"}).json()
        assert rest["breakers"] == {"source:ugc:a": "open", "surface:for_you": "closed"} and rest["breakers_next"] is None
        assert client.get("/v1/guard/status", params={"breakers_limit": 0}).status_code == 400
        text = client.get("/metrics").text
        assert 'assay_breakers{kind="source",state="open"} 1.0' in text
        assert 'assay_breaker_evictions_total{kind="source",reason="lru"}' in text


def test_stream_feedback_counts_against_each_scope_and_a_bad_one_is_bad_input(redis_url, test_bundle, clock):
    import orjson

    from assay.guard.stream import RedisStreamsTransport, StreamWorker, encode_feedback

    cands = make_candidates(10)
    g, reg = guard_for(test_bundle, cands, clock, {
        "surface": ScopePolicy(BreakerConfig(failure_predicate=LABEL_STORE_FAILED, window_size=2, minimum_calls=2)),
        "creator": ScopePolicy(BreakerConfig(window_size=2, minimum_calls=2))})
    t = RedisStreamsTransport(redis_url, input_stream="fb:in", output_stream="fb:out")
    try:
        for k in range(2):
            t.publish(encode_feedback(item_id=f"item-{k}", surface="for_you", creator="creator-1"))
        t.publish(orjson.dumps({"kind": "feedback", "item_id": "item-9", "source": {"not": "a name"}}))
        t.publish(orjson.dumps({"kind": "feedback", "item_id": "item-9", "severe": "very"}))
        worker = StreamWorker(g, t, block_ms=20)
        assert worker.run(max_messages=4, idle_exit_s=2.0) == 4
        assert worker.stats.feedback == 2 and worker.stats.bad_input == 2 and t.pending() == 0
        assert reg.states() == {"creator:creator-1": "open", "surface:for_you": "open"}
    finally:
        t.close()
