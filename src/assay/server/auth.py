"""Role-based access for every route of the control plane: the bearer token of each request is
checked by ``assay.govern.tokens`` (which owns tokens and principals; re-exported here) and its
role compared; ``require_role("engineer")`` admits engineers and above.

    from assay.server.auth import require_role
    @router.post("/things")
    def make(actor: Actor = Depends(require_role("engineer"))): ...
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from assay.govern.registry import ROLES, Actor, Forbidden
from assay.govern.tokens import (
    Unauthorized,
    authenticate,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
    token_actor,
)
from assay.store import Store

__all__ = [
    "ROLES",
    "Actor",
    "Unauthorized",
    "authenticate",
    "create_token",
    "get_store",
    "hash_token",
    "list_tokens",
    "require_role",
    "revoke_token",
    "token_actor",
]

bearer = HTTPBearer(auto_error=False, description="An API token from `assay token create`.")


def get_store(request: Request) -> Store:
    return request.app.state.store


def client_source(request: Request, scheme: str = "http") -> str:
    """``http:<client>`` as the app determined it (the socket's peer, or the address a trusted
    proxy forwarded, then ``via <proxy>``; see ``assay.server.app.Intake``)."""
    state = request.scope.get("state", {})
    client = state.get("client_host") or (request.client.host if request.client else "unknown")
    peer = state.get("peer")
    return f"{scheme}:{client}" + (f" via {peer}" if peer and peer != client else "")


def require_role(role: str) -> Callable[..., Actor]:
    """A FastAPI dependency: 401 without a valid token, 403 when the token's role is below ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def dependency(request: Request,
                   credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Actor:
        if credentials is None:
            raise Unauthorized("missing API token: send 'Authorization: Bearer <token>'",
                               hint="create one with `assay token create --name NAME --role ROLE`")
        actor = authenticate(get_store(request), credentials.credentials, source=client_source(request), remote=True)
        request.state.actor = actor
        if not actor.at_least(role):
            raise Forbidden(f"{actor.name} has role {actor.role!r}; this needs {role!r} or higher")
        return actor

    dependency.__name__ = f"require_{role}"
    return dependency
