"""Rate-limit overrides, stored as data so they apply without a restart."""

from __future__ import annotations

from sqlalchemy import Column, Integer, PrimaryKeyConstraint, String, Table

from nexus_server.db.schema import metadata

# One row per overridden limit. kind `plan` sets a plan's tenant limit (subject: plan id),
# `tenant` one tenant's limit (subject: ten_…), `user` one person's (subject: usr_…).
rate_limit_overrides = Table(
    "rate_limit_overrides",
    metadata,
    Column("kind", String(16), nullable=False),
    Column("subject", String(64), nullable=False),
    Column("limit_per_minute", Integer, nullable=False),
    PrimaryKeyConstraint("kind", "subject"),
)
