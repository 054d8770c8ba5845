"""The API keys table. It holds digests only: never a secret."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, String, Table

from nexus_server.db.schema import metadata
from nexus_server.db.types import UtcDateTime

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("name", String(100), nullable=False),
    Column("scopes", JSON, nullable=False),  # sorted list of scope names
    Column("environment", String(8), nullable=False),  # test | live
    Column("rate_limit_per_minute", Integer, nullable=False),
    Column("start", String(40), nullable=False),
    Column("secret_hash", String(64), nullable=False),  # hex SHA-256 of the full key
    # The secret replaced by the last rotation, accepted until previous_secret_expire_time.
    Column("previous_secret_hash", String(64), nullable=True),
    Column("previous_secret_expire_time", UtcDateTime(), nullable=True),
    Column("created_by", String(40), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=True),
    Column("last_used_time", UtcDateTime(), nullable=True),
    Column("revoke_time", UtcDateTime(), nullable=True),
    Column("rotate_time", UtcDateTime(), nullable=True),
    # When `apikey.expired` was published, so the expiry sweep publishes it once.
    Column("expired_event_time", UtcDateTime(), nullable=True),
    Index(None, "tenant_id", "create_time", "id"),
    Index(None, "expire_time"),
)
