"""Trace routes: why a decision was made, aggregates, checkpoints and proofs. Viewers may read.

The log is ``ASSAY_HOME/trace`` unless the app sets ``app.state.trace_path``; it is opened
read-only per request (the guard's writer holds the write lock).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from assay.errors import AssayError
from assay.trace.cli import parse_time

try:  # the control plane's auth (the governance part); without it the routes are open
    from assay.server.auth import require_role

    _viewer = [Depends(require_role("viewer"))]
except ImportError:  # pragma: no cover - only before the governance part exists
    _viewer = []

router = APIRouter(prefix="/v1/trace", tags=["trace"], dependencies=_viewer)


class NotFound(AssayError):
    pass


def _open(request: Request):
    from assay.trace import TraceLog

    return TraceLog.open(getattr(request.app.state, "trace_path", None), read_only=True)


def _lineage(request: Request):
    store = getattr(request.app.state, "store", None)
    if store is None:
        return None
    try:
        from assay.govern import lineage
    except ImportError:  # pragma: no cover
        return None
    return lineage.resolver(store)


@router.get("/why")
def why(request: Request, item: Annotated[str, Query(min_length=1, max_length=1024)],
        subject: Annotated[str, Query(min_length=1, max_length=1024)],
        at: Annotated[str | None, Query(description="unix seconds or ISO 8601")] = None) -> dict[str, Any]:
    """The decision about ``item`` for ``subject`` at ``at``: rules with reasons, bundle, models
    with lineage, breaker state, attribution, and an inclusion proof."""
    from assay.trace.query import why as why_query

    with _open(request) as log:
        answer = why_query(log, item, subject, parse_time(at), lineage=_lineage(request))
    if answer is None:
        raise _not_found(f"no decision about item {item!r} for that subject")
    return answer


def _not_found(message: str) -> AssayError:
    try:
        from assay.govern.registry import NotFound as GovernNotFound

        return GovernNotFound(message)
    except ImportError:  # pragma: no cover
        return NotFound(message)


@router.get("/aggregate")
def aggregate(request: Request, by: Annotated[list[str], Query()] = ["rule"],  # noqa: B006 - FastAPI reads the default
              bucket: str | None = None, since: str | None = None, until: str | None = None) -> dict[str, Any]:
    """Decision counts grouped by rule / surface / action (and a time bucket)."""
    with _open(request) as log:
        return {"records": log.size, "groups": log.aggregate(by, bucket, parse_time(since), parse_time(until))}


@router.get("/checkpoint")
def checkpoint(request: Request) -> dict[str, Any]:
    """The newest signed checkpoint (C2SP note text) and the verifier key."""
    with _open(request) as log:
        found = log.latest_checkpoint()
        if found is None:
            raise _not_found("the trace has no checkpoint yet")
        cp, note = found
        return {"size": cp.size, "root_hash": cp.root.hex(), "note": note, "verifier_key": log.verifier.vkey()}


@router.get("/proof/inclusion/{index}")
def inclusion(request: Request, index: int, tree_size: int | None = None) -> dict[str, Any]:
    """Inclusion proof bundle for record ``index`` (check it with `assay trace check`)."""
    with _open(request) as log:
        return log.prove_inclusion(index, tree_size)


@router.get("/proof/consistency")
def consistency(request: Request, old_size: int, new_size: int | None = None) -> dict[str, Any]:
    """Consistency proof between two checkpoints."""
    with _open(request) as log:
        return log.prove_consistency(old_size, new_size)
