"""Usage: records, daily and per-period rollups, quota alerts, hourly endpoint statistics.

Revision ID: 0011
Revises: 0010

(0007 was reserved for usage while it was unbuilt and is empty; installations have applied
it, so the tables arrive here.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("idempotency_key", sa.String(160), primary_key=True),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        _time("time"),
        sa.Column("properties", sa.JSON, nullable=True),
        _time("accept_time"),
    )
    op.create_index("ix_usage_records_accept_time", "usage_records", ["accept_time"])
    op.create_table(
        "usage_daily",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("day", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("quantity", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_daily_day_metric", "usage_daily", ["day", "metric"])
    op.create_table(
        "usage_period_totals",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("quantity", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "usage_quota_alerts",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("level", sa.String(16), primary_key=True),
        _time("create_time"),
    )
    op.create_table(
        "usage_endpoint_hourly",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("method", sa.String(200), primary_key=True),
        sa.Column("api_key_id", sa.String(40), primary_key=True),
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_endpoint_hourly_hour", "usage_endpoint_hourly", ["hour"])


def downgrade() -> None:
    for table in (
        "usage_endpoint_hourly",
        "usage_quota_alerts",
        "usage_period_totals",
        "usage_daily",
        "usage_records",
    ):
        op.drop_table(table)
