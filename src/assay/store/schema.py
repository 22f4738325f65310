"""The tables of the metadata store (SQLAlchemy 2 ORM).

The Alembic migrations under ``assay/store/migrations`` create exactly these tables; a test
compares the migrated database with this metadata so the two cannot drift apart.

Assets are versioned and never updated in place: a change is a new row with the next
``version``. Only operational rows (token revocation) are ever updated.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class Asset(Base):
    """A dataset, model, evaluation run or deployment, one row per version."""

    __tablename__ = "assets"
    __table_args__ = (sa.UniqueConstraint("kind", "namespace", "name", "version", name="uq_assets_identity"),)

    id: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32), index=True)
    namespace: Mapped[str] = mapped_column(sa.String(255), default="assay")
    name: Mapped[str] = mapped_column(sa.String(255))
    version: Mapped[int] = mapped_column(sa.Integer)
    uri: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    owner: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    licence: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    purposes: Mapped[list[str]] = mapped_column(JSONType, default=list)
    restrictions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    content_hash: Mapped[str | None] = mapped_column(sa.String(64), nullable=True)
    subject_id: Mapped[str | None] = mapped_column(
        sa.String(512), sa.ForeignKey("assets.id"), nullable=True, index=True
    )
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))


class AssetFile(Base):
    """One file of a dataset manifest or one weights file of a model, by sha256."""

    __tablename__ = "asset_files"

    asset_id: Mapped[str] = mapped_column(sa.String(512), sa.ForeignKey("assets.id"), primary_key=True)
    path: Mapped[str] = mapped_column(sa.String(1024), primary_key=True)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    size: Mapped[int] = mapped_column(sa.BigInteger)


class Transformation(Base):
    """A registered transformation (for example anonymisation) that may lift restrictions once approved."""

    __tablename__ = "transformations"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    lifts: Mapped[list[str]] = mapped_column(JSONType, default=list)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))


class Run(Base):
    """A lineage run: inputs to outputs (training, transformation, evaluation, ingestion)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    job_namespace: Mapped[str] = mapped_column(sa.String(255), default="assay")
    job_name: Mapped[str] = mapped_column(sa.String(255))
    kind: Mapped[str] = mapped_column(sa.String(32), default="other")
    transformation_id: Mapped[str | None] = mapped_column(
        sa.String(255), sa.ForeignKey("transformations.id"), nullable=True
    )
    state: Mapped[str] = mapped_column(sa.String(32), default="COMPLETE")
    facets: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    event_time: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))


class RunIO(Base):
    """A lineage edge half: an asset read (input) or written (output) by a run."""

    __tablename__ = "run_io"

    run_id: Mapped[str] = mapped_column(sa.String(255), sa.ForeignKey("runs.id"), primary_key=True)
    asset_id: Mapped[str] = mapped_column(
        sa.String(512), sa.ForeignKey("assets.id"), primary_key=True, index=True
    )
    direction: Mapped[str] = mapped_column(sa.String(8), primary_key=True)  # input | output


class RestrictionLift(Base):
    """The record that an approved transformation lifted a restriction in a run."""

    __tablename__ = "restriction_lifts"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(sa.String(255), sa.ForeignKey("runs.id"), index=True)
    transformation_id: Mapped[str] = mapped_column(sa.String(255), sa.ForeignKey("transformations.id"))
    restriction: Mapped[str] = mapped_column(sa.String(255))
    recorded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    recorded_by: Mapped[str] = mapped_column(sa.String(255))


class Approval(Base):
    """An approval of a deployment or a transformation by one person.

    ``accountable`` is the principal answerable for it: the approver, or whoever minted the token
    it was made with when someone else did (they saw the secret). The database holds at most one
    approval per subject and accountable principal, so concurrent duplicates cannot both land.
    """

    __tablename__ = "approvals"
    __table_args__ = (sa.UniqueConstraint("subject_id", "approver", name="uq_approvals_subject_approver"),
                      sa.UniqueConstraint("subject_id", "accountable", name="uq_approvals_subject_accountable"))

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(sa.String(32))  # deployment | transformation
    subject_id: Mapped[str] = mapped_column(sa.String(512), index=True)
    approver: Mapped[str] = mapped_column(sa.String(255))
    accountable: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(32))
    comment: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)


class PolicyBundleRow(Base):
    """The source files of a policy bundle, kept by hash so a verdict can be re-checked later."""

    __tablename__ = "policy_bundles"

    hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    version: Mapped[str] = mapped_column(sa.String(64))
    files: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))


class Verdict(Base):
    """Every deployment-gate verdict, with the bundle hash that made it."""

    __tablename__ = "verdicts"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    deployment_id: Mapped[str] = mapped_column(sa.String(512), sa.ForeignKey("assets.id"), index=True)
    allowed: Mapped[bool] = mapped_column(sa.Boolean)
    bundle_hash: Mapped[str] = mapped_column(sa.String(64))
    summary: Mapped[str] = mapped_column(sa.Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    checked_by: Mapped[str] = mapped_column(sa.String(255))


class Principal(Base):
    """Someone who holds tokens: a person (may approve) or a service (may not)."""

    __tablename__ = "principals"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(16), default="person")  # person | service
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))


class ApiToken(Base):
    """An API token of a principal (``name``); only its sha256 is stored (tokens are 256-bit
    random, so a fast hash is enough). Every token expires. ``delegated_by`` is set when the token
    was minted over the API by someone other than its principal: that person saw the secret, so
    what the token approves counts as theirs."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(255), sa.ForeignKey("principals.name"), index=True)
    role: Mapped[str] = mapped_column(sa.String(32))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(255))
    expires_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    delegated_by: Mapped[str | None] = mapped_column(sa.String(255), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    """Every mutation: who, what, when, from where, and the outcome (``ok``, or ``refused <status>``
    for an attempt that was turned away, written in its own transaction)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(32))
    source: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(64))
    target: Mapped[str] = mapped_column(sa.String(512))
    outcome: Mapped[str] = mapped_column(sa.String(32), default="ok", server_default="ok")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
