"""The decision queue, fallbacks, the HTTP service (in process and as `assay guard serve`), the
CLI (the Kafka adapter is tested against a live broker in test_guard_kafka.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import orjson
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
from assay.guard.http import create_app
from assay.guard.sink import JsonlSink
from assay.store.labels import InMemoryLabelStore

ADULT = {"request_id": "r1", "surface": "for_you", "user": {"id": "u1", "age": 30}, "deadline_ms": 60_000}


def labelled_guard(bundle, cands, **kw) -> Guard:
    store = InMemoryLabelStore()
    store.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    return Guard(bundle, store, **kw)


# -- decision queue --------------------------------------------------------------------------------
def test_queue_full_drop_mode_never_waits():
    gate = threading.Event()
    written: list = []

    def slow_sink(records):
        gate.wait(5)
        written.extend(records)

    q = DecisionQueue(slow_sink, maxsize=2, when_full="drop")
    started = time.perf_counter()
    accepted = [q.submit({"n": k}) for k in range(10)]
    assert time.perf_counter() - started < 0.5
    assert accepted.count(False) == q.stats.dropped >= 7
    gate.set()
    assert q.flush(5)
    assert len(written) == accepted.count(True)
    q.close()


def test_queue_backpressure_waits_only_its_budget():
    gate = threading.Event()
    q = DecisionQueue(lambda r: gate.wait(5), maxsize=1, when_full="backpressure", put_timeout_s=0.02)
    for k in range(3):
        q.submit(k)
    started = time.perf_counter()
    ok = q.submit("one more")
    waited = time.perf_counter() - started
    assert not ok and q.stats.dropped_after_wait >= 1
    assert 0.015 <= waited < 0.5
    gate.set()
    q.close()


def test_queue_counts_sink_errors_and_keeps_going():
    calls: list = []

    def flaky(records):
        calls.append(len(records))
        if len(calls) == 1:
            raise OSError("trace disk full")

    q = DecisionQueue(flaky, maxsize=10)
    q.submit("a")
    assert q.flush(5)
    q.submit("b")
    assert q.flush(5)
    assert q.stats.sink_errors == 1 and "trace disk full" in q.stats.last_error
    assert q.stats.written_records == 1
    q.close()
    with pytest.raises(RuntimeError, match="closed"):
        q.submit("c")


def test_guard_writes_one_decision_per_candidate_to_a_jsonl_sink(tmp_path, test_bundle):
    cands = make_candidates(25)
    sink = DecisionQueue(JsonlSink(tmp_path / "decisions.jsonl"))
    g = labelled_guard(test_bundle, cands, sink=sink)
    slate = g.apply(ADULT, cands)
    assert sink.flush(5)
    lines = [orjson.loads(line) for line in (tmp_path / "decisions.jsonl").read_bytes().splitlines()]
    rows = [r for r in lines if "item_id" in r]
    assert len(rows) == 25 and {r["request_id"] for r in rows} == {"r1"}
    # and, after them, what the slate was decided from (for explanations)
    assert [(e["kind"], e["subject"]) for e in lines if "kind" in e] == [("guard.slate_inputs", "r1")]
    served = sorted((r for r in rows if r["rank_after"] >= 0), key=lambda r: r["rank_after"])
    assert [r["item_id"] for r in served] == slate.item_ids
    sink.close()


def test_a_blocked_trace_does_not_slow_serving(test_bundle):
    cands = make_candidates(50)
    gate = threading.Event()
    sink = DecisionQueue(lambda r: gate.wait(10), maxsize=1, when_full="drop")
    g = labelled_guard(test_bundle, cands, sink=sink)
    for _ in range(5):
        g.apply(ADULT, cands)  # the queue is full after the first: the rest are dropped and counted
    assert sink.stats.dropped >= 3
    gate.set()
    sink.close()


# -- fallbacks ---------------------------------------------------------------------------------
def test_stricter_rules_and_safe_source_fallbacks(test_bundle, clock):
    cands = make_candidates(40, seed=3)
    safe = {"id": ["safe-1", "safe-2"], "score": [0.9, 0.8], "creator": ["ed", "ed2"], "topic": ["film", "film"],
            "verified": [True, True], "labels.mature": [0.0, 0.0], "labels.spam": [0.0, 0.0], "labels.toxic": [0.0, 0.0]}
    for fb, check in [
        (Fallback("stricter_rules", surface="search_strict"), "stricter"),
        (Fallback("safe_source", candidates=lambda req: safe), "safe"),
    ]:
        reg = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(), fb)}, clock=clock)
        g = labelled_guard(test_bundle, cands, breakers=reg)
        normal = g.apply(ADULT, cands)
        reg.get("surface:for_you").force_open("kill switch")
        slate = g.apply(ADULT, cands)
        assert slate.breaker_state == "forced_open"
        if check == "stricter":
            strict = g.apply({**ADULT, "surface": "search_strict"}, cands)
            assert slate.fallback == "stricter_rules" and slate.item_ids == strict.item_ids != normal.item_ids
        else:
            assert slate.fallback == "safe_source" and slate.item_ids == ["safe-1", "safe-2"]
            d = slate.decisions
            assert len(d) == 42 and {x.action for x in d[:40]} == {"drop"}
            assert [(x.item_id, x.rank_before, x.rank_after) for x in d[40:]] == [("safe-1", -1, 0), ("safe-2", -1, 1)]


def test_model_version_breaker(test_bundle, clock):
    cands = make_candidates(10)
    reg = BreakerRegistry({"model": ScopePolicy(BreakerConfig(), Fallback("drop"))}, clock=clock)
    g = labelled_guard(test_bundle, cands, breakers=reg)
    assert g.apply({**ADULT, "model_version": "ranker-v7"}, cands).item_ids
    reg.get("model:ranker-v7").force_open()
    s = g.apply({**ADULT, "model_version": "ranker-v7"}, cands)
    assert s.item_ids == [] and {d.rule_ids for d in s.decisions} == {("breaker:model:ranker-v7",)}
    assert g.apply({**ADULT, "model_version": "ranker-v8"}, cands).item_ids


# -- HTTP --------------------------------------------------------------------------------------
def test_http_endpoints(test_bundle, tmp_path, bundle_path):
    from fastapi.testclient import TestClient

    cands = make_candidates(30)
    g = labelled_guard(test_bundle, cands)
    body = {"request": ADULT, "candidates": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cands.items()}}
    with TestClient(create_app(g, access=None)) as client:  # access: tests/guard/test_guard_trust.py
        r = client.post("/v1/guard", content=orjson.dumps(body))
        assert r.status_code == 200
        assert [i["id"] for i in r.json()["items"]] == g.apply(ADULT, cands).item_ids
        r = client.post("/v1/guard", content=orjson.dumps({**body, "decisions": True}))
        assert len(r.json()["decisions"]) == 30
        assert client.post("/v1/guard", content=b"{oops").json()["error"].startswith("request body is not JSON")
        r = client.post("/v1/guard", content=orjson.dumps({"request": {**ADULT, "surface": "x"}, "candidates": []}))
        assert r.status_code == 400 and "unknown surface 'x'" in r.json()["error"]
        r = client.post("/v1/guard", content=orjson.dumps({"request": ADULT, "candidates": {"id": ["a", "a"], "score": [1, 2]}}))
        assert r.status_code == 400 and "duplicate id 'a'" in r.json()["error"]
        assert client.post("/v1/guard", content=orjson.dumps({"request": ADULT})).status_code == 400
        r = client.post("/v1/guard/feedback", content=orjson.dumps({"item_id": "item-1", "source": "ugc:a", "severe": True}))
        assert r.status_code == 200
        status = client.get("/v1/guard/status").json()
        assert status["version"] == "1" and status["hash"] == test_bundle.hash and status["counters"]["requests"] >= 2


def test_assay_guard_serve_and_apply_cli(tmp_path, test_bundle, bundle_path, free_port):
    cands = make_candidates(20)
    store = InMemoryLabelStore()
    store.put(list(cands["id"]), make_labels(cands["id"]), "clf-1")
    labels = store.to_parquet(tmp_path / "labels.parquet")
    cjson = tmp_path / "cands.json"
    cjson.write_text(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in cands.items()}))
    expected = Guard(test_bundle, store).apply(ADULT, cands).item_ids
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    from assay.govern.registry import Actor
    from assay.server.auth import create_token
    from assay.store import open_store

    token = create_token(open_store(), Actor("root", "admin", "test"), name="ranker", role="viewer")["token"]
    proc = subprocess.Popen([sys.executable, "-m", "assay.cli.main", "guard", "serve", "--bundle", str(bundle_path), "--labels", str(labels),
                             "--port", str(port), "--decisions-out", str(tmp_path / "d.jsonl")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        body = orjson.dumps({"request": ADULT, "candidates": json.loads(cjson.read_text())})
        assert httpx.post(f"http://127.0.0.1:{port}/v1/guard", content=body).status_code == 401
        r = httpx.post(f"http://127.0.0.1:{port}/v1/guard", content=body, headers={"Authorization": f"Bearer {token}"})
        assert [i["id"] for i in r.json()["items"]] == expected
    finally:
        proc.terminate()
        proc.wait(10)

    from assay.cli.main import main

    out = tmp_path / "out.txt"
    rc = subprocess.run([sys.executable, "-m", "assay.cli.main", "guard", "apply", str(cjson), "--request", json.dumps(ADULT),
                         "--bundle", str(bundle_path), "--labels", str(labels), "--json"], capture_output=True, text=True, env=env)
    assert rc.returncode == 0, rc.stderr
    assert [i["id"] for i in json.loads(rc.stdout)["items"]] == expected
    out.write_text("")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"id": ["a", "b"], "score": [1.0, float("nan")]}).replace("NaN", "NaN"))
    assert main(["guard", "apply", str(bad), "--request", json.dumps(ADULT), "--bundle", str(bundle_path)]) == 2
    assert main(["guard", "apply", str(cjson), "--request", "{nope", "--bundle", str(bundle_path)]) == 2
    assert main(["guard", "apply", str(tmp_path / "absent.json"), "--request", json.dumps(ADULT), "--bundle", str(bundle_path)]) == 2


def test_decisions_reach_the_trace_log_columnwise(tmp_path, test_bundle, clock):
    from assay.guard.sink import TraceSink
    from assay.trace import TraceLog

    cands = make_candidates(40, seed=9)
    log = TraceLog.open(tmp_path / "trace", checkpoint_every=None)
    sink = DecisionQueue(TraceSink(log))
    reg = BreakerRegistry({"surface": ScopePolicy(BreakerConfig(), Fallback("cached_slate"))}, clock=clock)
    g = labelled_guard(test_bundle, cands, sink=sink, breakers=reg)
    slates = [g.apply({**ADULT, "request_id": f"t{k}"}, cands) for k in range(3)]
    reg.get("surface:for_you").force_open("operator kill switch")  # one breaker event
    slates.append(g.apply({**ADULT, "request_id": "t-open"}, cands))  # the cached slate: 40 + its items
    assert sink.flush(10) and sink.stats.sink_errors == 0, sink.stats.last_error
    table = log.table()
    expected = [d for s in slates for d in s.decisions]
    assert log.size == len(expected) + 1 + len(slates)  # the decisions, the breaker event, each slate's inputs
    rows = [r for r in table.to_pylist() if r["type"] == "decision"]
    assert [(r["request_id"], r["item_id"], r["action"], r["rule_ids"], r["rank_after"]) for r in rows] == [
        (d.request_id, d.item_id, d.action, list(d.rule_ids), d.rank_after) for d in expected]
    events = [r for r in table.to_pylist() if r["type"] == "event"]
    assert sorted((e["kind"], e["event_subject"]) for e in events) == sorted(
        [("breaker_transition", "surface:for_you")] + [("guard.slate_inputs", s.request_id) for s in slates])
    sink.close()


def test_a_drop_rate_surge_trips_the_source_breaker(test_bundle, clock):
    from assay.guard.breakers import drop_rate_above

    cands = make_candidates(60, seed=4, sources=("catalog", "ugc:a"))
    store = InMemoryLabelStore()
    labels = make_labels(cands["id"], seed=4)
    labels["spam"] = np.where(cands["source"] == "ugc:a", 0.95, 0.0)  # everything from ugc:a is spam today
    store.put(list(cands["id"]), labels, "clf-1")
    reg = BreakerRegistry({"source": ScopePolicy(BreakerConfig(failure_predicate=drop_rate_above(0.5), window_size=5,
                                                               minimum_calls=3, wait_in_open_s=60), Fallback("drop"))}, clock=clock)
    events: list = []
    reg.add_listener(events.append)
    g = Guard(test_bundle, store, breakers=reg, config=GuardConfig(caller_labels=True))  # the last batch brings labels
    for _ in range(3):
        g.apply(ADULT, cands)
    assert reg.states() == {"source:catalog": "closed", "source:ugc:a": "open"}
    assert events[-1].payload["failure_rate"] == 100.0
    # now even a clean ugc:a item is held back while the source's breaker is open
    clean = {"id": ["ugc-clean", "cat-clean"], "score": [0.9, 0.8], "source": ["ugc:a", "catalog"], "creator": ["x", "y"],
             "topic": ["film", "film"], "verified": [False, False], "labels.mature": [0.0, 0.0], "labels.spam": [0.0, 0.0],
             "labels.toxic": [0.0, 0.0]}
    s = g.apply(ADULT, clean)
    assert s.item_ids == ["cat-clean"]
    assert s.decisions[0].rule_ids == ("breaker:source:ugc:a",) and s.decisions[0].breaker_state == "open"


def test_jsonl_sink_writes_exactly_what_to_dict_says(tmp_path):
    """The sink hands dataclass records to orjson directly (cheaper than asdict): the lines must
    be byte for byte the JSON of to_dict(), for decisions and events alike."""
    import orjson

    from assay.records import Decision, Event

    records = [
        Decision("r1", 1.5, "for_you", "u", "i1", 0, -1, "drop", rule_ids=("a", "b"), reasons=("x",),
                 attribution={"f": 0.25}, score_before=0.5),
        Event(kind="breaker", ts=2.0, subject="surface:for_you", payload={"from": "closed", "to": "open", "n": [1, 2]}),
        {"plain": "dict"},
    ]
    sink = JsonlSink(tmp_path / "d.jsonl")
    sink(records)
    sink.close()
    expected = b"".join(orjson.dumps(r.to_dict() if hasattr(r, "to_dict") else r) + b"\n" for r in records)
    assert (tmp_path / "d.jsonl").read_bytes() == expected


def test_guard_apply_refuses_hostile_json_files_with_exit_2(tmp_path, bundle_path, capsys):
    """``guard apply``'s candidates and ``--request @file`` are read as the HTTP guard reads a body
    (a regular file of at most 16 MiB; anything that is not JSON is exit 2 naming the file). A
    probe found tracebacks (exit 1) for a folder, invalid UTF-8, JSON nested 100,000 deep and an
    integer of 5,000 digits; /dev/zero was read until memory ran out and a FIFO hung the command."""
    from assay.cli.main import main

    good = tmp_path / "cands.json"
    good.write_text(json.dumps([{"id": "a", "score": 0.5}]))
    req = tmp_path / "req.json"
    req.write_text(json.dumps(ADULT))
    hostile = {"utf8.json": b'[{"id": "\xff"}]', "deep.json": b"[" * 100_000 + b"]" * 100_000,
               "digits.json": b'[{"id": "a", "score": ' + b"9" * 5000 + b"}]", "nan.json": b'[{"id": "a", "score": NaN}]'}
    for name, data in hostile.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.json")
    for name in [*hostile, "folder.json", "zero.json", "fifo.json"]:
        bad = str(tmp_path / name)
        for args in ([bad, "--request", f"@{req}"], [str(good), "--request", f"@{bad}"]):
            assert main(["guard", "apply", *args, "--bundle", str(bundle_path)]) == 2, (name, args)
            err = capsys.readouterr().err
            assert "Traceback" not in err and name in err, err
    assert main(["guard", "apply", str(good), "--request", "[" * 100_000, "--bundle", str(bundle_path)]) == 2
    assert "--request" in capsys.readouterr().err
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    assert main(["guard", "apply", str(tmp_path / "fake.parquet"), "--request", f"@{req}", "--bundle", str(bundle_path)]) == 2
    assert "fake.parquet" in capsys.readouterr().err


def test_guard_apply_prints_item_ids_as_text(tmp_path, bundle_path, capsys):
    """An item id is printed as it is, not read as rich markup: a probe's id '[/x]' was a
    MarkupError traceback under --decisions, and '[bold]b' lost its brackets in the table."""
    from assay.cli.main import main

    cands = tmp_path / "cands.json"
    cands.write_text(json.dumps([{"id": "[/x]", "score": 0.5}, {"id": "[bold]b", "score": 0.4}]))
    assert main(["guard", "apply", str(cands), "--request", json.dumps(ADULT), "--bundle", str(bundle_path), "--decisions"]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[bold]b" in out, out
