"""API tokens and role-based access for every route.

Tokens are 256-bit random strings shown once; the store keeps only their sha256 (a slow password
hash buys nothing for high-entropy secrets and would cost on every request). Roles are ordered
viewer < engineer < approver < admin; ``require_role("engineer")`` admits engineers and above.

    from assay.server.auth import require_role
    @router.post("/things")
    def make(actor: Actor = Depends(require_role("engineer"))): ...
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from assay.errors import BadInput
from assay.govern.registry import ROLES, Actor, audit
from assay.store import Store
from assay.store.schema import ApiToken

__all__ = ["ROLES", "Actor", "create_token", "get_store", "require_role", "revoke_token", "token_actor"]

TOKEN_PREFIX = "assay_"
bearer = HTTPBearer(auto_error=False, description="An API token from `assay token create`.")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, actor: Actor, *, name: str, role: str) -> dict[str, Any]:
    """Make a token for ``name`` with ``role``; the secret is returned once and never stored."""
    if role not in ROLES:
        raise BadInput(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not name or len(name) > 255 or not name.strip() == name:
        raise BadInput(f"token name {name!r} must be 1-255 characters without surrounding spaces")
    actor.require("admin", "creating API tokens")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = secrets.token_hex(8)
    with store.session() as s:
        s.add(ApiToken(id=token_id, name=name, role=role, token_hash=hash_token(secret), created_by=actor.name))
        audit(s, actor, "create_token", token_id, {"name": name, "role": role})
    return {"id": token_id, "name": name, "role": role, "token": secret}


def revoke_token(store: Store, actor: Actor, token_id: str) -> dict[str, Any]:
    actor.require("admin", "revoking API tokens")
    with store.session() as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            from assay.govern.registry import NotFound

            raise NotFound(f"no token {token_id!r}")
        row.revoked_at = datetime.now(UTC)
        audit(s, actor, "revoke_token", token_id, {"name": row.name})
    return {"id": token_id, "revoked": True}


def token_actor(store: Store, token: str, source: str = "api") -> Actor | None:
    """The person a token belongs to, or None for an unknown or revoked token."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with store.session() as s:
        row = s.scalar(sa.select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
        if row is None or row.revoked_at is not None:
            return None
        return Actor(name=row.name, role=row.role, source=source)


def get_store(request: Request) -> Store:
    return request.app.state.store


def require_role(role: str) -> Callable[..., Actor]:
    """A FastAPI dependency: 401 without a valid token, 403 when the token's role is below ``role``."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    def dependency(request: Request,
                   credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Actor:
        if credentials is None:
            raise HTTPException(401, "missing API token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        source = request.client.host if request.client else "unknown"
        actor = token_actor(get_store(request), credentials.credentials, source=f"http:{source}")
        if actor is None:
            raise HTTPException(401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"})
        if not actor.at_least(role):
            raise HTTPException(403, f"{actor.name} has role {actor.role!r}; this needs {role!r} or higher")
        request.state.actor = actor
        return actor

    dependency.__name__ = f"require_{role}"
    return dependency
