"""Password-reset requests, answered in the background (constant-time RequestPasswordReset).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reset_requests",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reset_requests"),
    )
    op.create_index("ix_reset_requests_create_time", "reset_requests", ["create_time"])


def downgrade() -> None:
    op.drop_table("reset_requests")
