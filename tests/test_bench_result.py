"""The typed bench result: targets are numbers, every figure and baseline has a unit, ``met`` is
computed from the figure, and a bench that returns it prints one JSON object with those keys."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import sys
import types
import typing

import pytest

from assay.cli.bench import BENCHMARKS, BenchResult, Target, at_least, at_most, run_benchmark
from assay.errors import BadInput


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


def test_run_benchmark_prints_the_typed_result_and_refuses_a_loose_dict(monkeypatch):
    typed = types.ModuleType("assay_fake_typed_bench")
    typed.run = lambda quick: BenchResult(figures={"x": 2.0}, units={"x": "x"}, targets={"x": at_least(1)})
    loose = types.ModuleType("assay_fake_loose_bench")
    loose.run = lambda quick: {"figures": {"y": 1}, "baseline": {}, "targets": {"y": ">= 1"}}
    monkeypatch.setitem(sys.modules, typed.__name__, typed)
    monkeypatch.setitem(sys.modules, loose.__name__, loose)
    monkeypatch.setitem(BENCHMARKS, "fake-typed", typed.__name__)
    monkeypatch.setitem(BENCHMARKS, "fake-loose", loose.__name__)
    out = run_benchmark("fake-typed", quick=True)
    assert out["met"] == {"x": True} and out["units"] == {"x": "x"} and out["benchmark"] == "fake-typed" and out["quick"]
    with pytest.raises(TypeError, match=r"benchmark 'fake-loose' \(assay_fake_loose_bench.run\) returned a dict, not a BenchResult"):
        run_benchmark("fake-loose")


def test_an_unknown_benchmark_is_bad_input():
    with pytest.raises(BadInput, match="unknown benchmark 'nope'; known: classify"):
        run_benchmark("nope")


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_bench_declares_that_run_returns_a_bench_result(name):
    """Every registered bench's ``run`` is annotated ``-> BenchResult`` (the same class the CLI
    checks for), takes ``quick`` and builds its result without importing the CLI."""
    module = importlib.import_module(BENCHMARKS[name])
    hints = typing.get_type_hints(module.run)
    assert hints.get("return") is BenchResult, f"{BENCHMARKS[name]}.run is annotated {hints.get('return')!r}"
    assert "quick" in inspect.signature(module.run).parameters
    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {m for m in imported if m == "assay.cli" or m.startswith("assay.cli.")}, f"{BENCHMARKS[name]} imports the CLI"


def test_the_table_shows_each_figure_with_its_unit_target_and_met(monkeypatch, capsys):
    from assay.cli.main import main

    fake = types.ModuleType("assay_fake_table_bench")
    fake.run = lambda quick: BenchResult(
        figures={"rate": 120.0, "p99_ms": 12.5}, units={"rate": "items/s", "p99_ms": "ms", "peer_rate": "items/s"},
        baseline={"peer_rate": 100.0}, targets={"rate": at_least(100), "p99_ms": at_most(10, when="at 1000 rps")})
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    monkeypatch.setitem(BENCHMARKS, "fake-table", fake.__name__)
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["bench", "fake-table"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = lambda name: " ".join(next(line for line in lines if name in line).replace("│", " ").split())  # noqa: E731
    assert row("rate") == "rate 120.0 items/s >= 100 yes"
    assert row("p99_ms") == "p99_ms 12.5 ms <= 10 (at 1000 rps) NO"
    assert row("baseline: peer_rate") == "baseline: peer_rate 100.0 items/s"
