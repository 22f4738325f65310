"""Property test (issue #25): random lineage graphs, built through the real registry (dataset
versions and consent withdrawals, diamonds, models trained on models, restriction-lifting
transformations, attempts to close cycles with new and reused run ids), and every reader compared
with a brute-force reference: the deployment gate, ``lineage why``, ``lineage show``, the BOM and
the dashboard's lineage data.

The reference below is written from docs/govern.md alone and uses no code of ``assay.govern``: it
keeps the assets and edges it asked the registry to record, and answers every question by
enumerating all paths. The default bundle's three purpose rules are written out in Python too.
"""

from __future__ import annotations

import itertools
import os
import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
import sqlalchemy as sa

from assay.govern.bom import export_bom
from assay.govern.gate import approve_deployment, check_deployment, request_deployment
from assay.govern.lineage import overview, show, why
from assay.govern.propagation import LineageCycle
from assay.govern.registry import (
    Actor,
    approve_transformation,
    record_run,
    register_dataset,
    register_model,
    register_transformation,
)
from assay.store import open_store
from assay.store.schema import RunIO

PURPOSES = ["ads", "recommendation", "research"]
RESTRICTIONS = ["contains_minors", "research_only", "region=eu"]
ENGINEER = Actor("erin", "engineer", "test")
ALICE = Actor("alice", "approver", "test")
LINEAGE_RULES = {"assay:purpose-limitation", "assay:lineage-cycle", "default-deny", "purpose-in-scope",
                 "research-only-stays-in-research", "minors-data-not-for-ads", "eu-minors-off-the-feed"}
SEEDS = int(os.environ.get("ASSAY_PROPERTY_SEEDS", "30"))


# ---------------------------------------------------------------- the reference (docs/govern.md)


EXTRA_RULE = """
  - id: eu-minors-off-the-feed
    when: '"region=eu" in dataset.restrictions && "contains_minors" in dataset.restrictions && deployment.surface == "feed"'
    effect: deny
    reason: a rule that needs two restrictions at once
"""


def bundle_rules(purposes: set[str], restrictions: set[str], deployment: dict[str, str]) -> set[str]:
    """default_bundle.yaml's purposes section plus EXTRA_RULE: deny rules beat allows; deny by default."""
    deny = set()
    if {"region=eu", "contains_minors"} <= restrictions and deployment["surface"] == "feed":
        deny.add("eu-minors-off-the-feed")
    if "research_only" in restrictions and deployment["surface"] != "research":
        deny.add("research-only-stays-in-research")
    if "contains_minors" in restrictions and deployment["purpose"] == "ads":
        deny.add("minors-data-not-for-ads")
    if deny:
        return deny
    return set() if deployment["purpose"] in purposes else {"default-deny"}


@dataclass(eq=False)  # hashed by identity, for the path caches
class Reference:
    assets: dict[str, dict] = field(default_factory=dict)  # id -> kind, name, version, purposes, restrictions, withdrawal
    edges: set[tuple[str, str, str]] = field(default_factory=set)  # (input, output, run id)
    lifts: dict[str, set[str]] = field(default_factory=dict)  # run id -> restrictions its transformation lifted
    runs: dict[str, tuple[set[str], set[str]]] = field(default_factory=dict)  # run id -> (inputs, outputs)

    def __repr__(self) -> str:
        return f"Reference({len(self.assets)} assets, {len(self.edges)} edges)"

    def add_run(self, run_id: str, inputs, outputs, lifted=frozenset()) -> None:
        ins, outs = self.runs.setdefault(run_id, (set(), set()))
        ins.update(inputs)
        outs.update(outputs)
        self.lifts.setdefault(run_id, set(lifted))
        self.edges |= {(i, o, run_id) for i in ins for o in outs}
        self.freeze()

    def freeze(self) -> None:
        for f in (self.paths, self.upstream):
            f.cache_clear()

    def governing(self, a: str) -> tuple[set[str], set[str]]:
        """A dataset version narrowed by every withdrawal of the same dataset with a higher version."""
        x = self.assets[a]
        purposes, restrictions = set(x["purposes"]), set(x["restrictions"])
        if x["kind"] == "dataset":
            for w in self.assets.values():
                if w["kind"] == "dataset" and w["name"] == x["name"] and w["version"] > x["version"] and w["withdrawal"]:
                    purposes &= w["purposes"]
                    restrictions |= w["restrictions"]
        return purposes, restrictions

    def parents(self, x: str) -> list[tuple[str, str]]:
        return sorted((p, r) for p, c, r in self.edges if c == x)

    def declares(self, a: str) -> bool:
        return self.assets[a]["kind"] == "dataset" or bool(self.assets[a]["purposes"]) or not self.parents(a)

    @cache  # noqa: B019 - cleared by freeze() whenever an edge is added
    def paths(self, src: str, dst: str) -> tuple[tuple[tuple[str, str, str], ...], ...]:
        """Every path src -> dst as its edges, enumerated."""
        if src == dst:
            return ((),)
        out = []
        for p, run in self.parents(dst):
            out.extend((*path, (p, dst, run)) for path in self.paths(src, p))
        return tuple(out)

    @cache  # noqa: B019
    def upstream(self, x: str) -> frozenset[str]:
        return frozenset({x}.union(*(self.upstream(p) for p, _ in self.parents(x))))

    def carried_on(self, path, restrictions) -> bool:
        return all(r not in self.lifts[run] for _, _, run in path for r in restrictions)

    def reaches(self, a: str, x: str, restrictions) -> bool:
        return any(self.carried_on(path, restrictions) for path in self.paths(a, x))

    def effective_purposes(self, x: str) -> set[str]:
        out = set(PURPOSES) | {p for a in self.assets for p in self.assets[a]["purposes"]}
        for a in self.upstream(x):
            if self.declares(a):
                out &= self.governing(a)[0]
        return out

    def effective_restrictions(self, x: str) -> set[str]:
        return {r for a in self.upstream(x) for r in self.governing(a)[1] if self.reaches(a, x, [r])}

    def surviving(self, a: str, x: str) -> set[str]:
        return {r for r in self.governing(a)[1] if self.reaches(a, x, [r])}

    def blockers(self, x: str, purpose: str) -> set[str]:
        return {a for a in self.upstream(x) if self.declares(a) and purpose not in self.governing(a)[0]}

    def sources(self, x: str, restriction: str) -> set[str]:
        return {a for a in self.upstream(x) if restriction in self.governing(a)[1] and self.reaches(a, x, [restriction])}

    def distance(self, x: str, a: str) -> int:
        return min(len(p) for p in self.paths(a, x))

    def gate_rules(self, x: str, deployment: dict[str, str]) -> set[str]:
        """The lineage rules that deny deploying ``x`` (empty: the lineage allows it)."""
        rules = {"assay:purpose-limitation"} if self.blockers(x, deployment["purpose"]) else set()
        contexts = [(self.effective_purposes(x), self.effective_restrictions(x))]
        for a in self.upstream(x) - {x}:
            survive = self.surviving(a, x)
            if not self.parents(a) or survive:
                contexts.append((self.effective_purposes(a), survive))
        for purposes, restrictions in contexts:
            rules |= bundle_rules(purposes, restrictions, deployment)
        return rules

    def closes_cycle(self, run_id: str | None, inputs, outputs) -> bool:
        ins, outs = set(inputs), set(outputs)
        if run_id in self.runs:
            ins |= self.runs[run_id][0]
            outs |= self.runs[run_id][1]
        return any(o in self.upstream(i) for i in ins for o in outs)

    # -- checks of what the engine says

    def check_path(self, path: list[str], start: str, end: str, carrying=(), extra_edges=frozenset()) -> None:
        """``path`` is [start, run:…, asset, …, end] along real edges, crossing no run that lifted ``carrying``."""
        assert path[0] == start and path[-1] == end, (path, start, end)
        nodes, runs = path[0::2], path[1::2]
        assert len(nodes) == len(runs) + 1 and all(r.startswith("run:") for r in runs), path
        for child, label, parent in zip(nodes, runs, nodes[1:], strict=False):
            run = label[4:].rsplit("(", 1)[-1].rstrip(")")
            assert (parent, child, run) in self.edges | extra_edges, (path, parent, child, run)
            assert not set(carrying) & self.lifts.get(run, set()), (path, carrying, run)


# ---------------------------------------------------------------- building a random registry


def _file(tmp, name: str) -> str:
    path = tmp / name
    path.write_bytes(name.encode())
    return str(path)


def _producer(store, asset_id: str) -> str:
    with store.session() as s:
        return s.scalar(sa.select(RunIO.run_id).where(RunIO.asset_id == asset_id, RunIO.direction == "output"))


def build(rng: random.Random, store, tmp) -> Reference:
    """Sources with versions (some withdrawals), two approved lifting transformations, 2-9 derived
    assets each reading 1-3 earlier ones (most through a lifting run), later versions, then
    attempts to close cycles."""
    ref = Reference()

    def subset(items, most: int) -> set[str]:
        return set(rng.sample(items, rng.randint(0, most)))

    def add_version(name: str, withdrawal: bool) -> None:
        purposes, restrictions = subset(PURPOSES, 3), subset(RESTRICTIONS, 2)
        version = 1 + sum(a["name"] == name for a in ref.assets.values())
        out = register_dataset(store, ENGINEER, name=name, uri=_file(tmp, f"{name}-{version}.csv"), purposes=purposes,
                               restrictions=restrictions, withdrawal="consent withdrawn" if withdrawal else None)
        ref.assets[out["id"]] = {"kind": "dataset", "name": name, "version": version, "purposes": purposes,
                                 "restrictions": restrictions, "withdrawal": withdrawal}
        ref.freeze()

    names = [f"src{i}" for i in range(rng.randint(1, 3))]
    for name in names:
        for v in range(rng.randint(1, 2)):
            add_version(name, withdrawal=v > 0 and rng.random() < 0.5)
    transformations = {}
    for k in range(2):
        lifted = subset(RESTRICTIONS, 2) or {RESTRICTIONS[k]}
        t = register_transformation(store, ENGINEER, name=f"lift{k}", lifts=sorted(lifted))
        approve_transformation(store, ALICE, t["id"])
        transformations[t["id"]] = lifted

    for step in range(rng.randint(2, 9)):
        kind = rng.choice(["model", "dataset"])
        # derived datasets mostly read sources and models mostly read derived assets: diamonds
        # (source -> two derived datasets, one through a lifting run -> a model) are common
        pool = sorted(a for a in ref.assets if bool(ref.parents(a)) == (kind == "model")) or sorted(ref.assets)
        inputs = rng.sample(pool, min(len(pool), rng.randint(1, 3)))
        if rng.random() < 0.3:
            inputs = sorted(set(inputs) | {rng.choice(sorted(ref.assets))})
        transformation = rng.choice([None, *sorted(transformations)])
        purposes = subset(PURPOSES, 3) if kind == "dataset" or rng.random() < 0.5 else set()
        restrictions = rng.choice([set(), set(), set(), *({r} for r in RESTRICTIONS)])
        if kind == "model":
            out = register_model(store, ENGINEER, name=f"m{step}", weights=[_file(tmp, f"m{step}.bin")], trained_on=inputs,
                                 purposes=purposes, restrictions=restrictions, transformation=transformation)
            run_id = _producer(store, out["id"])
        else:
            out = register_dataset(store, ENGINEER, name=f"d{step}", uri=_file(tmp, f"d{step}.csv"), purposes=purposes,
                                   restrictions=restrictions)
            run_id = record_run(store, ENGINEER, job_name=f"derive{step}", inputs=inputs, outputs=[out["id"]],
                                transformation_id=transformation)["id"]
        ref.assets[out["id"]] = {"kind": kind, "name": f"{kind[0]}{step}", "version": 1, "purposes": purposes,
                                 "restrictions": restrictions, "withdrawal": False}
        ref.add_run(run_id, inputs, [out["id"]], transformations.get(transformation, set()))

    for _ in range(rng.randint(0, 2)):  # later versions: models were trained on the older ones
        add_version(rng.choice(names), withdrawal=rng.random() < 0.5)

    for _ in range(rng.randint(0, 3)):
        attempt_cycle(rng, store, ref)
    return ref


def attempt_cycle(rng: random.Random, store, ref: Reference) -> None:
    """A run write that may or may not close a cycle: refused exactly when the reference says so,
    with a cycle along real edges (plus the ones the write would add), and nothing written."""
    produced = {o for _, outs in ref.runs.values() for o in outs}
    unproduced = sorted(set(ref.assets) - produced)
    run_id = rng.choice(sorted(ref.runs)) if ref.runs and rng.random() < 0.6 else None
    if run_id is not None and rng.random() < 0.5:  # reuse a run id: all its inputs link to all its outputs
        outputs = [rng.choice(sorted(ref.runs[run_id][1]))]
    else:  # a new output, for a new run or for a reused one (then every earlier input reads into it too)
        outputs = [rng.choice(unproduced)]
    inputs = [rng.choice(sorted(ref.assets))]
    expected = ref.closes_cycle(run_id, inputs, outputs)
    edges_before = set(ref.edges)
    try:
        run = record_run(store, ENGINEER, job_name="attempt", inputs=inputs, outputs=outputs, run_id=run_id)
    except LineageCycle as e:
        assert expected, f"refused an acyclic write: {inputs} -> {outputs} in {run_id}: {e.cycle}"
        closing = e.cycle[-2][4:]
        ins, outs = ref.runs.get(closing, (set(), set()))
        ins, outs = ins | set(inputs), outs | set(outputs)
        ref.check_path(e.cycle[::-1], e.cycle[-1], e.cycle[0], extra_edges={(i, o, closing) for i in ins for o in outs})
        assert e.cycle[0] == e.cycle[-1]
        return
    assert not expected, f"accepted a write that closes a cycle: {inputs} -> {outputs} in {run_id}"
    ref.add_run(run["id"], inputs, outputs)
    assert ref.edges >= edges_before


# ---------------------------------------------------------------- comparing every reader


def compare(store, ref: Reference, rng: random.Random) -> None:
    for a in ref.assets:
        assert show(store, a)["effective"] == {"purposes": sorted(ref.effective_purposes(a)),
                                               "restrictions": sorted(ref.effective_restrictions(a))}, a
    board = {row["id"]: row for row in overview(store)["assets"]}
    for a in ref.assets:
        assert (board[a]["purposes"], board[a]["restrictions"]) == (
            sorted(ref.effective_purposes(a)), sorted(ref.effective_restrictions(a))), a
    models = sorted(a for a in ref.assets if ref.assets[a]["kind"] == "model")
    derived = sorted(a for a in ref.assets if ref.parents(a) and a not in models)
    picked = rng.sample(models, min(len(models), 3)) + rng.sample(derived, min(len(derived), 1))
    for x in picked:
        compare_why(store, ref, x)
        if ref.assets[x]["kind"] == "model":
            compare_bom(store, ref, x)
            uses = [(p, surface) for p in PURPOSES for surface in ("feed", "research")]
            for purpose, surface in rng.sample(uses, 4):
                compare_gate(store, ref, x, {"purpose": purpose, "surface": surface})


def compare_why(store, ref: Reference, x: str) -> None:
    for purpose, restriction in zip(PURPOSES, RESTRICTIONS, strict=True):
        out = why(store, x, purpose=purpose, restriction=restriction)
        blockers = ref.blockers(x, purpose)
        assert out["purpose"]["allowed"] == (not blockers) == (purpose in ref.effective_purposes(x))
        assert {b["asset"] for b in out["purpose"]["blocked_by"]} == blockers
        for b in out["purpose"]["blocked_by"]:
            assert b["allows"] == sorted(ref.governing(b["asset"])[0])
            ref.check_path(b["path"], x, b["asset"])
        r = out["restriction"]
        assert r["carried"] == (restriction in ref.effective_restrictions(x))
        assert {f["asset"] for f in r["from"]} == ref.sources(x, restriction)
        for f in r["from"]:
            ref.check_path(f["path"], x, f["asset"], carrying=[restriction])
        lifted = {run for _, child, run in ref.edges if child in ref.upstream(x) and restriction in ref.lifts[run]}
        assert {entry["run"] for entry in r["lifted_by"]} == lifted


def _props(component) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", [])}


def compare_bom(store, ref: Reference, x: str) -> None:
    bom = export_bom(store, x)
    components = {c["bom-ref"]: _props(c) for c in bom["components"]}
    components[x] = _props(bom["metadata"]["component"])
    assert set(components) == set(ref.upstream(x))

    def joined(values) -> str:
        return ",".join(sorted(values)) or "(none)"

    for a, props in components.items():
        purposes, restrictions = ref.governing(a)
        assert props["assay:purposes"] == joined(purposes) and props["assay:restrictions"] == joined(restrictions), a
        assert props["assay:effective_purposes"] == joined(ref.effective_purposes(a)), a
        assert props["assay:effective_restrictions"] == joined(ref.effective_restrictions(a)), a


def compare_gate(store, ref: Reference, x: str, deployment: dict[str, str]) -> None:
    bundle = Path(store.url.removeprefix("sqlite:///")).with_name("bundle.yaml")
    if not bundle.exists():
        text = BUNDLE.read_text()
        bundle.write_text(text.replace("\ntests:", EXTRA_RULE.rstrip("\n") + "\ntests:", 1))
    dep = request_deployment(store, ENGINEER, model=x, surface=deployment["surface"], purpose=deployment["purpose"],
                             environment="staging", bundle=bundle)["id"]
    approve_deployment(store, ALICE, dep)
    verdict = check_deployment(store, ENGINEER, dep, record=False)
    expected = ref.gate_rules(x, deployment)
    assert {r for r in verdict["deciding"] if r in LINEAGE_RULES and r != "purpose-in-scope"} == expected, verdict["denials"]
    assert verdict["checks"]["purposes"]["allowed"] == (not expected)
    blockers = ref.blockers(x, deployment["purpose"])
    shown = [d for d in verdict["denials"] if d["rule"] == "assay:purpose-limitation" and d["asset"]]
    assert len(shown) == min(5, len(blockers))
    for d in shown:
        assert d["asset"] in blockers
        ref.check_path(d["path"][1:], x, d["asset"])
        assert d["path"][0] == dep
    if shown:
        unshown = blockers - {d["asset"] for d in shown}
        assert not unshown or max(ref.distance(x, d["asset"]) for d in shown) <= min(ref.distance(x, a) for a in unshown)
    for d in verdict["denials"]:
        if "about" not in d:
            continue
        a, about = d["asset"], d["about"]
        assert d["path"][0] == dep and d["rule"] in expected
        purposes = ref.effective_purposes(a)
        restrictions = ref.effective_restrictions(x) if a == x else ref.surviving(a, x)
        assert d["terms"] == {"purposes": sorted(purposes), "restrictions": sorted(restrictions)}
        assert set(about) <= restrictions and d["rule"] in bundle_rules(purposes, set(about), deployment)
        for r in about:  # smallest by removal
            assert d["rule"] not in bundle_rules(purposes, set(about) - {r}, deployment)
        for r in about:
            source = d["paths"][r][-1]
            assert r in ref.governing(source)[1]
            ref.check_path(d["paths"][r][1:], x, source, carrying=[r])
        if a == x:
            assert d["path"] == [dep, x]
        elif ref.reaches(a, x, about):
            ref.check_path(d["path"][1:], x, a, carrying=about)
        else:
            assert d["path"] == d["paths"][about[0]]


BUNDLE = Path(__file__).resolve().parents[2] / "src" / "assay" / "govern" / "default_bundle.yaml"


def _one_registry(seed: int, tmp) -> None:
    rng = random.Random(seed)
    store = open_store(f"sqlite:///{tmp}/assay.db")
    try:
        compare(store, build(rng, store, tmp), rng)
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(SEEDS))
def test_every_reader_agrees_with_the_all_paths_reference(seed, tmp_path):
    _one_registry(seed, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(SEEDS, SEEDS + 500))
def test_every_reader_agrees_with_the_all_paths_reference_long(seed, tmp_path):
    _one_registry(seed, tmp_path)


def test_the_reference_is_not_vacuous():
    """The reference itself, on a hand-made case: a lift on one branch of a diamond, a withdrawal."""
    ref = Reference()
    for a, kind, version, purposes, restrictions, withdrawal in [
            ("dataset:s@1", "dataset", 1, {"ads", "research"}, {"contains_minors"}, False),
            ("dataset:s@2", "dataset", 2, {"research"}, set(), True),
            ("dataset:l@1", "dataset", 1, {"ads", "research"}, set(), False),
            ("dataset:r@1", "dataset", 1, {"ads", "research"}, set(), False),
            ("model:m@1", "model", 1, set(), set(), False)]:
        ref.assets[a] = {"kind": kind, "name": a.split(":")[1].split("@")[0], "version": version, "purposes": purposes,
                         "restrictions": restrictions, "withdrawal": withdrawal}
    ref.add_run("lift", ["dataset:s@1"], ["dataset:l@1"], {"contains_minors"})
    ref.add_run("keep", ["dataset:s@1"], ["dataset:r@1"])
    ref.add_run("train", ["dataset:l@1", "dataset:r@1"], ["model:m@1"])
    assert ref.effective_purposes("model:m@1") == {"research"}  # the withdrawal binds s@1
    assert ref.effective_restrictions("model:m@1") == {"contains_minors"}  # through r only
    assert ref.sources("model:m@1", "contains_minors") == {"dataset:s@1"}
    assert len(ref.paths("dataset:s@1", "model:m@1")) == 2
    assert ref.gate_rules("model:m@1", {"purpose": "ads", "surface": "feed"}) == {
        "assay:purpose-limitation", "minors-data-not-for-ads"}
    assert ref.gate_rules("model:m@1", {"purpose": "recommendation", "surface": "research"}) == {
        "assay:purpose-limitation", "default-deny"}
    assert ref.closes_cycle("train", ["model:m@1"], []) and not ref.closes_cycle(None, ["dataset:s@2"], ["dataset:s@1"])
    assert list(itertools.chain(*ref.paths("dataset:s@1", "model:m@1")))
