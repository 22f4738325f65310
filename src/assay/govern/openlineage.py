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

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from assay import __version__
from assay.errors import BadInput, Unavailable
from assay.store import Store
from assay.store.schema import Asset, RestrictionLift, Run, RunIO, Verdict

from .registry import (
    KINDS,
    NAME_RE,
    Actor,
    NotFound,
    _new_asset,
    _record_run,
    audit,
    lock_lineage,
    normalise_terms,
    run_view,
)

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
        errors = [clean(e) for e in errors]
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


# ---------------------------------------------------------------- names

KINDS_IN = ("dataset", "model")  # what an OpenLineage event may create; other kinds are registered through assay


def _unstorable(c: str) -> bool:
    return c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF


def clean(text: str) -> str:
    """``text`` with what no database column or UTF-8 body can hold (NUL, lone surrogates) replaced by U+FFFD."""
    return "".join("\ufffd" if _unstorable(c) else c for c in text) if any(map(_unstorable, text)) else text


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def stored_name(text: str, limit: int = 255) -> str:
    """How an OpenLineage name (any string the schema allows: empty, ``/data/raw/orders.csv``,
    unicode, thousands of characters) is kept in a name column: itself when the column holds it
    exactly, else a readable prefix and a digest of the whole, so two names never share a key."""
    if len(text) <= limit and not any(map(_unstorable, text)):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{clean(text)[: limit - 18]}…#{digest}"


def _identity(ds: Mapping[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, stored namespace, stored name, assay_governance facet) of an event's dataset."""
    facets = ds.get("facets") or {}
    gov = facets.get("assay_governance") or {}
    namespace, name = ds["namespace"], ds["name"]
    kind = "model" if str((facets.get("datasetType") or {}).get("datasetType", "")).upper() == "MODEL" else "dataset"
    if namespace == "assay":  # assay emits its own assets as "<kind>/<name>"
        prefix, _, rest = name.partition("/")
        if prefix in KINDS and rest:
            kind, name = prefix, rest
    return kind, stored_name(namespace), stored_name(name), gov


def _asset_id(s, kind: str, namespace: str, name: str) -> Callable[[int], str] | None:
    """Ids for a name from an event: assay's usual one where the name is an assay name, else
    ``kind:namespace/name@version``, or, when that is too long or already names another asset,
    one with a digest of (kind, namespace, name) in it."""
    if namespace == "assay" and NAME_RE.match(name):
        return None

    def make(version: int) -> str:
        plain = f"{kind}:{namespace}/{name}@{version}"
        if len(plain) <= 512 and plain.isprintable() and s.get(Asset, plain) is None:
            return plain
        digest = hashlib.sha256(f"{kind}\x00{namespace}\x00{name}".encode()).hexdigest()[:16]
        return f"{kind}:{_printable(namespace)[:150]}/{_printable(name)[:300]}#{digest}@{version}"

    return make


def _new_asset_from(s, actor: Actor, ds: Mapping[str, Any]) -> Asset:
    kind, namespace, name, gov = _identity(ds)
    if kind not in KINDS_IN:
        raise BadInput(f"OpenLineage dataset {clean(ds['namespace'])}/{clean(ds['name'])}: an event may create datasets "
                       f"and models, not {kind} assets (register those through assay)")
    exact = {"namespace": clean(ds["namespace"]), "name": clean(ds["name"])}
    if (exact["namespace"], exact["name"]) != (ds["namespace"], ds["name"]):
        exact["escaped"] = json.dumps([ds["namespace"], ds["name"]])  # ASCII: every store keeps it exactly
    return _new_asset(
        s, actor, kind=kind, namespace=namespace, name=name, uri=f"{namespace}/{name}",
        purposes=normalise_terms(gov.get("purposes", []), "purpose"),
        restrictions=normalise_terms(gov.get("restrictions", []), "restriction"),
        owner=gov.get("owner"), licence=gov.get("licence"), make_id=_asset_id(s, kind, namespace, name),
        spec={"openlineage": exact, "declares_purposes": bool(gov.get("purposes"))},
    )


def ol_names(asset: Asset) -> tuple[str, str]:
    """The (namespace, name) an asset travels under in OpenLineage (the exact ones it came with)."""
    exact = (asset.spec or {}).get("openlineage") or {}
    if "escaped" in exact:
        namespace, name = json.loads(exact["escaped"])
        return namespace, name
    if exact:
        return exact["namespace"], exact["name"]
    return asset.namespace, asset.name if asset.namespace != "assay" else f"{asset.kind}/{asset.name}"


def ol_run_id(run_id: str) -> str:
    """The OpenLineage runId of one of assay's runs: its id when that is a UUID, else a UUID derived from it."""
    return run_id if _is_uuid(run_id) else str(uuid.uuid5(uuid.NAMESPACE_URL, f"assay:{run_id}"))


# ---------------------------------------------------------------- ingest


def ingest(store: Store, actor: Actor, event: Any) -> dict[str, Any]:
    """Validate one RunEvent and record it: datasets/models as assets, the run as lineage.

    Every name the schema allows is accepted. Idempotent: the events of one run (START, RUNNING,
    COMPLETE, repeats) refer to one run and one version of each dataset, and an event assay emitted
    for one of its own runs (its runId derived from the run's id, its assets named by the
    ``assay_governance`` facet) is recognised as that run, so ingesting it changes nothing.
    Inputs resolve to the version the run already reads, else assay's asset id, else the latest
    version the run did not write itself, else a new asset with the terms in its
    ``assay_governance`` facet (none: no purposes, so deny by default). Each output the run has not
    written yet becomes a new version produced by it. A run that would read what it writes is
    refused with the cycle named, and nothing is recorded.
    """
    actor.require("engineer", "ingesting lineage")
    _refuse_too_many_datasets(event)
    _refuse_non_finite(event)
    validate(event)
    job = event["job"]
    run_facets = _clean_json(event["run"].get("facets") or {})
    transformation = (run_facets.get("assay_transformation") or {}).get("transformation")
    with store.session() as s:
        lock_lineage(s)
        own = _own_verdict(s, event)
        if own is not None:
            return own
        run_id = _canonical_run(s, event)
        inputs = [_input_asset(s, actor, ds, run_id) for ds in event.get("inputs") or []]
        outputs = [_output_asset(s, actor, ds, run_id) for ds in event.get("outputs") or []]
        job_namespace, job_name = stored_name(job["namespace"]), stored_name(job["name"])
        run = s.get(Run, run_id)
        if outputs:
            run = _record_run(s, actor, job_name=job_name, kind=_job_kind(job), inputs=inputs, outputs=outputs,
                              transformation_id=transformation, run_id=run_id, facets=run_facets,
                              namespace=job_namespace)
        else:
            if run is None:
                run = Run(id=run_id, job_namespace=job_namespace, job_name=job_name, kind=_job_kind(job),
                          facets=run_facets, created_by=actor.name)
                s.add(run)
                s.flush()
            known = set(s.scalars(sa.select(RunIO.asset_id).where(RunIO.run_id == run_id, RunIO.direction == "input")))
            for a in inputs:
                if a.id not in known:
                    s.add(RunIO(run_id=run_id, asset_id=a.id, direction="input"))
                    known.add(a.id)
        run.state = event.get("eventType") or run.state
        s.flush()
        audit(s, actor, "openlineage_ingest", run_id, {"eventType": event.get("eventType"), "job": clean(job["name"])[:255]})
        return run_view(s, run)


def _refuse_too_many_datasets(event: Any) -> None:
    """At most ``MAX_LIST`` inputs and outputs, as ``POST /api/v1/runs`` takes: each costs lookups
    under the lineage lock, so an event of 20,000 (under 1 MB) held every other write for 40 s."""
    from .schemas import MAX_LIST

    for side in ("inputs", "outputs"):
        datasets = event.get(side) if isinstance(event, Mapping) else None
        if isinstance(datasets, list) and len(datasets) > MAX_LIST:
            raise BadInput(f"invalid OpenLineage event: .{side} names {len(datasets)} datasets; at most {MAX_LIST} "
                           "in one event", hint="send the run's datasets in several events")


def _refuse_non_finite(value: Any, where: str = "event") -> None:
    """JSON has no NaN or Infinity (Python's parser accepts them; no store can keep them)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"invalid OpenLineage event: {where} is {json.dumps(value)}, which JSON does not allow")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_non_finite(v, f"{where}.{clean(str(k))}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_non_finite(v, f"{where}[{i}]")


def _clean_json(value: Any) -> Any:
    """Facets as every store keeps them (strings cleaned of NUL and lone surrogates)."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {clean(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def _own_verdict(s, event: Mapping[str, Any]) -> dict[str, Any] | None:
    """An event assay emitted for one of its deployment-gate verdicts: already stored, a no-op."""
    facet = ((event["run"].get("facets") or {}).get("assay_verdict") or {})
    verdict_id = facet.get("verdictId")
    if not isinstance(verdict_id, str) or ol_run_id(verdict_id) != event["run"]["runId"]:
        return None
    row = s.get(Verdict, verdict_id)
    if row is None:
        return None
    return {"id": event["run"]["runId"], "job": {"namespace": "assay", "name": "deploy-check"}, "kind": "verdict",
            "state": event.get("eventType"), "transformation": None, "inputs": [row.detail.get("model")],
            "outputs": [row.deployment_id], "lifts": [], "created_by": row.checked_by, "verdict": row.id,
            "unchanged": True}


def _canonical_run(s, event: Mapping[str, Any]) -> str:
    """The run an event is about: its runId, or the assay run whose derived runId it carries."""
    run_id = event["run"]["runId"]
    if s.get(Run, run_id) is not None:
        return run_id
    for side, direction in (("outputs", "output"), ("inputs", "input")):
        for ds in event.get(side) or []:
            asset_id = ((ds.get("facets") or {}).get("assay_governance") or {}).get("assetId")
            if ds["namespace"] != "assay" or not isinstance(asset_id, str):
                continue
            for candidate in s.scalars(sa.select(RunIO.run_id).where(RunIO.asset_id == asset_id,
                                                                    RunIO.direction == direction)):
                if ol_run_id(candidate) == run_id:
                    return candidate
    return run_id


def _run_asset(s, run_id: str, direction: str, kind: str, namespace: str, name: str) -> Asset | None:
    """The version of (kind, namespace, name) that run ``run_id`` already reads or writes."""
    return s.scalars(sa.select(Asset).join(RunIO, RunIO.asset_id == Asset.id).where(
        RunIO.run_id == run_id, RunIO.direction == direction, Asset.kind == kind, Asset.namespace == namespace,
        Asset.name == name).order_by(Asset.version.desc()).limit(1)).first()


def _input_asset(s, actor: Actor, ds: Mapping[str, Any], run_id: str) -> Asset:
    kind, namespace, name, gov = _identity(ds)
    known = _run_asset(s, run_id, "input", kind, namespace, name)
    if known is not None:
        return known
    if namespace == "assay" and isinstance(gov.get("assetId"), str):
        named = s.get(Asset, gov["assetId"])
        if named is not None and (named.kind, named.namespace, named.name) == (kind, namespace, name):
            return named
    versions = s.scalars(sa.select(Asset).where(Asset.kind == kind, Asset.namespace == namespace, Asset.name == name)
                         .order_by(Asset.version.desc())).all()
    for a in versions:
        if s.scalar(sa.select(RunIO.run_id).where(RunIO.asset_id == a.id, RunIO.direction == "output")) != run_id:
            return a
    if versions:
        return versions[0]  # only what this run wrote itself: recording it refuses the cycle, naming it
    return _new_asset_from(s, actor, ds)


def _output_asset(s, actor: Actor, ds: Mapping[str, Any], run_id: str) -> Asset:
    kind, namespace, name, _ = _identity(ds)
    known = _run_asset(s, run_id, "output", kind, namespace, name)
    return known if known is not None else _new_asset_from(s, actor, ds)


def _job_kind(job: Mapping[str, Any]) -> str:
    jt = ((job.get("facets") or {}).get("jobType") or {}).get("jobType", "")
    return {"TRAIN": "train", "TRAINING": "train", "EVALUATE": "evaluate"}.get(str(jt).upper(), "other")


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
    namespace, name = ol_names(asset)
    cls = OutputDataset if output else InputDataset
    return cls(namespace=namespace, name=name, facets=facets)


def run_event(store: Store, run_id: str, event_type: str = "COMPLETE", verdict: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The RunEvent for one of assay's recorded runs (validated before it is returned)."""
    from openlineage.client.event_v2 import Job, RunEvent, RunState
    from openlineage.client.event_v2 import Run as OLRun
    from openlineage.client.serde import Serde

    from .lineage import governed

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
                anc = governed(store, s, x.asset_id)
                effective[x.asset_id] = (anc.purposes(), anc.restrictions())
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
    run_uuid = ol_run_id(run.id)
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
        run=OLRun(runId=ol_run_id(verdict["id"]), facets={"assay_verdict": facet}),
        job=Job(namespace="assay", name="deploy-check"),
        inputs=[_dataset(model, False)], outputs=[_dataset(deployment, True)], producer=PRODUCER)
    out = Serde.to_dict(event)
    validate(out)
    return out
