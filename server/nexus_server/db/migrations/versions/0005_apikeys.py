"""API keys and rate-limit overrides.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("environment", sa.String(8), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=False),
        sa.Column("start", sa.String(40), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("previous_secret_hash", sa.String(64), nullable=True),
        sa.Column("previous_secret_expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(40), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotate_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_event_time", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_tenant_id_create_time_id", "api_keys", ["tenant_id", "create_time", "id"])
    op.create_index("ix_api_keys_expire_time", "api_keys", ["expire_time"])
    op.create_table(
        "rate_limit_overrides",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("limit_per_minute", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "subject", name="pk_rate_limit_overrides"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_overrides")
    op.drop_index("ix_api_keys_expire_time", table_name="api_keys")
    op.drop_index("ix_api_keys_tenant_id_create_time_id", table_name="api_keys")
    op.drop_table("api_keys")
