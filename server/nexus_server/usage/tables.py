"""The usage capability's tables: raw records, the rollups kept exact beside them, the
quota alerts already sent, and the per-hour endpoint statistics of Nexus's own metering.

Every figure the RPCs report is read from a rollup, never by scanning records: the rollups
are written in the transaction that accepts the records, so they are exact and read-your-
writes on any replica.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table

from nexus_server.db.schema import metadata
from nexus_server.db.types import UtcDateTime

# One row per accepted record; its primary key is the tenant's idempotency key, so the
# record and the memory of its key are one write that commits or rolls back together.
usage_records = Table(
    "usage_records",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("idempotency_key", String(160), primary_key=True),
    Column("metric", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("time", UtcDateTime(), nullable=False),  # when the usage happened
    Column("properties", JSON, nullable=True),
    Column("accept_time", UtcDateTime(), nullable=False),
    Index(None, "accept_time"),  # the retention sweep
)

# Per tenant, metric and UTC day: what GetUsageHistory and the overview read.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("day", UtcDateTime(), primary_key=True),  # midnight UTC
    Column("quantity", BigInteger, nullable=False),
    Index(None, "day", "metric"),
)

# Per tenant, metric and billing period: what quotas read. Its row lock orders concurrent
# writers of one period, so each learns the exact total before and after its own records
# and a quota crossing is seen by exactly one of them.
usage_period_totals = Table(
    "usage_period_totals",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("period_start", UtcDateTime(), primary_key=True),
    Column("quantity", BigInteger, nullable=False),
)

# The quota events already published: at most one per level, tenant, metric and period.
usage_quota_alerts = Table(
    "usage_quota_alerts",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("period_start", UtcDateTime(), primary_key=True),
    Column("level", String(16), primary_key=True),  # warning | exceeded
    Column("create_time", UtcDateTime(), nullable=False),
)

# Nexus's own calls per tenant, UTC hour, method, key, status code and latency bucket
# (usage/latency.py): counts that add, so any window's percentiles merge from its hours.
usage_endpoint_hourly = Table(
    "usage_endpoint_hourly",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("hour", UtcDateTime(), primary_key=True),
    Column("method", String(200), primary_key=True),
    Column("api_key_id", String(40), primary_key=True),  # '' for people's tokens
    Column("code", String(32), primary_key=True),  # canonical gRPC status name
    Column("bucket", Integer, primary_key=True),
    Column("calls", BigInteger, nullable=False),
    Index(None, "hour"),
)
