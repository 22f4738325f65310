"""A model's AI bill of materials as CycloneDX 1.6 ML-BOM JSON, built and validated with
cyclonedx-python-lib: the model (every weights file by sha256), every upstream dataset (manifest
hash, licence, purposes, restrictions) with the dependency edges between them, and the
evaluation results as the model card's performance metrics.

The library has no model-card classes yet, so ``modelCard`` is added to the serialised JSON and
the whole document is then validated against the official 1.6 schema by the library's validator.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from assay import __version__
from assay.errors import BadInput
from assay.store import Store
from assay.store.schema import Asset, AssetFile

from .lineage import governed
from .registry import resolve

MAX_BOM_COMPONENTS = 1_000
"""Components (upstream assets and their files) one BOM lists. The CycloneDX validator compares
them pairwise (``uniqueItems``), so its time grows as the square: 1,000 files took 3.7 s, 3,000
took 15 s; the 30,000 one registration may declare would hold a server worker ~25 min (extrapolated).
Past it the files are left out and each asset keeps its manifest hash (which covers them) and its
file count; only a lineage of more assets than this is refused."""


def export_bom(store: Store, model_ref: str) -> dict[str, Any]:
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.license import DisjunctiveLicense
    from cyclonedx.output.json import JsonV1Dot6

    with store.session() as s:
        model = resolve(s, model_ref, "model")
        anc = governed(store, s, model.id)
        graph = anc.graph
        n_files = s.scalar(sa.select(sa.func.count()).select_from(AssetFile).where(AssetFile.asset_id.in_(graph.ids)))
        if graph.n > MAX_BOM_COMPONENTS:
            raise BadInput(f"the ML-BOM of {model.id} would list {graph.n} assets; at most {MAX_BOM_COMPONENTS} are exported",
                           hint="`lineage show` lists its lineage")
        files_listed = graph.n + n_files <= MAX_BOM_COMPONENTS  # else each asset's manifest hash stands for its files
        assets = {a.id: a for a in s.scalars(sa.select(Asset).where(Asset.id.in_(graph.ids)))}
        files: dict[str, list[AssetFile]] = {}
        file_counts: dict[str, int] = dict(s.execute(  # type: ignore[arg-type]
            sa.select(AssetFile.asset_id, sa.func.count()).where(AssetFile.asset_id.in_(graph.ids)).group_by(AssetFile.asset_id)).all())
        query = sa.select(AssetFile).where(AssetFile.asset_id.in_(graph.ids if files_listed else [model.id])).order_by(AssetFile.path)
        for f in s.scalars(query):
            files.setdefault(f.asset_id, []).append(f)
        evals = s.scalars(sa.select(Asset).where(Asset.kind == "evaluation", Asset.subject_id == model.id)).all()
        registered = {f.sha256 for f in files.get(model.id, [])}

    def component(asset: Asset) -> Component:
        i = graph.index[asset.id]
        # the governing terms (a withdrawal narrows an older version's), then the effective ones
        props = [Property(name="assay:asset_id", value=asset.id),
                 Property(name="assay:purposes", value=",".join(graph.purposes.decode(graph.own_purposes[i])) or "(none)"),
                 Property(name="assay:restrictions", value=",".join(graph.restrictions.decode(graph.own_restrictions[i])) or "(none)"),
                 Property(name="assay:effective_purposes", value=",".join(anc.purposes(i)) or "(none)"),
                 Property(name="assay:effective_restrictions", value=",".join(anc.restrictions(i)) or "(none)")]
        for w in anc.withdrawn_by(i):
            props.append(Property(name="assay:withdrawn_by", value=f"{w['withdrawal']}: {w['reason']}"))
        if asset.id == model.id and anc.cycle:
            props.append(Property(name="assay:lineage_cycle", value=" -> ".join(anc.cycle)))
        if asset.content_hash:
            props.append(Property(name="assay:manifest_sha256", value=asset.content_hash))
        if asset.uri:
            props.append(Property(name="assay:uri", value=asset.uri))
        listed = files.get(asset.id, []) if files_listed else []
        if not files_listed and file_counts.get(asset.id):
            props.append(Property(name="assay:files_omitted", value=str(file_counts[asset.id])))
        subs = [Component(name=f.path, type=ComponentType.FILE, bom_ref=f"{asset.id}#{f.path}",
                          hashes=[HashType(alg=HashAlgorithm.SHA_256, content=f.sha256)],
                          properties=[Property(name="assay:size_bytes", value=str(f.size))])
                for f in listed]
        ctype = ComponentType.MACHINE_LEARNING_MODEL if asset.kind == "model" else ComponentType.DATA
        return Component(
            name=asset.name, version=str(asset.version), type=ctype, bom_ref=asset.id,
            licenses=[DisjunctiveLicense(name=asset.licence)] if asset.licence else None,
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=subs[0].hashes[0].content)] if len(subs) == 1 else None,
            properties=props, components=subs or None,
            description=(asset.spec.get("framework") and f"framework: {asset.spec['framework']}") or None,
        )

    bom = Bom()
    root = component(model)
    bom.metadata.component = root
    others = {aid: component(a) for aid, a in assets.items() if aid != model.id}
    for c in others.values():
        bom.components.add(c)
    for p, c in zip(graph.parents.tolist(), graph.children.tolist(), strict=True):
        parent, child = graph.ids[p], graph.ids[c]
        child_c = root if child == model.id else others.get(child)
        parent_c = others.get(parent)
        if child_c is not None and parent_c is not None:
            bom.register_dependency(child_c, [parent_c])
    text = JsonV1Dot6(bom).output_as_string(indent=None)
    doc = json.loads(text)
    metrics = []
    for e in evals:
        result = e.spec["result"]
        matches = set(result["model_hashes"].values()) == registered
        for name, value in sorted(result["metrics"].items()):
            m: dict[str, Any] = {"type": name, "value": str(value), "slice": f"suite={result['suite']} run={result['run_id']}"
                                 + ("" if matches else " (other weights)")}
            interval = result.get("intervals", {}).get(name)
            if interval:
                m["confidenceInterval"] = {"lowerBound": str(interval[0]), "upperBound": str(interval[1])}
            metrics.append(m)
    model_card: dict[str, Any] = {"bom-ref": f"{model.id}#model-card"}
    if metrics:
        model_card["quantitativeAnalysis"] = {"performanceMetrics": metrics}
    datasets = [a for a in assets.values() if a.kind == "dataset"]
    if datasets:
        model_card["modelParameters"] = {"datasets": [{"ref": a.id} for a in datasets]}
    doc["metadata"]["component"]["modelCard"] = model_card
    doc["metadata"]["tools"] = {"components": [{"type": "application", "name": "assay", "version": __version__}]}
    validate_bom(doc)
    return doc


def validate_bom(doc: dict[str, Any]) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(doc))
    if error is not None:
        raise BadInput(f"the ML-BOM does not validate against CycloneDX 1.6: {error}")
