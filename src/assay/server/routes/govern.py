"""Governance routes: registry, lineage (OpenLineage ingest at ``/api/v1/lineage``), deployments,
approvals, verdicts, ML-BOM, tokens and the audit log. Every route needs a role."""

from __future__ import annotations

import gzip
import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from assay.errors import BadInput
from assay.govern import gate, lineage, openlineage, registry
from assay.govern.registry import Actor
from assay.server.auth import create_token, get_store, require_role
from assay.store import Store
from assay.store.schema import AuditEntry

router = APIRouter(prefix="/api/v1", tags=["govern"])

Name = Annotated[str, Field(min_length=1, max_length=255)]
Term = Annotated[str, Field(min_length=1, max_length=200)]
StoreDep = Annotated[Store, Depends(get_store)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(Strict):
    path: Annotated[str, Field(min_length=1, max_length=1024)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)] = 0


class DatasetIn(Strict):
    name: Name
    uri: Annotated[str, Field(min_length=1, max_length=4096)]
    purposes: list[Term] = []
    restrictions: list[Term] = []
    contains_minors: bool = False
    consent_scope: Term | None = None
    region: Term | None = None
    retention_days: Annotated[int, Field(ge=0, le=100000)] | None = None
    owner: Name | None = None
    licence: Name | None = None
    data_schema: dict[str, Any] = Field(default_factory=dict, alias="schema")
    files: list[FileEntry] | None = Field(None, description="The manifest; omit to hash a path on the server.")
    withdrawal: Annotated[str, Field(min_length=1, max_length=2000)] | None = Field(
        None, description="This version withdraws consent (the reason): its terms also bind every earlier version.")


class ModelIn(Strict):
    name: Name
    files: list[FileEntry] | None = Field(None, min_length=1)
    weights: list[Annotated[str, Field(min_length=1, max_length=4096)]] | None = None
    uri: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    framework: Annotated[str, Field(max_length=255)] = ""
    trained_on: list[Annotated[str, Field(min_length=1, max_length=512)]] = []
    training_run: Name | None = None
    purposes: list[Term] = []
    restrictions: list[Term] = []
    owner: Name | None = None
    licence: Name | None = None
    transformation: Name | None = None


class EvaluationIn(Strict):
    model: Annotated[str, Field(min_length=1, max_length=512)]
    run_id: Name
    suite: Name
    target: Name
    metrics: dict[str, float]
    intervals: dict[str, list[float]] = {}
    n: dict[str, int] = {}
    gate_verdicts: dict[str, bool] = {}
    dataset_hashes: dict[str, str] = {}
    model_hashes: dict[str, str]
    report_path: str = ""


class TransformationIn(Strict):
    name: Name
    lifts: list[Term] = Field(min_length=1)
    description: Annotated[str, Field(max_length=4000)] = ""


class RunIn(Strict):
    job_name: Name
    inputs: list[Annotated[str, Field(min_length=1, max_length=512)]] = []
    outputs: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(min_length=1)
    kind: Annotated[str, Field(pattern=r"^(train|transform|evaluate|ingest|other)$")] = "other"
    transformation: Name | None = None


class DeploymentIn(Strict):
    model: Annotated[str, Field(min_length=1, max_length=512)]
    surface: Name
    purpose: Name
    region: Name = "global"
    environment: Name = "production"
    name: Name | None = None
    bundle_files: dict[str, Annotated[str, Field(max_length=1_000_000)]] | None = Field(
        None, description="The bundle's YAML files by relative name")
    bundle_hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class ApprovalIn(Strict):
    comment: Annotated[str, Field(max_length=4000)] = ""


class TokenIn(Strict):
    name: Name
    role: Annotated[str, Field(pattern=r"^(viewer|engineer|approver|admin)$")]


# ---------------------------------------------------------------- OpenLineage

OPENLINEAGE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "An OpenLineage RunEvent (https://openlineage.io/spec/2-0-2/OpenLineage.json)"}}}}}


@router.post("/lineage", status_code=201, openapi_extra=OPENLINEAGE_BODY, summary="Ingest an OpenLineage RunEvent")
async def ingest_openlineage(request: Request, store: StoreDep,
                             actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    """The endpoint the standard OpenLineage HTTP transport posts to (gzip accepted)."""
    raw = await request.body()
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            raw = gzip.decompress(raw)
        except OSError as e:
            raise BadInput(f"body is not valid gzip: {e}") from e
    try:
        event = json.loads(raw)
    except ValueError as e:
        raise BadInput(f"body is not JSON: {e}") from e
    return openlineage.ingest(store, actor, event)


@router.get("/runs/{run_id}/openlineage", summary="A recorded run as an OpenLineage RunEvent")
def run_as_openlineage(run_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    return openlineage.run_event(store, run_id)


# ---------------------------------------------------------------- registry


@router.post("/datasets", status_code=201)
def register_dataset(body: DatasetIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    restrictions = registry.restriction_terms(body.restrictions, contains_minors=body.contains_minors,
                                              consent_scope=body.consent_scope, region=body.region,
                                              retention_days=body.retention_days)
    return registry.register_dataset(
        store, actor, name=body.name, uri=body.uri, purposes=body.purposes, restrictions=restrictions,
        owner=body.owner, licence=body.licence, schema=body.data_schema,
        files=[f.model_dump() for f in body.files] if body.files is not None else None, withdrawal=body.withdrawal)


@router.post("/models", status_code=201)
def register_model(body: ModelIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    if body.files is not None and not body.uri:
        raise BadInput("a model given by its file manifest needs the uri (folder) the files are relative to")
    return registry.register_model(
        store, actor, name=body.name, weights=body.weights, uri=body.uri,
        files=[f.model_dump() for f in body.files] if body.files is not None else None,
        framework=body.framework, trained_on=body.trained_on, training_run=body.training_run,
        purposes=body.purposes, restrictions=body.restrictions, owner=body.owner, licence=body.licence,
        transformation=body.transformation)


@router.post("/evaluations", status_code=201)
def register_evaluation(body: EvaluationIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    result = body.model_dump(exclude={"model"})
    if any(len(v) != 2 for v in result["intervals"].values()):
        raise BadInput("every interval must be [low, high]")
    return registry.register_evaluation(store, actor, result, body.model)


@router.post("/transformations", status_code=201)
def register_transformation(body: TransformationIn, store: StoreDep,
                            actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return registry.register_transformation(store, actor, name=body.name, lifts=body.lifts, description=body.description)


@router.post("/transformations/{transformation_id}/approve", status_code=201)
def approve_transformation(transformation_id: str, body: ApprovalIn, store: StoreDep,
                           actor: Actor = Depends(require_role("approver"))) -> dict[str, Any]:
    return registry.approve_transformation(store, actor, transformation_id, body.comment)


@router.post("/runs", status_code=201, summary="Record a lineage run between registered assets")
def record_run(body: RunIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return registry.record_run(store, actor, job_name=body.job_name, inputs=body.inputs, outputs=body.outputs,
                               kind=body.kind, transformation_id=body.transformation)


@router.get("/assets")
def list_assets(store: StoreDep, _: Actor = Depends(require_role("viewer")),
                kind: Annotated[str | None, Query(pattern=r"^(dataset|model|evaluation|deployment)$")] = None
                ) -> list[dict[str, Any]]:
    return lineage.list_assets(store, kind)


@router.get("/assets/{asset_id:path}")
def get_asset(asset_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    with store.session() as s:
        return registry.asset_view(s, registry.resolve(s, asset_id))


@router.get("/lineage/{asset_id:path}", summary="Ancestry, descendants and effective terms (computed now)")
def show_lineage(asset_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    return lineage.show(store, asset_id)


@router.get("/why/{asset_id:path}", summary="Why an asset may or may not be used for a purpose, with paths")
def why(asset_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer")),
        purpose: Annotated[str | None, Query(max_length=200)] = None,
        restriction: Annotated[str | None, Query(max_length=200)] = None) -> dict[str, Any]:
    return lineage.why(store, asset_id, purpose=purpose, restriction=restriction)


# ---------------------------------------------------------------- deployments


@router.post("/deployments", status_code=201)
def request_deployment(body: DeploymentIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    if (body.bundle_files is None) == (body.bundle_hash is None):
        raise BadInput("give exactly one of bundle_files or bundle_hash")
    return gate.request_deployment(store, actor, model=body.model, surface=body.surface, purpose=body.purpose,
                                   region=body.region, environment=body.environment, name=body.name,
                                   bundle_files=body.bundle_files, bundle_hash=body.bundle_hash)


@router.get("/deployments/{deployment_id}")
def get_deployment(deployment_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    return gate.deployment_view(store, deployment_id)


@router.post("/deployments/{deployment_id}/approvals", status_code=201)
def approve_deployment(deployment_id: str, body: ApprovalIn, store: StoreDep,
                       actor: Actor = Depends(require_role("approver"))) -> dict[str, Any]:
    return gate.approve_deployment(store, actor, deployment_id, body.comment)


@router.post("/deployments/{deployment_id}/check", summary="Evaluate the deployment gate and record the verdict")
def check_deployment(deployment_id: str, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return gate.check_deployment(store, actor, deployment_id)


@router.get("/deployments/{deployment_id}/verdicts")
def list_verdicts(deployment_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> list[dict[str, Any]]:
    return gate.verdicts_for(store, deployment_id)


@router.get("/bom/{model_id:path}", summary="The model's CycloneDX 1.6 ML-BOM (validated)")
def bom(model_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    from assay.govern.bom import export_bom

    return export_bom(store, model_id)


# ---------------------------------------------------------------- administration


@router.post("/tokens", status_code=201, summary="Create an API token (the secret is returned once)")
def make_token(body: TokenIn, store: StoreDep, actor: Actor = Depends(require_role("admin"))) -> dict[str, Any]:
    return create_token(store, actor, name=body.name, role=body.role)


@router.get("/audit", summary="The audit log of every mutation, newest first")
def audit_log(store: StoreDep, _: Actor = Depends(require_role("admin")),
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
        return [{"id": r.id, "ts": r.ts.isoformat(), "actor": r.actor, "role": r.role, "source": r.source,
                 "action": r.action, "target": r.target, "detail": r.detail} for r in rows]
