"""principals own tokens; tokens expire and record who they were delegated by; approvals are
unique per accountable principal; the audit log records each outcome

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08 10:00:00

Existing tokens get a principal of their name (a person) and expire 90 days after the upgrade;
existing approvals are accountable to their approver; existing audit entries were outcomes "ok".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MIGRATED_TOKEN_DAYS = 90


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_principals")),
    )
    conn = op.get_bind()
    now = datetime.now(UTC)
    names = [r[0] for r in conn.execute(sa.text("SELECT DISTINCT name FROM api_tokens"))]
    if names:
        principals = sa.table("principals", sa.column("name"), sa.column("kind"), sa.column("created_at"),
                              sa.column("created_by"))
        op.bulk_insert(principals, [{"name": n, "kind": "person", "created_at": now, "created_by": "migration 0002"}
                                    for n in names])

    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("delegated_by", sa.String(length=255), nullable=True))
    conn.execute(sa.text("UPDATE api_tokens SET expires_at = :at"),
                 {"at": now + timedelta(days=MIGRATED_TOKEN_DAYS)})
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_foreign_key(batch_op.f("fk_api_tokens_name_principals"), "principals", ["name"], ["name"])

    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accountable", sa.String(length=255), nullable=True))
    conn.execute(sa.text("UPDATE approvals SET accountable = approver"))
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.alter_column("accountable", existing_type=sa.String(length=255), nullable=False)
        batch_op.create_unique_constraint("uq_approvals_subject_accountable", ["subject_id", "accountable"])

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcome", sa.String(length=32), server_default="ok", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("outcome")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_constraint("uq_approvals_subject_accountable", type_="unique")
        batch_op.drop_column("accountable")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_tokens_name_principals"), type_="foreignkey")
        batch_op.drop_column("delegated_by")
        batch_op.drop_column("expires_at")
    op.drop_table("principals")
