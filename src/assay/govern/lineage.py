"""Read side of lineage: the one computation of an asset's terms, and what is shown of it.

``governed`` loads an asset's ancestry with every asset's *governing* terms (its own, narrowed by
any later consent withdrawal of the same dataset) and returns a ``propagation.Ancestry``: effective
purposes and restrictions, the assets that block a purpose, the sources of a restriction and paths
that really carry it. The deployment gate, ``lineage show``/``why``, the BOM and the dashboard
(``overview``) all go through it. The rules are written down in docs/govern.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from assay.errors import AssayError
from assay.store import Store
from assay.store.schema import Asset, RestrictionLift, Run, RunIO

from .propagation import (
    Ancestry,
    GraphBuilder,
    LineageGraph,
    ancestry_with_edges,
    propagate,
    subgraph,
)
from .registry import KINDS, ancestry_edges, asset_view, descendant_ids, resolve

# ---------------------------------------------------------------- governing terms


def withdrawals(s: Session, names: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(namespace, name) -> its consent withdrawals, oldest first: the dataset versions registered
    with a withdrawal reason, with their terms and who recorded them when."""
    names = set(names)
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if not names:
        return out
    marker = Asset.spec["withdrawal"]
    query = (sa.select(Asset.id, Asset.namespace, Asset.name, Asset.version, Asset.purposes, Asset.restrictions,
                       Asset.created_by, Asset.created_at, marker.label("withdrawal"))
             .where(Asset.kind == "dataset", marker.is_not(None)).order_by(Asset.version))
    if len(names) <= IN_LIMIT:  # withdrawals are rare: for many names, read them all and filter here
        query = query.where(Asset.name.in_({n for _, n in names}))
    rows = s.execute(query).all()
    for r in rows:
        if (r.namespace, r.name) in names and isinstance(r.withdrawal, dict):
            out.setdefault((r.namespace, r.name), []).append({
                "withdrawal": r.id, "version": r.version, "purposes": sorted(_terms(r.purposes)),
                "restrictions": sorted(_terms(r.restrictions)), "reason": str(r.withdrawal.get("reason", "")),
                "recorded_by": r.created_by, "recorded_at": r.created_at.isoformat() if r.created_at else None})
    return out


def _terms(stored: Any) -> set[str]:
    """Terms as stored, read defensively: whatever older code or another writer left is text."""
    return {str(t) for t in stored} if isinstance(stored, list | tuple) else set()


def governing_terms(s: Session, assets: Sequence[Any]) -> tuple[dict[str, tuple[list[str], list[str], bool]],
                                                                 dict[str, list[dict[str, Any]]]]:
    """asset id -> (purposes, restrictions, declares_purposes), and asset id -> the withdrawals that bind it.

    A dataset version's terms are its own, narrowed by every withdrawal registered after it (its
    purposes intersected with the withdrawal's, the withdrawal's restrictions added); a dataset
    always declares its purposes. Any other asset keeps its own terms and declares purposes exactly
    when it names some. ``assets`` are rows with ``id, kind, namespace, name, version, purposes,
    restrictions`` (ORM objects or Core rows).
    """
    found = withdrawals(s, {(a.namespace, a.name) for a in assets if a.kind == "dataset"})
    terms: dict[str, tuple[list[str], list[str], bool]] = {}
    binding: dict[str, list[dict[str, Any]]] = {}
    for a in assets:
        purposes, restrictions = _terms(a.purposes), _terms(a.restrictions)
        if a.kind == "dataset":
            later = [w for w in found.get((a.namespace, a.name), ()) if w["version"] > a.version]
            for w in later:
                removes, adds = sorted(purposes - set(w["purposes"])), sorted(set(w["restrictions"]) - restrictions)
                purposes &= set(w["purposes"])
                restrictions |= set(w["restrictions"])
                binding.setdefault(a.id, []).append({**w, "removes_purposes": removes, "adds_restrictions": adds})
        terms[a.id] = (sorted(purposes), sorted(restrictions), a.kind == "dataset" or bool(a.purposes))
    return terms, binding


IN_LIMIT = 500  # larger sets are not sent as IN lists (SQLite takes at most 32,766 parameters)
ASSET_COLUMNS = (Asset.id, Asset.kind, Asset.namespace, Asset.name, Asset.version, Asset.purposes, Asset.restrictions)


def _graph(s: Session, edges: list[tuple[str, str, str]], assets: Sequence[Any]) -> LineageGraph:
    """A ``LineageGraph`` of ``assets`` and ``edges`` (input, output, run id) with governing terms
    and the restrictions each run's approved transformation lifted."""
    terms, binding = governing_terms(s, assets)
    run_ids = {e[2] for e in edges}
    lifts: dict[str, list[str]] = {}
    jobs: dict[str, str] = {}
    if run_ids:
        lift_query = sa.select(RestrictionLift.run_id, RestrictionLift.restriction)
        job_query = sa.select(Run.id, Run.job_name)
        if len(run_ids) <= IN_LIMIT:
            lift_query = lift_query.where(RestrictionLift.run_id.in_(run_ids))
            job_query = job_query.where(Run.id.in_(run_ids))
        for run_id, restriction in s.execute(lift_query):
            if run_id in run_ids:
                lifts.setdefault(run_id, []).append(restriction)
        jobs = {rid: job for rid, job in s.execute(job_query) if rid in run_ids}
    builder = GraphBuilder()
    children = {e[1] for e in edges}
    for a in sorted(assets, key=lambda x: x.id):
        purposes, restrictions, declares = terms[a.id]
        builder.node(a.id, purposes, restrictions, declares_purposes=declares or a.id not in children)
    known = set(terms)
    for src, dst, rid in sorted(edges):
        if src in known and dst in known:
            builder.edge(src, dst, lifts.get(rid, ()), run=f"{jobs[rid]} ({rid})" if rid in jobs else rid, run_id=rid)
    graph = builder.build()
    graph.withdrawn = binding
    return graph


def load_graph(s: Session, targets: Sequence[str]) -> LineageGraph:
    """The lineage graph upstream of (and including) ``targets`` (one recursive CTE, then Core
    selects of only the columns needed)."""
    edges = ancestry_edges(s, targets)
    ids = set(targets) | {e[0] for e in edges} | {e[1] for e in edges}
    query = sa.select(*ASSET_COLUMNS)
    if len(ids) <= IN_LIMIT:
        query = query.where(Asset.id.in_(ids))
    return _graph(s, edges, [a for a in s.execute(query) if a.id in ids])


# ---------------------------------------------------------------- a lineage index kept in memory

_INDEX: dict[str, tuple[tuple[Any, ...], LineageGraph]] = {}


def lineage_version(s: Session) -> tuple[Any, ...]:
    """Changes whenever anything the propagation reads changes. Rows are only ever added to these
    tables (assets are versioned, never updated), so counts (with the newest row's time, against
    two stores that happen to share a URL) are a sound version."""
    return tuple(s.execute(sa.select(
        sa.select(sa.func.count()).select_from(RunIO).scalar_subquery(),
        sa.select(sa.func.count()).select_from(RestrictionLift).scalar_subquery(),
        sa.select(sa.func.count()).select_from(Asset).scalar_subquery(),
        sa.select(sa.func.max(Asset.created_at)).scalar_subquery(),
    )).one())


def registry_graph(store: Store, s: Session) -> LineageGraph:
    """Every asset and lineage edge of the registry, from an in-memory index rebuilt only when
    ``lineage_version`` changes (a gate check then costs milliseconds, not a recursive query)."""
    version = lineage_version(s)
    cached = _INDEX.get(store.url)
    if cached is None or cached[0] != version:
        o, i = aliased(RunIO), aliased(RunIO)
        edges = [(r.src, r.dst, r.run_id) for r in s.execute(
            sa.select(i.asset_id.label("src"), o.asset_id.label("dst"), o.run_id.label("run_id")).select_from(o)
            .join(i, sa.and_(i.run_id == o.run_id, i.direction == "input")).where(o.direction == "output"))]
        cached = (version, _graph(s, edges, s.execute(sa.select(*ASSET_COLUMNS)).all()))
        _INDEX[store.url] = cached
    return cached[1]


def ancestry_graph(store: Store, s: Session, target: str) -> LineageGraph:
    """The lineage upstream of ``target``, cut from the registry index."""
    graph = registry_graph(store, s)
    if target not in graph.index:  # registered in this very transaction
        return load_graph(s, [target])
    nodes, edges = ancestry_with_edges(graph, graph.index[target])
    return subgraph(graph, nodes, edges)


def governed(store: Store, s: Session, asset_id: str) -> Ancestry:
    """THE computation: ``asset_id``'s ancestry with governing terms, ready for every question."""
    graph = ancestry_graph(store, s, asset_id)
    return Ancestry(graph, graph.index[asset_id])


# ---------------------------------------------------------------- what is shown


def resolver(store: Store) -> Callable[[str], dict[str, Any]]:
    """``version -> model_link(store, version)``: what the trace's ``why`` answers call to follow a
    decision's recorded model version to the registered model and its training data."""

    def resolve_lineage(version: str) -> dict[str, Any]:
        return model_link(store, version)

    return resolve_lineage


def registry_resolver() -> Callable[[str], dict[str, Any]]:
    """:func:`resolver` on the configured store (``ASSAY_DB_URL`` or the SQLite file under
    ``ASSAY_HOME``); when that store cannot be opened, a resolver that says so for every model
    (the answer names the missing link, never a bare null). What ``assay trace why`` and the
    demo's trace step attach to each decision's models."""
    from assay.store import open_store

    try:
        return resolver(open_store(None))
    except AssayError as e:
        reason = f"the governance registry cannot be opened: {e.message}"

        def unresolved(version: str) -> dict[str, Any]:
            return {"model": None, "training_data": [], "lineage": None, "missing": f"model version: {reason}"}

        return unresolved


def model_link(store: Store, version: str) -> dict[str, Any]:
    """The chain from a model version a decision recorded (``movielens-ref@f86af32470bb``, an
    asset id, ``name@2``) to the registered model and the datasets it was trained on.

    ``{"model": id, "training_data": [dataset ids], "lineage": show(...), "missing": None}`` for a
    whole chain; otherwise ``missing`` names the link that is absent and why (never a bare None)."""
    try:
        view = show(store, version, kind="model")
    except AssayError as e:
        return {"model": None, "training_data": [], "lineage": None,
                "missing": f"model version: {version!r} does not resolve in the registry: {e.message}"}
    model_id = view["asset"]["id"]
    data = [n["id"] for n in view["ancestry"] if n.get("kind") == "dataset"]
    missing = None if data else (
        f"training data: {model_id} has no training run from a registered dataset in the registry "
        "(register the model again with --trained-on DATASET, or send the training run as OpenLineage: `assay lineage ingest`)")
    return {"model": model_id, "training_data": data, "lineage": view, "missing": missing}


def show(store: Store, ref: str, kind: str | None = None) -> dict[str, Any]:
    """The asset, its effective terms (computed now), its ancestry edges and its descendants."""
    with store.session() as s:
        asset = resolve(s, ref, kind)
        anc = governed(store, s, asset.id)
        graph, terms = anc.graph, anc.terms
        kinds = {r.id: r.kind for r in s.execute(sa.select(Asset.id, Asset.kind).where(Asset.id.in_(graph.ids)))} \
            if len(graph.ids) <= IN_LIMIT else {}
        nodes = [{"id": graph.ids[i], "kind": kinds.get(graph.ids[i]) or _kind_of(graph.ids[i]), "purposes": anc.purposes(i), "restrictions": anc.restrictions(i),
                  "level": int(terms.level[i]), **({"withdrawn_by": w} if (w := anc.withdrawn_by(i)) else {})}
                 for i in np.argsort(terms.level, kind="stable").tolist()]
        edges = [{"input": graph.ids[p], "output": graph.ids[c], "run": graph.edge_run[k],
                  "lifts": graph.restrictions.decode(graph.edge_lift[k])}
                 for k, (p, c) in enumerate(zip(graph.parents.tolist(), graph.children.tolist(), strict=True))]
        out = {"asset": asset_view(s, asset),
               "effective": {"purposes": anc.purposes(), "restrictions": anc.restrictions()},
               "ancestry": nodes, "edges": edges, "descendants": descendant_ids(s, asset.id)}
        if anc.cycle:
            out["cycle"] = anc.cycle
        return out


def _kind_of(asset_id: str) -> str:
    """The kind an asset id names (``model:ranker@2``), for ancestries too large to look up."""
    head = asset_id.split(":", 1)[0]
    return head if head in KINDS else ""


MAX_PATH_STEPS = 10_000
"""Asset ids over all the paths one ``why`` answer gives. Every blocker (and source) is listed,
nearest first, with its path while the paths fit: in a chain of N assets each of N blockers has a
path of up to N ids (47 MB of answer at N = 1,100); past the budget an entry has ``path_omitted``."""


class _PathBudget:
    """Shortest paths for one answer, nearest first, until ``MAX_PATH_STEPS`` ids are spent."""

    def __init__(self, anc: Ancestry):
        self.anc, self.left = anc, MAX_PATH_STEPS

    def __call__(self, i: int, carrying: Iterable[str] = ()) -> list[str] | None:
        if self.left <= 0:
            return None
        path = self.anc.path(i, carrying) or []
        if len(path) > self.left:
            self.left = 0  # the rest are no nearer: stop computing paths
            return None
        self.left -= len(path)
        return path


def _with_path(out: dict[str, Any], path: list[str] | None) -> dict[str, Any]:
    out["path"] = path if path is not None else []
    if path is None:
        out["path_omitted"] = True
    return out


def blocker_view(anc: Ancestry, i: int, path: list[str] | None) -> dict[str, Any]:
    """One asset that blocks a purpose: what it allows (governing), why, and the path to it
    (``path_omitted`` when the answer's path budget was spent)."""
    g = anc.graph
    out = _with_path({"asset": g.ids[i], "allows": g.purposes.decode(g.own_purposes[i])}, path)
    if w := anc.withdrawn_by(i):
        out["withdrawn_by"] = w
    return out


def why(store: Store, ref: str, purpose: str | None = None, restriction: str | None = None) -> dict[str, Any]:
    """Why ``ref`` may or may not be used for ``purpose`` / carries ``restriction``, with paths."""
    with store.session() as s:
        asset = resolve(s, ref)
        anc = governed(store, s, asset.id)
        out: dict[str, Any] = {"asset": asset.id,
                               "effective": {"purposes": anc.purposes(), "restrictions": anc.restrictions()}}
        if anc.cycle:
            out["cycle"] = anc.cycle
        paths = _PathBudget(anc)
        if purpose:
            blockers = anc.purpose_blockers(purpose)
            out["purpose"] = {"purpose": purpose, "allowed": not blockers,
                              "blocked_by": [blocker_view(anc, i, paths(i)) for i in blockers]}
        if restriction:
            sources = anc.restriction_sources(restriction)
            runs = set(anc.graph.edge_run_id or ())
            lifted = []
            if runs and restriction in anc.graph.restrictions.index:  # lifts of one restriction are few
                for row in s.scalars(sa.select(RestrictionLift).where(RestrictionLift.restriction == restriction)
                                     .order_by(RestrictionLift.id)):
                    if row.run_id in runs:
                        lifted.append({"run": row.run_id, "transformation": row.transformation_id,
                                       "recorded_by": row.recorded_by, "recorded_at": row.recorded_at.isoformat()})
            out["restriction"] = {"restriction": restriction, "carried": bool(sources),
                                  "from": [_with_path({"asset": anc.graph.ids[i]}, paths(i, [restriction])) for i in sources],
                                  "lifted_by": lifted}
        return out


def overview(store: Store) -> dict[str, Any]:
    """Every asset with its effective terms and every lineage edge, from one propagation over the
    registry index: what the dashboard's lineage page draws."""
    with store.session() as s:
        graph = registry_graph(store, s)
        terms = propagate(graph)
        rows = {a.id: a for a in s.execute(sa.select(Asset.id, Asset.kind, Asset.owner, Asset.subject_id))}
    assets = [{"id": aid, "kind": rows[aid].kind if aid in rows else "", "owner": (rows[aid].owner if aid in rows else "") or "",
               "purposes": graph.purposes.decode(terms.allowed[i]), "restrictions": graph.restrictions.decode(terms.restrictions[i])}
              for i, aid in enumerate(graph.ids)]
    edges = {(graph.ids[p], graph.ids[c]) for p, c in zip(graph.parents.tolist(), graph.children.tolist(), strict=True)}
    edges |= {(r.subject_id, r.id) for r in rows.values() if r.kind == "deployment" and r.subject_id in rows}
    return {"assets": sorted(assets, key=lambda a: (a["kind"], a["id"])), "edges": sorted(edges), "cycle": terms.cycle}


LIST_PAGE_MAX = 1000  # assets per page of a listing (GET /api/v1/assets, the dashboard's lineage page)
MAX_OFFSET = 2**31 - 1  # a page offset both stores take (PostgreSQL's OFFSET is a bigint)


def count_assets(store: Store, kind: str | None = None) -> int:
    """How many assets (of ``kind``) ``list_assets`` pages through."""
    with store.session() as s:
        q = sa.select(sa.func.count()).select_from(Asset)
        if kind:
            q = q.where(Asset.kind == kind)
        return int(s.scalar(q) or 0)


def list_assets(store: Store, kind: str | None = None, *, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    """Assets by kind, name and version; ``limit`` of them from ``offset`` (all without a limit)."""
    with store.session() as s:
        q = sa.select(Asset).order_by(Asset.kind, Asset.name, Asset.version, Asset.id)
        if kind:
            q = q.where(Asset.kind == kind)
        if offset:
            q = q.offset(offset)
        if limit is not None:
            q = q.limit(limit)
        return [asset_view(s, a, with_files=False) for a in s.scalars(q)]
