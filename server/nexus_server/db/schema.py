"""Tables shared by every capability: the event log (outbox) and its per-tenant heads.

Capabilities define their own tables in `<capability>/tables.py` on the same `metadata`;
Alembic migrations under `db/migrations/versions/` create them (a test checks the two agree).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from nexus_server.db.types import UtcDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# Each tenant's log head. Appending an event increments its row inside the appending
# transaction; the row lock makes a tenant's appends commit in sequence order, so a
# reader that sees sequence N has already been able to see every sequence below N.
event_streams = Table(
    "event_streams",
    metadata,
    Column("tenant_id", String(40), primary_key=True),
    Column("head_sequence", BigInteger, nullable=False),
)

# The durable event log and outbox: Nexus's own changes and sub-projects' published
# events. tenant_id '' is the platform stream (events that belong to no tenant).
events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("type", String(128), nullable=False),
    Column("source", String(128), nullable=False),
    Column("subject", String(256), nullable=False, default=""),
    Column("time", UtcDateTime(), nullable=False),
    Column("data", JSON, nullable=False),
    Column("idempotency_key", String(128), nullable=True),
    # When the event was appended (server clock); `time` is when it happened, as the
    # publisher says (migration 0006, events capability).
    Column("create_time", UtcDateTime(), nullable=False),
    # The API key that published the event; null for Nexus's own events.
    Column("publisher_api_key_id", String(64), nullable=True),
    UniqueConstraint("tenant_id", "sequence"),
    UniqueConstraint("tenant_id", "source", "idempotency_key"),
    # A publish idempotency key names one event per tenant, whatever its source.
    UniqueConstraint("tenant_id", "idempotency_key"),
    Index(None, "tenant_id", "type", "sequence"),
    Index(None, "tenant_id", "create_time"),
)

# The revocation feed: sessions, users, API keys and tenants whose credentials must stop
# working everywhere. Written in the revoking transaction; every replica polls the recent
# rows (auth/revocations.py), so a revocation takes effect on all replicas within a poll
# interval whatever the backend. Rows are kept until `expire_time` (when the credentials
# they block would have expired anyway) or forever when that is null.
revocations = Table(
    "revocations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("subject", String(128), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=True),
    Index(None, "create_time"),
    Index(None, "kind", "subject"),
)
