"""``assay bench govern`` (also ``lineage``): purpose/restriction propagation over a synthetic 100,000-asset lineage
graph and a deployment gate check over a 10,000-node ancestry, each beside the naive version
(Python sets, one node at a time; the policy evaluated once per upstream dataset) in the same run.

The graph: 20% of assets are sources whose terms come from a handful of consent templates (as
real data sources share standard terms), every derived asset has 1-3 inputs drawn from the
previous 5,000, 10% of derived assets narrow their purposes, and 2% of edges are runs of an
approved transformation that lifts one restriction. The gate check runs on a separate component
of 10,000 assets that all lie upstream of one model: ``gate_check_ms`` on the in-memory lineage
index, ``gate_check_db_ms`` the same check through a SQLite registry as ``check_deployment`` runs it
(lineage index current), ``gate_check_db_cold_ms`` when the index must first be rebuilt.

Figures (``BenchResult``, seconds or ms, CPU time beside wall time): ``propagation_s`` (target
<= 1 s), ``gate_check_ms`` (target <= 50 ms), ``gate_check_deny_ms``, ``gate_check_db_ms``,
``gate_check_db_cold_ms`` and the speed-ups over the naive versions (x). Baseline:
``naive_propagation_s``, ``naive_gate_check_ms``. ``detail.checks`` says the vectorised and
naive verdicts agree.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from assay.records import BenchResult, at_most

from .propagation import (
    LineageGraph,
    Vocab,
    ancestry,
    ancestry_with_edges,
    propagate,
    propagate_naive,
    subgraph,
)

PURPOSES = ["recommendation", "research", "safety_classification", "ads", "search", "analytics",
            "personalisation", "moderation", "fraud", "support", "marketing", "training"]
RESTRICTIONS = ["contains_minors", "research_only", "region=eu", "region=us", "consent_scope=research",
                "retention_days=30", "retention_days=365", "pii", "licence=cc-by-nc", "export_controlled"]
BUNDLE = Path(__file__).with_name("default_bundle.yaml")


def _bits(vocab: Vocab, names: list[str]) -> np.ndarray:
    return vocab.encode(names, 1)


def synthetic_graph(n: int, component: int, seed: int = 7, window: int = 5000) -> tuple[LineageGraph, int]:
    """``n`` assets; the last ``component`` of them form a separate lineage that all feeds the
    final asset (the model to deploy). Returns the graph and that model's index."""
    rng = np.random.default_rng(seed)
    pv, rv = Vocab(), Vocab()
    for p in PURPOSES:
        pv.add(p)
    for r in RESTRICTIONS:
        rv.add(r)
    templates_p = np.array([_bits(pv, t)[0] for t in (
        ["recommendation", "research", "analytics"], ["recommendation", "research", "personalisation", "search"],
        ["recommendation", "research"], ["recommendation", "ads", "marketing", "research"],
        ["recommendation", "research", "training", "support"], ["recommendation", "research", "moderation"],
        ["recommendation", "research", "safety_classification"], ["recommendation", "research", "fraud"])])
    templates_r = np.array([_bits(rv, t)[0] for t in (
        [], [], [], ["region=eu"], ["retention_days=365"], ["contains_minors"], ["pii"], ["region=eu", "pii"])])
    is_root = rng.random(n) < 0.2
    main, comp_start = n - component, n - component
    is_root[0] = is_root[comp_start] = True
    is_root[n - 1] = False
    own_p = np.zeros((n, 1), dtype=np.uint64)
    own_r = np.zeros((n, 1), dtype=np.uint64)
    roots = np.flatnonzero(is_root)
    own_p[roots, 0] = templates_p[rng.integers(0, len(templates_p), roots.size)]
    own_r[roots, 0] = templates_r[rng.integers(0, len(templates_r), roots.size)]
    declares = is_root.copy()
    narrowing = (~is_root) & (rng.random(n) < 0.1)
    declares |= narrowing
    own_p[narrowing, 0] = ~np.uint64(0)  # narrowing to "anything the inputs allow" keeps the check meaningful
    parents, children = [], []
    for lo, hi in ((0, main), (comp_start, n)):
        derived = np.flatnonzero(~is_root[lo:hi]) + lo
        derived = derived[derived > lo]
        k = rng.integers(1, 4, derived.size)
        child = np.repeat(derived, k)
        span = np.minimum(child - lo, window)
        parent = child - 1 - (rng.random(child.size) * span).astype(np.int64)
        parents.append(parent)
        children.append(child)
    parents_a = np.concatenate(parents)
    children_a = np.concatenate(children)
    pairs = np.unique(np.stack([parents_a, children_a], axis=1), axis=0)
    # every asset of the component lies upstream of the model: link its sinks to it
    has_child = np.zeros(n, dtype=bool)
    has_child[pairs[:, 0]] = True
    sinks = np.flatnonzero(~has_child[comp_start:n - 1]) + comp_start
    pairs = np.concatenate([pairs, np.stack([sinks, np.full(sinks.size, n - 1)], axis=1)])
    lift = np.zeros((len(pairs), 1), dtype=np.uint64)
    lifting = rng.random(len(pairs)) < 0.02
    lift[lifting, 0] = np.uint64(1) << rng.integers(0, len(RESTRICTIONS), int(lifting.sum())).astype(np.uint64)
    graph = LineageGraph(
        ids=[f"asset-{i}" for i in range(n)], parents=pairs[:, 0].astype(np.int64), children=pairs[:, 1].astype(np.int64),
        own_purposes=own_p, declares_purposes=declares, own_restrictions=own_r, edge_lift=lift,
        edge_run=[""] * len(pairs), purposes=pv, restrictions=rv)
    return graph, n - 1


def gate_check(graph: LineageGraph, target: int, bundle: Any, deployment: dict[str, Any]):
    """What ``check_deployment`` does on the lineage: ancestry, propagation, per-dataset policy."""
    from .gate import evaluate_lineage

    nodes, edges = ancestry_with_edges(graph, target)
    sub = subgraph(graph, nodes, edges)
    return evaluate_lineage(sub, int(np.searchsorted(nodes, target)), bundle, deployment)


def gate_check_naive(graph: LineageGraph, target: int, bundle: Any, deployment: dict[str, Any]) -> bool:
    """Baseline: Python-set propagation of the ancestry, the policy once per upstream dataset."""
    nodes = ancestry(graph, target)
    sub = subgraph(graph, nodes)
    allowed, restrictions = propagate_naive(sub)
    t = int(np.searchsorted(nodes, target))
    ok = deployment["purpose"] in allowed[t]
    roots = set(range(sub.n)) - set(sub.children.tolist())
    for i in sorted(roots):
        verdict = bundle.check_purposes({"dataset": {"purposes": sorted(allowed[i]), "restrictions": sorted(restrictions[i])},
                                         "deployment": deployment})
        ok = ok and verdict.allowed
    return ok


def db_gate_check(graph: LineageGraph, target: int, bundle: Any, deployment: dict[str, Any],
                  repeats: int) -> dict[str, float]:
    """The same ancestry stored in a SQLite registry, checked the way ``check_deployment`` does:
    the lineage index (rebuilt after a lineage change: "cold"; reused otherwise: "warm"), then the
    same evaluation."""
    import tempfile
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from assay.store import open_store
    from assay.store.schema import Asset, Run, RunIO

    from .gate import evaluate_lineage
    from .lineage import _INDEX, governed

    nodes, edges = ancestry_with_edges(graph, target)
    sub = subgraph(graph, nodes, edges)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="assay-bench-") as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        roots = np.ones(sub.n, dtype=bool)
        roots[sub.children] = False
        with store.engine.begin() as conn:
            conn.execute(sa.insert(Asset), [
                {"id": sub.ids[i], "kind": "dataset" if roots[i] else "model", "namespace": "assay", "name": sub.ids[i],
                 "version": 1, "purposes": sub.purposes.decode(sub.own_purposes[i]) if sub.declares_purposes[i] else [],
                 "restrictions": sub.restrictions.decode(sub.own_restrictions[i]), "spec": {}, "created_by": "bench",
                 "created_at": now} for i in range(sub.n)])
            kids = np.unique(sub.children).tolist()
            conn.execute(sa.insert(Run), [{"id": f"run-{k}", "job_namespace": "assay", "job_name": "derive", "kind": "train",
                                           "state": "COMPLETE", "facets": {}, "created_by": "bench", "created_at": now,
                                           "event_time": now} for k in kids])
            conn.execute(sa.insert(RunIO), [{"run_id": f"run-{k}", "asset_id": sub.ids[k], "direction": "output"} for k in kids]
                         + [{"run_id": f"run-{c}", "asset_id": sub.ids[p], "direction": "input"}
                            for p, c in zip(sub.parents.tolist(), sub.children.tolist(), strict=True)])
        model_id = graph.ids[target]

        def check(cold: bool):
            if cold:
                _INDEX.pop(store.url, None)  # as after any lineage change
            with store.session() as s:
                anc = governed(store, s, model_id)
            return evaluate_lineage(anc.graph, anc.target, bundle, deployment, ancestry=anc)

        cpu: list[float] = []
        cold, _ = _median_ms(lambda: check(True), repeats, cpu)
        warm, _ = _median_ms(lambda: check(False), repeats * 3, cpu)
        store.close()
    return {"gate_check_db_ms": round(warm, 2), "gate_check_db_cpu_ms": round(cpu[1], 2),
            "gate_check_db_cold_ms": round(cold, 1), "gate_check_db_cold_cpu_ms": round(cpu[0], 1)}


def _median_ms(fn, repeats: int, cpu: list[float] | None = None) -> tuple[float, Any]:
    """Median wall-clock milliseconds; with ``cpu``, the median process CPU ms is appended to it
    (on a shared machine the two differ by how long the process waited for a core)."""
    times, cpu_times, out = [], [], None
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        out = fn()
        times.append((time.perf_counter() - started) * 1000)
        cpu_times.append((time.process_time() - cpu_started) * 1000)
    if cpu is not None:
        cpu.append(statistics.median(cpu_times))
    return statistics.median(times), out


def run(quick: bool = False) -> BenchResult:
    from assay.policy import load_bundle

    n, component = (20_000, 2_000) if quick else (100_000, 10_000)
    graph, model = synthetic_graph(n, component)
    bundle = load_bundle(BUNDLE)
    allow = {"purpose": "recommendation", "surface": "for_you", "region": "eu", "environment": "production"}
    deny = dict(allow, purpose="ads")

    propagate(graph)  # warm-up (numpy import paths, allocation)
    cpu: list[float] = []
    prop_ms, terms = _median_ms(lambda: propagate(graph), 3 if quick else 5, cpu)
    naive_started = time.perf_counter()
    naive_allowed, _ = propagate_naive(graph)
    naive_prop_s = time.perf_counter() - naive_started
    mismatches = sum(graph.purposes.decode(terms.allowed[i]) != sorted(naive_allowed[i]) for i in range(0, n, 97))

    gate_check(graph, model, bundle, allow)
    gate_ms, verdict = _median_ms(lambda: gate_check(graph, model, bundle, allow), 5 if quick else 15, cpu)
    deny_ms, denied = _median_ms(lambda: gate_check(graph, model, bundle, deny), 3 if quick else 7)
    db = db_gate_check(graph, model, bundle, allow, 2 if quick else 3)
    naive_gate_ms, naive_ok = _median_ms(lambda: gate_check_naive(graph, model, bundle, allow), 1 if quick else 3)
    figures = {
        "propagation_s": round(prop_ms / 1000, 4),
        "gate_check_ms": round(gate_ms, 2),
        "gate_check_deny_ms": round(deny_ms, 2),
        "propagation_cpu_s": round(cpu[0] / 1000, 4),
        "gate_check_cpu_ms": round(cpu[1], 2),
        **db,
        "propagation_speedup_vs_naive": round(naive_prop_s / (prop_ms / 1000), 1),
        "gate_speedup_vs_naive": round(naive_gate_ms / gate_ms, 1),
    }
    units = {k: ("s CPU" if k.endswith("_cpu_s") else "ms CPU" if k.endswith("_cpu_ms") else "s" if k.endswith("_s")
                 else "ms" if k.endswith("_ms") else "x") for k in figures}
    return BenchResult(
        figures=figures,
        baseline={"naive_propagation_s": round(naive_prop_s, 3), "naive_gate_check_ms": round(naive_gate_ms, 2)},
        units={**units, "naive_propagation_s": "s", "naive_gate_check_ms": "ms"},
        targets={"propagation_s": at_most(1.0, when=f"{n:,} assets"), "gate_check_ms": at_most(50.0, when=f"{component:,}-node ancestry")},
        measures={
            "propagation_s": "purposes and restrictions propagated over the whole graph (vectorised), median wall",
            "gate_check_ms": "one deployment gate check on the in-memory lineage index, median wall",
            "gate_check_db_ms": "the same check through a SQLite registry as check_deployment runs it (index current)",
            "gate_check_db_cold_ms": "the same when the lineage index must first be rebuilt",
        },
        detail={
            "graph": {"assets": n, "edges": int(graph.parents.size), "ancestry": verdict.ancestry_size,
                      "levels": int(terms.level.max()) + 1, "policy_contexts": verdict.contexts_evaluated},
            "checks": {"vectorised_equals_naive_on_sample": mismatches == 0, "allowed_case_allowed": verdict.allowed,
                       "naive_agrees": naive_ok == verdict.allowed, "deny_case_denied": not denied.allowed,
                       "deny_paths": sum(1 for d in denied.denials if d.get("path"))},
        },
    )
