"""The events capability: append time, publisher key, tenant-wide idempotency keys.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added nullable, filled from `time` (which was the append time until now), then
    # made NOT NULL; batch mode because SQLite cannot alter a column in place.
    op.add_column("events", sa.Column("create_time", sa.DateTime(timezone=True), nullable=True))
    op.add_column("events", sa.Column("publisher_api_key_id", sa.String(64), nullable=True))
    op.execute("UPDATE events SET create_time = time WHERE create_time IS NULL")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("create_time", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_unique_constraint(
            "uq_events_tenant_id_idempotency_key", ["tenant_id", "idempotency_key"]
        )
    op.create_index("ix_events_tenant_id_create_time", "events", ["tenant_id", "create_time"])


def downgrade() -> None:
    op.drop_index("ix_events_tenant_id_create_time", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("uq_events_tenant_id_idempotency_key", type_="unique")
        batch.drop_column("publisher_api_key_id")
        batch.drop_column("create_time")
