"""The event log (outbox) and per-tenant stream heads.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_streams",
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("head_sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_event_streams"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("tenant_id", "sequence", name="uq_events_tenant_id_sequence"),
        sa.UniqueConstraint(
            "tenant_id", "source", "idempotency_key", name="uq_events_tenant_id_source_idempotency_key"
        ),
    )
    op.create_index("ix_events_tenant_id_type_sequence", "events", ["tenant_id", "type", "sequence"])


def downgrade() -> None:
    op.drop_index("ix_events_tenant_id_type_sequence", table_name="events")
    op.drop_table("events")
    op.drop_table("event_streams")
