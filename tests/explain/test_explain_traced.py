"""Explanations equal what was served: traced decisions re-decided from the inputs recorded with
their request reproduce the served action, rules and rank, over more than 10,000 random
decisions with rollouts, caps, fail-closed drops, breaker fallbacks and deadlines; a record that
was changed afterwards is caught."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from assay.explain.guard import check_trace, explain_traced, read_trace


def test_ten_thousand_traced_decisions_are_reproduced():
    from assay.guard.replay import traced_mix

    report = traced_mix(n_requests=105, candidates=100, seed=3)
    assert report["decisions"] >= 10_000 and report["without_inputs"] == 0, report
    assert report["agreement"] == 1.0, report["examples"]
    # every step an explanation must reproduce happened, many times
    assert all(count >= 10 for count in report["mix"].values()), report["mix"]


@pytest.fixture
def traced(tmp_path, feed_bundle):
    from assay.guard import DecisionQueue, Guard
    from assay.guard.bench import USERS, candidate_batch, catalog
    from assay.guard.sink import TraceSink
    from assay.trace import TraceLog

    ids, store, meta = catalog(2000)
    log = TraceLog.open(tmp_path / "trace", checkpoint_every=None, fsync="off")
    sink = DecisionQueue(TraceSink(log))
    guard = Guard(feed_bundle, store, sink=sink)
    rng = np.random.default_rng(4)
    for k in range(3):
        guard.apply({"request_id": f"q{k}", "surface": "for_you", "user": USERS[k]}, candidate_batch(ids, meta, 60, rng))
    assert sink.flush(20)
    sink.close()
    return tmp_path / "trace"


@pytest.fixture
def feed_bundle():
    from assay.guard.cli import resolve_bundle_path
    from assay.policy import load_bundle

    return load_bundle(resolve_bundle_path("builtin:feed"))


def test_a_record_changed_after_the_fact_does_not_reproduce(traced, feed_bundle):
    from assay.trace import TraceLog

    log = TraceLog.open(traced, read_only=True)
    assert check_trace(log, feed_bundle)["agreement"] == 1.0
    decisions, inputs = read_trace(log, "q0")
    log.close()
    by_labels = {r.id for r in feed_bundle.rules if any(a.startswith("item.labels.") for a in feed_bundle.compiled("rules", r.id).attributes)}
    dropped = next(r for r in decisions["q0"] if r["action"] == "drop" and r["rule_ids"] and set(r["rule_ids"]) <= by_labels)
    assert explain_traced(feed_bundle, inputs["q0"], dropped).reproduced
    # clear every label of the dropped item in the record: the re-decision no longer matches
    forged = copy.deepcopy(inputs["q0"])
    j = dropped["rank_before"]
    for values in forged["labels"].values():
        values[j] = 0.0
    again = explain_traced(feed_bundle, forged, dropped)
    assert not again.reproduced and again.redecided["rule_ids"] != dropped["rule_ids"]
    # and a record from another bundle is refused, not explained
    other = copy.deepcopy(inputs["q0"])
    other["bundle_hash"] = "0" * 64
    with pytest.raises(Exception, match="decided by bundle 000000000000"):
        explain_traced(feed_bundle, other, dropped)


def test_cli_explains_a_traced_decision(traced, feed_bundle):
    from assay.trace import TraceLog

    log = TraceLog.open(traced, read_only=True)
    decisions, _ = read_trace(log, "q1")
    log.close()
    row = next(r for r in decisions["q1"] if r["action"] in ("drop", "demote", "label") and r["rule_ids"])
    base = [sys.executable, "-m", "assay.cli.main", "explain", "guard", "--bundle", str(feed_bundle.path), "--trace", str(traced)]
    out = subprocess.run([*base, "--request-id", "q1", "--item", row["item_id"], "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)[0]
    assert doc["reproduced"] and doc["redecided"]["action"] == row["action"] and doc["redecided"]["rule_ids"] == row["rule_ids"]
    assert doc["conditions"] and doc["conditions"][0]["id"] == row["rule_ids"][0]
    missing = subprocess.run([*base, "--request-id", "q1", "--item", "no-such-item"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no decision for item 'no-such-item'" in missing.stderr
