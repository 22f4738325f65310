"""Read-side of lineage: effective terms of an asset, its ancestry, and why it may (not) be used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import sqlalchemy as sa

from assay.errors import AssayError
from assay.store import Store
from assay.store.schema import Asset, RestrictionLift

from .gate import _has_bit, _Paths
from .propagation import live_restrictions, propagate
from .registry import asset_view, descendant_ids, load_graph, resolve


def resolver(store: Store) -> Callable[[str], dict[str, Any] | None]:
    """``version -> show(store, version)``, None for a version the registry does not know: what
    the trace's ``why`` answers call to attach a model's lineage."""

    def resolve_lineage(version: str) -> dict[str, Any] | None:
        try:
            return show(store, version)
        except AssayError:
            return None

    return resolve_lineage


def show(store: Store, ref: str) -> dict[str, Any]:
    """The asset, its effective terms (computed now), its ancestry edges and its descendants."""
    with store.session() as s:
        asset = resolve(s, ref)
        graph = load_graph(s, [asset.id])
        terms = propagate(graph)
        t = graph.index[asset.id]
        nodes = [{"id": graph.ids[i], "purposes": graph.purposes.decode(terms.allowed[i]),
                  "restrictions": graph.restrictions.decode(terms.restrictions[i]), "level": int(terms.level[i])}
                 for i in np.argsort(terms.level, kind="stable").tolist()]
        edges = [{"input": graph.ids[p], "output": graph.ids[c], "run": graph.edge_run[k],
                  "lifts": graph.restrictions.decode(graph.edge_lift[k])}
                 for k, (p, c) in enumerate(zip(graph.parents.tolist(), graph.children.tolist(), strict=True))]
        return {
            "asset": asset_view(s, asset),
            "effective": {"purposes": graph.purposes.decode(terms.allowed[t]),
                          "restrictions": graph.restrictions.decode(terms.restrictions[t])},
            "ancestry": nodes, "edges": edges, "descendants": descendant_ids(s, asset.id),
        }


def why(store: Store, ref: str, purpose: str | None = None, restriction: str | None = None) -> dict[str, Any]:
    """Why ``ref`` may or may not be used for ``purpose`` / carries ``restriction``, with paths."""
    with store.session() as s:
        asset = resolve(s, ref)
        graph = load_graph(s, [asset.id])
        terms = propagate(graph)
        t = graph.index[asset.id]
        paths = _Paths(graph, t)
        roots = np.ones(graph.n, dtype=bool)
        roots[graph.children] = False
        out: dict[str, Any] = {"asset": asset.id,
                               "effective": {"purposes": graph.purposes.decode(terms.allowed[t]),
                                             "restrictions": graph.restrictions.decode(terms.restrictions[t])}}
        if purpose:
            allowed = purpose in out["effective"]["purposes"]
            bit = graph.purposes.index.get(purpose)
            declares = graph.declares_purposes | roots
            lacking = declares if bit is None else declares & ~_has_bit(graph.own_purposes, bit)
            out["purpose"] = {
                "purpose": purpose, "allowed": allowed,
                "blocked_by": [] if allowed else [
                    {"asset": graph.ids[i], "allows": graph.purposes.decode(graph.own_purposes[i]), "path": paths.to(i)}
                    for i in np.flatnonzero(lacking).tolist()],
            }
        if restriction:
            bit = graph.restrictions.index.get(restriction)
            carried = restriction in out["effective"]["restrictions"]
            sources, lifted = [], []
            if bit is not None:
                live = live_restrictions(graph, t, terms.level)
                own = _has_bit(graph.own_restrictions, bit)
                for i in np.flatnonzero(own & _has_bit(live, bit)).tolist():
                    avoid = np.zeros_like(graph.own_restrictions[0])
                    avoid[bit // 64] = np.uint64(1) << np.uint64(bit % 64)
                    sources.append({"asset": graph.ids[i], "path": paths.to(i, avoid)})
                runs = {r.split("(")[-1].rstrip(")") for r in graph.edge_run if r}
                if runs:
                    for row in s.scalars(sa.select(RestrictionLift).where(RestrictionLift.run_id.in_(runs),
                                                                          RestrictionLift.restriction == restriction)):
                        lifted.append({"run": row.run_id, "transformation": row.transformation_id,
                                       "recorded_by": row.recorded_by, "recorded_at": row.recorded_at.isoformat()})
            out["restriction"] = {"restriction": restriction, "carried": carried, "from": sources, "lifted_by": lifted}
        return out


def list_assets(store: Store, kind: str | None = None) -> list[dict[str, Any]]:
    with store.session() as s:
        q = sa.select(Asset).order_by(Asset.kind, Asset.name, Asset.version)
        if kind:
            q = q.where(Asset.kind == kind)
        return [asset_view(s, a, with_files=False) for a in s.scalars(q)]
