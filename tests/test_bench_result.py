"""The typed bench result: targets are numbers, every figure and baseline has a unit, ``met`` is
computed from the figure, and a bench that returns it prints one JSON object with those keys."""

from __future__ import annotations

import json
import sys
import types

import pytest

from assay.cli.bench import BENCHMARKS, BenchResult, Target, at_least, at_most, run_benchmark


def test_met_is_computed_per_target_and_none_when_not_measured():
    r = BenchResult(
        figures={"rate": 120.0, "p99_ms": 12.5, "vs_peer": None},
        units={"rate": "items/s", "p99_ms": "ms", "vs_peer": "x", "peer_rate": "items/s"},
        baseline={"peer_rate": 100.0},
        targets={"rate": at_least(100), "p99_ms": at_most(10, when="at 1000 requests/s"), "vs_peer": at_least(1)},
    )
    assert r.met == {"rate": True, "p99_ms": False, "vs_peer": None}
    out = r.to_dict()
    assert out["targets"]["p99_ms"] == {"op": "<=", "value": 10, "when": "at 1000 requests/s"}
    assert out["met"] == {"rate": True, "p99_ms": False, "vs_peer": None}
    assert json.loads(json.dumps(out)) == out  # plain JSON
    assert at_least(1).met(1.0) and at_most(1).met(1.0)  # bounds are inclusive


@pytest.mark.parametrize("kwargs, message", [
    ({"figures": {"a": 1.0}, "units": {}}, "no unit for"),
    ({"figures": {"a": 1.0}, "units": {"a": "ms", "b": "ms"}, "baseline": {"b": "unavailable"}}, "baseline 'b' must be a number"),
    ({"figures": {"a": "fast"}, "units": {"a": "ms"}}, "figure 'a' must be a number"),
    ({"figures": {"a": True}, "units": {"a": "ms"}}, "figure 'a' must be a number"),
    ({"figures": {"a": 1.0}, "units": {"a": "ms"}, "targets": {"b": at_least(1)}}, "not reported"),
    ({"figures": {"a": 1.0}, "units": {"a": "ms"}, "targets": {"a": ">= 1"}}, "must be a Target"),
    ({"figures": {"a": 1.0}, "units": {"a": "ms"}, "baseline": {"a": 2.0}}, "either a figure or a baseline"),
])
def test_a_loose_result_is_refused_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BenchResult(**kwargs)


@pytest.mark.parametrize("op, value", [("==", 1), (">=", "1"), (">=", float("nan"))])
def test_targets_are_numbers_with_a_direction(op, value):
    with pytest.raises(ValueError):
        Target(op, value)


def test_run_benchmark_prints_the_typed_result_and_keeps_legacy_dicts(monkeypatch):
    typed = types.ModuleType("assay_fake_typed_bench")
    typed.run = lambda quick: BenchResult(figures={"x": 2.0}, units={"x": "x"}, targets={"x": at_least(1)})
    legacy = types.ModuleType("assay_fake_legacy_bench")
    legacy.run = lambda quick: {"figures": {"y": 1}, "baseline": {}, "targets": {"y": ">= 1"}}
    monkeypatch.setitem(sys.modules, typed.__name__, typed)
    monkeypatch.setitem(sys.modules, legacy.__name__, legacy)
    monkeypatch.setitem(BENCHMARKS, "fake-typed", typed.__name__)
    monkeypatch.setitem(BENCHMARKS, "fake-legacy", legacy.__name__)
    out = run_benchmark("fake-typed", quick=True)
    assert out["met"] == {"x": True} and out["units"] == {"x": "x"} and out["benchmark"] == "fake-typed" and out["quick"]
    assert run_benchmark("fake-legacy")["targets"] == {"y": ">= 1"}
