"""OpenLineage in and out.

In: RunEvents posted by any OpenLineage producer (the ``openlineage-python`` HTTP transport posts
to ``/api/v1/lineage``) are validated and turned into registry assets and lineage runs.
Out: assay's own runs become RunEvents, built with the ``openlineage-python`` client classes.

Validation uses the official JSON Schemas (``OpenLineage.json`` + ``facets/*.json``), resolved
locally with ``referencing`` (no network): by default from ``../shared/specs/openlineage`` next to
the data folder, or ``ASSAY_OPENLINEAGE_SPEC``. assay's own metadata travels as custom facets
(``assay_governance``, ``assay_transformation``, ``assay_verdict``) whose versioned schemas ship in
``assay/govern/facets/``. A model is a dataset node with ``DatasetTypeDatasetFacet(datasetType="MODEL")``.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from assay import __version__
from assay.errors import BadInput, Unavailable
from assay.store import Store
from assay.store.schema import Asset, RestrictionLift, Run, RunIO

from .registry import Actor, NotFound, _new_asset, _record_run, normalise_terms, resolve, run_view

PRODUCER = f"https://github.com/assay-safety/assay/tree/v{__version__}"
FACETS_DIR = Path(__file__).with_name("facets")
CUSTOM_FACETS = {
    "assay_governance": "AssayGovernanceDatasetFacet",
    "assay_transformation": "AssayTransformationRunFacet",
    "assay_verdict": "AssayVerdictRunFacet",
}


class InvalidEvent(BadInput):
    """An OpenLineage event that does not match the spec; ``errors`` lists each problem and where."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid OpenLineage event: " + "; ".join(errors[:5]) + (" …" if len(errors) > 5 else ""))


def spec_dir() -> Path:
    configured = os.environ.get("ASSAY_OPENLINEAGE_SPEC")
    if configured:
        return Path(configured)
    from assay.config import settings

    return settings().data_dir.parent / "specs" / "openlineage"


def custom_facet_schema(key: str) -> dict[str, Any]:
    return json.loads((FACETS_DIR / f"{CUSTOM_FACETS[key]}.json").read_text())


class Validator:
    """The OpenLineage RunEvent schema plus every standard and assay facet schema, all local."""

    def __init__(self, root: Path):
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource

        main = root / "OpenLineage.json"
        if not main.is_file():
            raise Unavailable(f"OpenLineage schemas not found at {root}", hint="set ASSAY_OPENLINEAGE_SPEC to the spec/ folder of OpenLineage")
        schemas = [json.loads(main.read_text())]
        facet_files = sorted((root / "facets").glob("*.json")) + sorted(FACETS_DIR.glob("*.json"))
        facet_schemas = [json.loads(p.read_text()) for p in facet_files]
        registry = Registry().with_resources(
            (s["$id"], Resource.from_contents(s)) for s in [*schemas, *facet_schemas])
        self.main = schemas[0]
        self.event = Draft202012Validator({"$ref": self.main["$id"] + "#/$defs/RunEvent"}, registry=registry,
                                          format_checker=Draft202012Validator.FORMAT_CHECKER)
        self.facets: dict[str, Any] = {}
        for s in facet_schemas:
            for key in s.get("properties", {}):
                self.facets[key] = Draft202012Validator(s, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)

    def errors(self, event: Any) -> list[str]:
        out = [f"{_where(e.absolute_path)}: {e.message}" for e in self.event.iter_errors(event)]
        if out or not isinstance(event, Mapping):
            return out
        for where, facets in _facet_maps(event):
            for key, value in facets.items():
                validator = self.facets.get(key)
                if validator is None:
                    continue  # a custom facet we do not know: the base facet schema already checked it
                out.extend(f"{where}.{key}{_where(e.absolute_path, skip=1)}: {e.message}"
                           for e in validator.iter_errors({key: value}))
        return out


def _where(path, skip: int = 0) -> str:
    parts = list(path)[skip:]
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts) or "(event)"


def _facet_maps(event: Mapping[str, Any]):
    yield "run.facets", (event.get("run") or {}).get("facets") or {}
    yield "job.facets", (event.get("job") or {}).get("facets") or {}
    for side in ("inputs", "outputs"):
        for i, ds in enumerate(event.get(side) or []):
            if isinstance(ds, Mapping):
                yield f"{side}[{i}].facets", ds.get("facets") or {}
                extra = "inputFacets" if side == "inputs" else "outputFacets"
                yield f"{side}[{i}].{extra}", ds.get(extra) or {}


@lru_cache(maxsize=4)
def _validator(root: str) -> Validator:
    return Validator(Path(root))


def validator() -> Validator:
    return _validator(str(spec_dir()))


def validate(event: Any) -> None:
    errors = validator().errors(event)
    if errors:
        raise InvalidEvent(errors)


# ---------------------------------------------------------------- ingest


def ingest(store: Store, actor: Actor, event: Any) -> dict[str, Any]:
    """Validate one RunEvent and record it: datasets/models as assets, the run as lineage.

    Inputs resolve to the latest registered version of (namespace, name), or are registered with
    the terms in their ``assay_governance`` facet (none: no purposes, so deny by default). Each
    output becomes a new version produced by this run (repeated events for the same run reuse it).
    """
    actor.require("engineer", "ingesting lineage")
    validate(event)
    run_id = event["run"]["runId"]
    job = event["job"]
    run_facets = event["run"].get("facets") or {}
    transformation = (run_facets.get("assay_transformation") or {}).get("transformation")
    with store.session() as s:
        inputs = [_dataset_asset(s, actor, ds, None).id for ds in event.get("inputs") or []]
        outputs = [_dataset_asset(s, actor, ds, run_id).id for ds in event.get("outputs") or []]
        run = s.get(Run, run_id)
        if outputs:
            run = _record_run(s, actor, job_name=job["name"], kind=_job_kind(job), inputs=inputs, outputs=outputs,
                              transformation_id=transformation, run_id=run_id, facets=run_facets,
                              namespace=job["namespace"])
        elif run is None:
            run = Run(id=run_id, job_namespace=job["namespace"], job_name=job["name"], kind=_job_kind(job),
                      facets=run_facets, created_by=actor.name)
            s.add(run)
            s.flush()
            for aid in inputs:
                s.add(RunIO(run_id=run_id, asset_id=aid, direction="input"))
        run.state = event.get("eventType") or run.state
        s.flush()
        from .registry import audit

        audit(s, actor, "openlineage_ingest", run_id, {"eventType": event.get("eventType"), "job": job["name"]})
        return run_view(s, run)


def _job_kind(job: Mapping[str, Any]) -> str:
    jt = ((job.get("facets") or {}).get("jobType") or {}).get("jobType", "")
    return {"TRAIN": "train", "TRAINING": "train", "EVALUATE": "evaluate"}.get(str(jt).upper(), "other")


def _dataset_asset(s, actor: Actor, ds: Mapping[str, Any], producing_run: str | None) -> Asset:
    facets = ds.get("facets") or {}
    kind = "model" if str((facets.get("datasetType") or {}).get("datasetType", "")).upper() == "MODEL" else "dataset"
    gov = facets.get("assay_governance") or {}
    namespace, name = ds["namespace"], ds["name"]
    if namespace == "assay" and name.startswith(f"{kind}/"):
        name = name[len(kind) + 1:]  # assay emits its own assets as "<kind>/<name>"
    if namespace == "assay" and gov.get("assetId") and producing_run is None:
        try:
            return resolve(s, gov["assetId"])
        except BadInput:
            pass
    latest = s.scalars(sa.select(Asset).where(Asset.kind == kind, Asset.namespace == namespace, Asset.name == name)
                       .order_by(Asset.version.desc()).limit(1)).first()
    if producing_run is not None and latest is not None:
        made_by = s.scalar(sa.select(RunIO.run_id).where(RunIO.asset_id == latest.id, RunIO.direction == "output"))
        if made_by == producing_run:
            return latest
    if producing_run is None and latest is not None:
        return latest
    if len(name) > 255 or len(namespace) > 255:
        raise BadInput(f"dataset name {namespace}/{name} is longer than 255 characters")
    return _new_asset(
        s, actor, kind=kind, namespace=namespace, name=name, uri=f"{namespace}/{name}",
        purposes=normalise_terms(gov.get("purposes", []), "purpose"),
        restrictions=normalise_terms(gov.get("restrictions", []), "restriction"),
        owner=gov.get("owner"), licence=gov.get("licence"),
        spec={"openlineage": {"namespace": namespace, "name": name}, "declares_purposes": bool(gov.get("purposes"))},
    )


# ---------------------------------------------------------------- emit


def _governance_facet(asset: Asset, effective: tuple[list[str], list[str]] | None = None):
    import attr
    from openlineage.client.generated.base import DatasetFacet

    @attr.define
    class AssayGovernanceDatasetFacet(DatasetFacet):
        version: str = "1-0-0"
        purposes: list[str] = attr.field(factory=list)
        restrictions: list[str] = attr.field(factory=list)
        effectivePurposes: list[str] | None = None
        effectiveRestrictions: list[str] | None = None
        owner: str | None = None
        licence: str | None = None
        assetId: str | None = None
        contentHash: str | None = None

        @staticmethod
        def _get_schema() -> str:
            return custom_facet_schema("assay_governance")["$id"] + "#/$defs/AssayGovernanceDatasetFacet"

    return AssayGovernanceDatasetFacet(
        purposes=list(asset.purposes), restrictions=list(asset.restrictions),
        effectivePurposes=effective[0] if effective else None, effectiveRestrictions=effective[1] if effective else None,
        owner=asset.owner, licence=asset.licence, assetId=asset.id, contentHash=asset.content_hash, producer=PRODUCER)


def _dataset(asset: Asset, output: bool, effective=None):
    from openlineage.client.event_v2 import InputDataset, OutputDataset
    from openlineage.client.facet_v2 import dataset_type_dataset, dataset_version_dataset

    facets: dict[str, Any] = {
        "assay_governance": _governance_facet(asset, effective),
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(asset.version), producer=PRODUCER),
    }
    if asset.kind == "model":
        facets["datasetType"] = dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="MODEL", producer=PRODUCER)
    name = asset.name if asset.namespace != "assay" else f"{asset.kind}/{asset.name}"
    cls = OutputDataset if output else InputDataset
    return cls(namespace=asset.namespace, name=name, facets=facets)


def run_event(store: Store, run_id: str, event_type: str = "COMPLETE", verdict: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The RunEvent for one of assay's recorded runs (validated before it is returned)."""
    from openlineage.client.event_v2 import Job, RunEvent, RunState
    from openlineage.client.event_v2 import Run as OLRun
    from openlineage.client.serde import Serde

    from .lineage import show

    with store.session() as s:
        run = s.get(Run, run_id) if len(run_id) <= 255 else None
        if run is None:
            raise NotFound(f"no lineage run {run_id[:80]!r}")
        io = s.scalars(sa.select(RunIO).where(RunIO.run_id == run_id)).all()
        assets = {a.id: a for a in s.scalars(sa.select(Asset).where(Asset.id.in_([x.asset_id for x in io])))}
        lifts = s.scalars(sa.select(RestrictionLift).where(RestrictionLift.run_id == run_id)).all()
    effective = {}
    for x in io:
        if x.direction == "output":
            view = show(store, x.asset_id)["effective"]
            effective[x.asset_id] = (view["purposes"], view["restrictions"])
    run_facets: dict[str, Any] = {}
    if run.transformation_id:
        run_facets["assay_transformation"] = _run_facet("assay_transformation", {
            "transformation": run.transformation_id, "lifts": sorted({x.restriction for x in lifts})})
    if verdict is not None:
        run_facets["assay_verdict"] = _run_facet("assay_verdict", {
            "allowed": bool(verdict["allowed"]), "verdictId": verdict["id"], "bundleHash": verdict["bundle_hash"],
            "deciding": list(verdict["deciding"]),
            "denials": [{"check": d["check"], "rule": d["rule"], "asset": d.get("asset"), "path": d.get("path", [])}
                        for d in verdict["denials"]]})
    run_uuid = run.id if _is_uuid(run.id) else str(uuid.uuid5(uuid.NAMESPACE_URL, f"assay:{run.id}"))
    event = RunEvent(
        eventType=RunState[event_type], eventTime=datetime.now(UTC).isoformat(),
        run=OLRun(runId=run_uuid, facets=run_facets), job=Job(namespace=run.job_namespace, name=run.job_name),
        inputs=[_dataset(assets[x.asset_id], False) for x in io if x.direction == "input"],
        outputs=[_dataset(assets[x.asset_id], True, effective.get(x.asset_id)) for x in io if x.direction == "output"],
        producer=PRODUCER)
    out = Serde.to_dict(event)
    validate(out)
    return out


def _run_facet(key: str, fields: dict[str, Any]) -> dict[str, Any]:
    schema = custom_facet_schema(key)
    return {"_producer": PRODUCER, "_schemaURL": schema["$id"] + "#/$defs/" + CUSTOM_FACETS[key], "version": "1-0-0", **fields}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
        return True
    except ValueError:
        return False


def emit(events: list[dict[str, Any]], url: str | None = None) -> str:
    """Send events to an OpenLineage backend (``OPENLINEAGE_URL``) or append them to a JSONL file."""
    url = url or os.environ.get("OPENLINEAGE_URL")
    if url:
        import httpx

        for e in events:
            r = httpx.post(url.rstrip("/") + "/api/v1/lineage", json=e, timeout=10,
                           headers={"Authorization": f"Bearer {os.environ['OPENLINEAGE_API_KEY']}"}
                           if os.environ.get("OPENLINEAGE_API_KEY") else {})
            if r.status_code >= 300:
                raise Unavailable(f"OpenLineage backend at {url} answered {r.status_code}: {r.text[:200]}")
        return url
    from assay.config import settings

    path = settings().path("openlineage", "events.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e, sort_keys=True) + "\n")
    return str(path)


def verdict_run_event(store: Store, verdict: Mapping[str, Any]) -> dict[str, Any]:
    """A deployment-gate verdict as a RunEvent: job ``deploy-check``, the model in, the deployment
    out, the verdict in the ``assay_verdict`` run facet (COMPLETE when allowed, FAIL when denied)."""
    from openlineage.client.event_v2 import Job, RunEvent, RunState
    from openlineage.client.event_v2 import Run as OLRun
    from openlineage.client.serde import Serde

    with store.session() as s:
        model = s.get(Asset, verdict["model"])
        deployment = s.get(Asset, verdict["deployment"])
        if model is None or deployment is None:
            raise BadInput(f"verdict {verdict.get('id')} names assets that are not registered")
    facet = _run_facet("assay_verdict", {
        "allowed": bool(verdict["allowed"]), "verdictId": verdict["id"], "bundleHash": verdict["bundle_hash"],
        "deciding": list(verdict["deciding"]),
        "denials": [{"check": d["check"], "rule": d["rule"], "asset": d.get("asset"), "path": d.get("path", [])}
                    for d in verdict["denials"]]})
    event = RunEvent(
        eventType=RunState.COMPLETE if verdict["allowed"] else RunState.FAIL, eventTime=datetime.now(UTC).isoformat(),
        run=OLRun(runId=str(uuid.uuid5(uuid.NAMESPACE_URL, f"assay:{verdict['id']}")), facets={"assay_verdict": facet}),
        job=Job(namespace="assay", name="deploy-check"),
        inputs=[_dataset(model, False)], outputs=[_dataset(deployment, True)], producer=PRODUCER)
    out = Serde.to_dict(event)
    validate(out)
    return out
