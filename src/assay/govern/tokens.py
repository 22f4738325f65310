"""API tokens and the principals who hold them: minting, revoking, listing and authenticating.

Tokens are 256-bit random strings shown once; the store keeps only their sha256 (a slow password
hash buys nothing for high-entropy secrets and would cost on every request). Roles are ordered
viewer < engineer < approver < admin (``assay.govern.registry.ROLES``).

Every token belongs to a principal, a person or a service (services may not approve), and
expires (``ASSAY_TOKEN_TTL_DAYS``, default 90, at most 365). A token minted over the API by
someone for another principal is *delegated*: its minter saw the secret, so anything the token
approves is counted as the minter's (``Actor.accountable``). An admin therefore cannot mint
tokens that count as other people's approvals; tokens minted by the operator on the server
(``assay token create``, with direct access to the store) are the principal's own.

This is governance, not HTTP: the control plane (``assay.server.auth``), the guard's service
entry point and the CLI's ``--token`` all check tokens here, so no engine imports the face.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from assay.errors import AssayError, BadInput
from assay.govern.registry import NAME_RE, ROLES, Actor, NotFound, audit
from assay.store import Store
from assay.store.schema import ApiToken, Principal

__all__ = ["ANONYMOUS", "ROLES", "Actor", "Unauthorized", "authenticate", "create_token", "hash_token", "list_tokens",
           "revoke_token", "token_actor"]

TOKEN_PREFIX = "assay_"
# who the audit log names for a request without a valid token: no principal may be called that,
# or a refusal to nobody and an act by someone would read alike (compared case-insensitively)
ANONYMOUS = "anonymous"
RESERVED_NAMES = frozenset({ANONYMOUS})
KINDS = ("person", "service")
DEFAULT_TTL_DAYS = 90
MAX_TTL_DAYS = 365


class Unauthorized(AssayError):
    """No valid token (HTTP 401)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def default_ttl_days() -> int:
    from assay.config import int_setting

    return int_setting("ASSAY_TOKEN_TTL_DAYS", DEFAULT_TTL_DAYS, 1, MAX_TTL_DAYS)


def create_token(store: Store, actor: Actor, *, name: str, role: str, kind: str = "person",
                 expires_in_days: int | None = None) -> dict[str, Any]:
    """Make a token for principal ``name`` (created as a ``kind`` if new) with ``role``; the secret
    is returned once and never stored."""
    actor.require("admin", "creating API tokens")
    if role not in ROLES:
        raise BadInput(f"role: unknown role {role!r}; one of {', '.join(ROLES)}")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadInput(f"name: {name!r} is not a valid principal name (letters, digits and ._/:+- ; at most 255)")
    if name.lower() in RESERVED_NAMES:
        raise BadInput(f"name: {name!r} is reserved (the audit log's name for requests without a valid token); choose another")
    if kind not in KINDS:
        raise BadInput(f"kind: {kind!r} must be one of {', '.join(KINDS)}")
    days = default_ttl_days() if expires_in_days is None else expires_in_days
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_TTL_DAYS:
        raise BadInput(f"expires_in_days: {days!r} must be a whole number from 1 to {MAX_TTL_DAYS}")
    # minted over the API for someone else: the minter knows the secret and answers for its use
    delegated_by = actor.accountable if actor.token_id is not None and actor.accountable != name else None
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = secrets.token_hex(8)
    now = datetime.now(UTC)
    expires_at = now + timedelta(days=days)
    with store.session() as s:
        principal = s.get(Principal, name)
        if principal is None:
            s.add(Principal(name=name, kind=kind, created_by=actor.name))
            s.flush()
            audit(s, actor, "create_principal", name, {"kind": kind})
        elif principal.kind != kind:
            raise BadInput(f"kind: principal {name!r} is a {principal.kind}, not a {kind}")
        s.add(ApiToken(id=token_id, name=name, role=role, token_hash=hash_token(secret), created_by=actor.name,
                       created_at=now, expires_at=expires_at, delegated_by=delegated_by))
        audit(s, actor, "create_token", token_id, {"name": name, "role": role, "kind": kind,
                                                   "expires_at": expires_at.isoformat(), "delegated_by": delegated_by})
    return {"id": token_id, "name": name, "role": role, "kind": kind, "token": secret,
            "expires_at": expires_at.isoformat(), "delegated_by": delegated_by}


def revoke_token(store: Store, actor: Actor, token_id: str) -> dict[str, Any]:
    actor.require("admin", "revoking API tokens")
    with store.session() as s:
        row = s.get(ApiToken, token_id) if isinstance(token_id, str) and len(token_id) <= 32 else None
        if row is None:
            raise NotFound(f"no token {str(token_id)[:40]!r}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
        audit(s, actor, "revoke_token", token_id, {"name": row.name})
    return {"id": token_id, "revoked": True}


def list_tokens(store: Store, actor: Actor) -> list[dict[str, Any]]:
    """Every token without its secret: principal, role, expiry, who minted it, revocation."""
    actor.require("admin", "listing API tokens")
    with store.session() as s:
        rows = s.execute(sa.select(ApiToken, Principal.kind).join(Principal, Principal.name == ApiToken.name)
                         .order_by(ApiToken.created_at)).all()
        return [{"id": t.id, "name": t.name, "kind": kind, "role": t.role, "created_at": _iso(t.created_at),
                 "created_by": t.created_by, "expires_at": _iso(t.expires_at), "delegated_by": t.delegated_by,
                 "revoked_at": _iso(t.revoked_at)} for t, kind in rows]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _aware(value).isoformat()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive UTC back


def authenticate(store: Store, token: str, source: str = "api", *, remote: bool = False) -> Actor:
    """The actor a token stands for, or ``Unauthorized`` saying why not (unknown, revoked, expired)."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("invalid API token", hint="send 'Authorization: Bearer <token>' with a token from `assay token create`")
    with store.session() as s:
        found = s.execute(sa.select(ApiToken, Principal.kind).join(Principal, Principal.name == ApiToken.name)
                          .where(ApiToken.token_hash == hash_token(token))).first()
        if found is None:
            raise Unauthorized("invalid API token", hint="ask an admin for a token (`assay token create`)")
        row, kind = found
        if row.revoked_at is not None:
            raise Unauthorized("this API token was revoked", hint="ask an admin for a new token")
        if _aware(row.expires_at) <= datetime.now(UTC):
            raise Unauthorized(f"this API token expired at {_iso(row.expires_at)}", hint="ask an admin for a new token")
        return Actor(name=row.name, role=row.role, source=source, kind=kind, token_id=row.id,
                     delegated_by=row.delegated_by, remote=remote)


def token_actor(store: Store, token: str, source: str = "api", *, remote: bool = False) -> Actor | None:
    """The principal a token stands for, or None for an unknown, revoked or expired token."""
    try:
        return authenticate(store, token, source, remote=remote)
    except Unauthorized:
        return None
