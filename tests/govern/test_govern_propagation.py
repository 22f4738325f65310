"""The vectorised propagation agrees with the obvious per-node version on random DAGs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assay.govern.propagation import (
    GraphBuilder,
    LineageCycle,
    ancestry,
    live_restrictions,
    path_to,
    propagate,
    propagate_naive,
    topological_levels,
)

PURPOSES = ["ads", "recommendation", "research", "safety_classification"]
RESTRICTIONS = ["contains_minors", "research_only", "region=eu"]


@st.composite
def dags(draw, max_n: int = 30):
    n = draw(st.integers(1, max_n))
    b = GraphBuilder()
    for i in range(n):
        b.node(f"a{i}", draw(st.sets(st.sampled_from(PURPOSES))), draw(st.sets(st.sampled_from(RESTRICTIONS), max_size=2)),
               declares_purposes=draw(st.booleans()))
    for i in range(1, n):
        for p in draw(st.sets(st.integers(0, i - 1), max_size=3)):
            b.edge(f"a{p}", f"a{i}", draw(st.sets(st.sampled_from(RESTRICTIONS), max_size=1)), run=f"r{i}")
    return b.build()


@settings(max_examples=40, deadline=None)
@given(dags())
def test_vectorised_propagation_equals_naive(graph):
    terms = propagate(graph)
    allowed, restr = propagate_naive(graph)
    for i in range(graph.n):
        assert graph.purposes.decode(terms.allowed[i]) == sorted(allowed[i])
        assert graph.restrictions.decode(terms.restrictions[i]) == sorted(restr[i])


@settings(max_examples=30, deadline=None)
@given(dags(max_n=10))  # the oracle enumerates every path, exponential in depth
def test_live_restrictions_match_path_enumeration(graph):
    target = graph.n - 1
    terms = propagate(graph)
    live = live_restrictions(graph, target, terms.level)
    preds: dict[int, list[tuple[int, int]]] = {}
    for k, (p, c) in enumerate(zip(graph.parents.tolist(), graph.children.tolist(), strict=True)):
        preds.setdefault(c, []).append((p, k))
    expected: dict[int, set[str]] = {}

    def walk(node: int, alive: frozenset[str]) -> None:
        expected[node] = expected.get(node, set()) | alive
        for p, k in preds.get(node, []):
            walk(p, alive - set(graph.restrictions.decode(graph.edge_lift[k])))

    walk(target, frozenset(graph.restrictions.names))
    assert set(expected) == set(ancestry(graph, target).tolist())
    for node, alive in expected.items():
        assert set(graph.restrictions.decode(live[node])) == alive


def test_intersection_union_and_lift_semantics():
    b = GraphBuilder()
    b.node("ml", ["recommendation", "research"], [])
    b.node("dv", ["safety_classification", "research"], ["research_only"])
    b.node("kids", ["recommendation"], ["contains_minors"])
    b.node("anon", [], [], declares_purposes=False)
    b.node("model", [], [], declares_purposes=False)
    b.node("narrow", ["research"], [], declares_purposes=True)
    b.edge("ml", "model")
    b.edge("dv", "model")
    b.edge("kids", "anon", ["contains_minors"], run="anonymise")
    b.edge("anon", "model")
    b.edge("model", "narrow")
    g = b.build()
    t = propagate(g)
    i = g.index["model"]
    assert g.purposes.decode(t.allowed[i]) == []  # ml ∩ dv ∩ kids share nothing
    assert g.restrictions.decode(t.restrictions[i]) == ["research_only"]  # contains_minors lifted
    assert g.restrictions.decode(t.restrictions[g.index["anon"]]) == []
    assert g.purposes.decode(t.allowed[g.index["anon"]]) == ["recommendation"]
    assert g.purposes.decode(t.allowed[g.index["narrow"]]) == []  # narrowing never widens
    assert path_to(g, g.index["narrow"], g.index["kids"]) == ["narrow", "model", "anon", "run:anonymise", "kids"]


def test_cycle_is_reported_with_its_members():
    b = GraphBuilder()
    for x in "abcd":
        b.node(x)
    b.edge("a", "b")
    b.edge("b", "c")
    b.edge("c", "d")
    b.edge("d", "b")
    g = b.build()
    with pytest.raises(LineageCycle) as e:
        topological_levels(g)
    assert set(e.value.cycle) == {"b", "c", "d"} and e.value.cycle[0] == e.value.cycle[-1]
    assert "cycle" in e.value.render()
    terms = propagate(g)  # a read never raises: the same definitions as a fixpoint, the cycle named
    assert terms.cycle == e.value.cycle and list(terms.level) == [0, -1, -1, -1]


def test_many_words_of_bits():
    b = GraphBuilder()
    names = [f"p{i}" for i in range(150)]
    b.node("root1", names[:140], [f"r{i}" for i in range(70)])
    b.node("root2", names[10:], [f"r{i}" for i in range(65, 130)])
    b.node("child", declares_purposes=False)
    b.edge("root1", "child", ["r0", "r129"])
    b.edge("root2", "child")
    g = b.build()
    assert g.own_purposes.shape[1] == 3
    t = propagate(g)
    assert g.purposes.decode(t.allowed[2]) == sorted(names[10:140])
    assert g.restrictions.decode(t.restrictions[2]) == sorted({f"r{i}" for i in range(1, 130)})
    assert np.all(t.level == np.array([0, 0, 1]))
