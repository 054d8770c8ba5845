"""Outbound webhooks: endpoints, deliveries, their attempts, redelivery idempotency keys.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("types", sa.JSON, nullable=False),
        sa.Column("sources", sa.JSON, nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("disabled_reason", sa.String(16), nullable=False),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("previous_secret", sa.LargeBinary, nullable=True),
        _time("previous_secret_expire_time", True),
        sa.Column("cursor", sa.BigInteger, nullable=False),
        _time("hold_until", True),
        _time("failing_since", True),
        sa.Column("lease_owner", sa.String(40), nullable=True),
        _time("lease_until", True),
        _time("create_time"),
        _time("update_time"),
    )
    op.create_index("ix_webhook_endpoints_tenant_id_id", "webhook_endpoints", ["tenant_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        sa.Column("event_id", sa.String(40), nullable=False),
        sa.Column("event_sequence", sa.BigInteger, nullable=False),
        sa.Column("event_type", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt_count", sa.Integer, nullable=False),
        sa.Column("response_status_code", sa.Integer, nullable=False),
        sa.Column("last_error", sa.String(1024), nullable=False),
        _time("last_attempt_time", True),
        _time("next_attempt_time", True),
        _time("create_time"),
        sa.Column("redelivery", sa.Boolean, nullable=False),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_open",
        "webhook_deliveries",
        ["endpoint_id", "status", "event_sequence"],
    )
    op.create_index("ix_webhook_deliveries_endpoint_id_id", "webhook_deliveries", ["endpoint_id", "id"])
    op.create_index(
        "ux_webhook_deliveries_original",
        "webhook_deliveries",
        ["endpoint_id", "event_sequence"],
        unique=True,
        sqlite_where=sa.text("NOT redelivery"),
        postgresql_where=sa.text("NOT redelivery"),
    )
    op.create_index(
        "ix_webhook_deliveries_status_create_time", "webhook_deliveries", ["status", "create_time"]
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("delivery_id", sa.String(40), primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("endpoint_id", sa.String(40), nullable=False),
        _time("attempt_time"),
        sa.Column("response_status_code", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("response_excerpt", sa.String(512), nullable=False),
        sa.Column("error", sa.String(1024), nullable=False),
        _time("next_retry_time", True),
    )
    op.create_index("ix_webhook_attempts_endpoint_id", "webhook_attempts", ["endpoint_id"])
    op.create_table(
        "webhook_redeliveries",
        sa.Column("endpoint_id", sa.String(40), primary_key=True),
        sa.Column("idempotency_key", sa.String(128), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("queued_count", sa.BigInteger, nullable=False),
        sa.Column("first_sequence", sa.BigInteger, nullable=False),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        _time("create_time"),
    )


def downgrade() -> None:
    for table in ("webhook_redeliveries", "webhook_attempts", "webhook_deliveries", "webhook_endpoints"):
        op.drop_table(table)
