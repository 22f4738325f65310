"""Governance routes: registry, lineage (OpenLineage ingest at ``/api/v1/lineage``), deployments,
approvals, verdicts, ML-BOM, tokens and the audit log. Every route needs a role."""

from __future__ import annotations

import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from assay.errors import BadInput
from assay.govern import gate, lineage, openlineage, registry
from assay.govern.registry import Actor
from assay.govern.schemas import (
    ApprovalIn,
    DatasetIn,
    DeploymentIn,
    EvaluationIn,
    ModelIn,
    RunIn,
    TokenIn,
    TransformationIn,
)
from assay.server.auth import create_token, get_store, list_tokens, require_role, revoke_token
from assay.store import Store
from assay.store.schema import AuditEntry
from assay.store.values import INPUT_DEPTH, Unstorable, check_json

router = APIRouter(prefix="/api/v1", tags=["govern"])

StoreDep = Annotated[Store, Depends(get_store)]
# the request bodies are the registry's own schema layer (assay.govern.schemas): one set of limits


# How one operation's answer feeds the next (OpenAPI links): documentation for clients, and the
# paths the stateful attack (assay.server.attack) follows. (source path, method, status) ->
# [(target path, method, parameter, where the value comes from)].
_ID = "$response.body#/id"
OPENAPI_LINKS: dict[tuple[str, str, str], list[tuple[str, str, str, str]]] = {
    ("/api/v1/datasets", "post", "201"): [("/api/v1/assets/{asset_id}", "get", "asset_id", _ID),
                                          ("/api/v1/lineage/{asset_id}", "get", "asset_id", _ID),
                                          ("/api/v1/why/{asset_id}", "get", "asset_id", _ID)],
    ("/api/v1/models", "post", "201"): [("/api/v1/assets/{asset_id}", "get", "asset_id", _ID),
                                        ("/api/v1/bom/{model_id}", "get", "model_id", _ID),
                                        ("/api/v1/lineage/{asset_id}", "get", "asset_id", _ID)],
    ("/api/v1/evaluations", "post", "201"): [("/api/v1/assets/{asset_id}", "get", "asset_id", _ID)],
    ("/api/v1/transformations", "post", "201"): [
        ("/api/v1/transformations/{transformation_id}/approve", "post", "transformation_id", _ID)],
    ("/api/v1/deployments", "post", "201"): [
        ("/api/v1/deployments/{deployment_id}", "get", "deployment_id", _ID),
        ("/api/v1/deployments/{deployment_id}/approvals", "post", "deployment_id", _ID),
        ("/api/v1/deployments/{deployment_id}/check", "post", "deployment_id", _ID),
        ("/api/v1/deployments/{deployment_id}/verdicts", "get", "deployment_id", _ID)],
    ("/api/v1/deployments/{deployment_id}/check", "post", "200"): [
        ("/api/v1/deployments/{deployment_id}/verdicts", "get", "deployment_id", "$request.path.deployment_id")],
    ("/api/v1/tokens", "post", "201"): [("/api/v1/tokens/{token_id}/revoke", "post", "token_id", _ID)],
    ("/api/v1/runs", "post", "201"): [("/api/v1/runs/{run_id}/openlineage", "get", "run_id", _ID)],
}


# ---------------------------------------------------------------- OpenLineage

OPENLINEAGE_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "description": "An OpenLineage RunEvent (https://openlineage.io/spec/2-0-2/OpenLineage.json)"}}}}}


@router.post("/lineage", status_code=201, openapi_extra=OPENLINEAGE_BODY, summary="Ingest an OpenLineage RunEvent")
async def ingest_openlineage(request: Request, store: StoreDep,
                             actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    """The endpoint the standard OpenLineage HTTP transport posts to (gzip accepted: the app
    inflates it, bounded, before any route runs)."""
    raw = await request.body()
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise BadInput(f"body is not JSON: {str(e)[:200]}") from None
    if not isinstance(event, dict):
        raise BadInput(f"body must be a JSON object (a RunEvent), not {type(event).__name__}")
    try:
        # its shape and numbers; names are mapped to storable ids by the ingest, and whatever else
        # is kept passes the store's own check (assay.store.values) before it is written
        check_json(event, "body", max_depth=INPUT_DEPTH, strings=False)
    except Unstorable as e:
        raise BadInput(e.message, hint="an OpenLineage RunEvent nests a few levels deep; this one cannot be stored") from None
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(openlineage.ingest, store, actor, event)


@router.get("/runs/{run_id}/openlineage", summary="A recorded run as an OpenLineage RunEvent",
            response_model=dict[str, Any])
def run_as_openlineage(run_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> Response:
    """ASCII JSON: names are kept exactly as they were ingested, a lone surrogate too, which no
    UTF-8 body can carry; it goes back as the JSON escape (``\\ud800``) it came in as."""
    return Response(json.dumps(openlineage.run_event(store, run_id), allow_nan=False), media_type="application/json")


# ---------------------------------------------------------------- registry


@router.post("/datasets", status_code=201)
def register_dataset(body: DatasetIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    """Register a dataset: its manifest, or a path under the server's data roots to hash."""
    restrictions = registry.restriction_terms(body.restrictions, contains_minors=body.contains_minors,
                                              consent_scope=body.consent_scope, region=body.region,
                                              retention_days=body.retention_days)
    return registry.register_dataset(
        store, actor, name=body.name, uri=body.uri, purposes=body.purposes, restrictions=restrictions,
        owner=body.owner, licence=body.licence, schema=body.data_schema,
        files=[f.model_dump() for f in body.files] if body.files is not None else None, withdrawal=body.withdrawal)


@router.post("/models", status_code=201)
def register_model(body: ModelIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    """Register a model: weights paths under the server's data roots, or a manifest and its folder."""
    return registry.register_model(
        store, actor, name=body.name, weights=body.weights, uri=body.uri,
        files=[f.model_dump() for f in body.files] if body.files is not None else None,
        framework=body.framework, trained_on=body.trained_on, training_run=body.training_run,
        purposes=body.purposes, restrictions=body.restrictions, owner=body.owner, licence=body.licence,
        transformation=body.transformation)


@router.post("/evaluations", status_code=201)
def register_evaluation(body: EvaluationIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return registry.register_evaluation(store, actor, body.model_dump(exclude={"model"}), body.model)


@router.post("/transformations", status_code=201)
def register_transformation(body: TransformationIn, store: StoreDep,
                            actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return registry.register_transformation(store, actor, name=body.name, lifts=body.lifts, description=body.description)


@router.post("/transformations/{transformation_id:path}/approve", status_code=201)
def approve_transformation(transformation_id: str, body: ApprovalIn, store: StoreDep,
                           actor: Actor = Depends(require_role("approver"))) -> dict[str, Any]:
    return registry.approve_transformation(store, actor, transformation_id, body.comment)


@router.post("/runs", status_code=201, summary="Record a lineage run between registered assets")
def record_run(body: RunIn, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return registry.record_run(store, actor, job_name=body.job_name, inputs=body.inputs, outputs=body.outputs,
                               kind=body.kind, transformation_id=body.transformation)


@router.get("/assets", summary="Registered assets by kind, name and version, a page at a time (Link: rel=next)")
def list_assets(request: Request, response: Response, store: StoreDep, _: Actor = Depends(require_role("viewer")),
                kind: Annotated[str | None, Query(pattern=r"^(dataset|model|evaluation|deployment)$")] = None,
                limit: Annotated[int, Query(ge=1, le=lineage.LIST_PAGE_MAX)] = lineage.LIST_PAGE_MAX,
                offset: Annotated[int, Query(ge=0, le=lineage.MAX_OFFSET)] = 0) -> list[dict[str, Any]]:
    # one more than asked says whether a next page exists without counting the registry
    page = lineage.list_assets(store, kind, limit=limit + 1, offset=offset)
    if len(page) > limit:
        page = page[:limit]
        following = request.url.include_query_params(offset=offset + limit, limit=limit)
        response.headers["link"] = f'<{following.path}?{following.query}>; rel="next"'
    return page


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
    return gate.request_deployment(store, actor, model=body.model, surface=body.surface, purpose=body.purpose,
                                   region=body.region, environment=body.environment, name=body.name,
                                   bundle_files=body.bundle_files, bundle_hash=body.bundle_hash)


# Ids hold '/' wherever names do (a deployment of model 'team/ranker'), so every id in a path is a
# ``:path`` parameter. An id ends in '@version', so '<id>/verdicts' is never itself an id; the
# verdicts route comes first so that it is not read as the deployment '<id>/verdicts'.
@router.get("/deployments/{deployment_id:path}/verdicts")
def list_verdicts(deployment_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> list[dict[str, Any]]:
    return gate.verdicts_for(store, deployment_id)


@router.get("/deployments/{deployment_id:path}")
def get_deployment(deployment_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    return gate.deployment_view(store, deployment_id)


@router.post("/deployments/{deployment_id:path}/approvals", status_code=201)
def approve_deployment(deployment_id: str, body: ApprovalIn, store: StoreDep,
                       actor: Actor = Depends(require_role("approver"))) -> dict[str, Any]:
    return gate.approve_deployment(store, actor, deployment_id, body.comment)


@router.post("/deployments/{deployment_id:path}/check", summary="Evaluate the deployment gate and record the verdict")
def check_deployment(deployment_id: str, store: StoreDep, actor: Actor = Depends(require_role("engineer"))) -> dict[str, Any]:
    return gate.check_deployment(store, actor, deployment_id)


@router.get("/bom/{model_id:path}", summary="The model's CycloneDX 1.6 ML-BOM (validated)")
def bom(model_id: str, store: StoreDep, _: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    from assay.govern.bom import export_bom

    return export_bom(store, model_id)


# ---------------------------------------------------------------- administration


@router.post("/tokens", status_code=201, summary="Create an API token (the secret is returned once)")
def make_token(body: TokenIn, store: StoreDep, actor: Actor = Depends(require_role("admin"))) -> dict[str, Any]:
    """A token for a principal (created as a person or service if new). Minted here for someone
    else, the token is delegated: what it approves counts as the minting admin's."""
    return create_token(store, actor, name=body.name, role=body.role, kind=body.kind,
                        expires_in_days=body.expires_in_days)


@router.get("/tokens", summary="Every API token, without secrets")
def tokens(store: StoreDep, actor: Actor = Depends(require_role("admin"))) -> list[dict[str, Any]]:
    return list_tokens(store, actor)


@router.post("/tokens/{token_id}/revoke", summary="Revoke an API token")
def revoke(token_id: Annotated[str, Path(max_length=32)], store: StoreDep,
           actor: Actor = Depends(require_role("admin"))) -> dict[str, Any]:
    return revoke_token(store, actor, token_id)


@router.get("/whoami", summary="The principal, role and token this request was made with")
def whoami(actor: Actor = Depends(require_role("viewer"))) -> dict[str, Any]:
    return {"name": actor.name, "role": actor.role, "kind": actor.kind, "token": actor.token_id,
            "delegated_by": actor.delegated_by, "accountable": actor.accountable, "source": actor.source}


@router.get("/audit", summary="The audit log of every mutation, newest first")
def audit_log(store: StoreDep, _: Actor = Depends(require_role("admin")),
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
        return [{"id": r.id, "ts": r.ts.isoformat(), "actor": r.actor, "role": r.role, "source": r.source,
                 "action": r.action, "target": r.target, "outcome": r.outcome, "detail": r.detail} for r in rows]
