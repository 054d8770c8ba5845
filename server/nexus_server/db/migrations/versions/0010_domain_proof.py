"""Custom domains need proof of control: a verification token and time per tenant.

Revision ID: 0010
Revises: 0009

A domain is unique only among verified ones, and resolves to its tenant only once verified.
Domains set before this revision were never proved: they become pending (a token is minted
for each) and stop resolving until their tenant verifies them, the safe side of the change.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("domain_token", sa.String(64), nullable=True))
        batch.add_column(sa.Column("domain_verify_time", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("uq_tenants_domain", table_name="tenants")
    verified = sa.text("status <> 'deleted' AND domain_verify_time IS NOT NULL")
    op.create_index(
        "uq_tenants_domain",
        "tenants",
        ["domain"],
        unique=True,
        postgresql_where=verified,
        sqlite_where=verified,
    )
    bind = op.get_bind()
    for (tenant_id,) in bind.execute(sa.text("SELECT id FROM tenants WHERE domain IS NOT NULL")):
        token = "".join(secrets.choice(_ALPHABET) for _ in range(32))
        bind.execute(
            sa.text("UPDATE tenants SET domain_token = :token WHERE id = :id"), {"token": token, "id": tenant_id}
        )


def downgrade() -> None:
    op.drop_index("uq_tenants_domain", table_name="tenants")
    not_deleted = sa.text("status <> 'deleted'")
    op.create_index(
        "uq_tenants_domain",
        "tenants",
        ["domain"],
        unique=True,
        postgresql_where=not_deleted,
        sqlite_where=not_deleted,
    )
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("domain_verify_time")
        batch.drop_column("domain_token")
