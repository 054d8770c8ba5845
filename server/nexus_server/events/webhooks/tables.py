"""The outbound webhooks' tables.

- `webhook_endpoints`: a tenant's endpoints. `cursor` is the sequence of the tenant's log
  up to which deliveries have been created for the endpoint: fan-out reads the log after
  it, so an event published while every process was down is still delivered. The row is
  also the endpoint's lease (`lease_owner`, `lease_until`): one replica at a time sends to
  an endpoint, in sequence order, and a replica that dies leaves the lease to run out.
  `hold_until` pauses the whole endpoint while it is unreachable, so later events wait
  behind the one being retried. Secrets are sealed (common/sealing.py), never plain.
- `webhook_deliveries`: one event to one endpoint, its status and next attempt. A partial
  unique index makes fan-out create at most one original delivery per event and endpoint.
- `webhook_attempts`: every HTTP attempt of a delivery (the delivery log).
- `webhook_redeliveries`: RedeliverEvents' idempotency keys with the answer they returned,
  committed with the deliveries they queued.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    text,
)

from nexus_server.db.schema import metadata
from nexus_server.db.types import UtcDateTime

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("types", JSON, nullable=False),
    Column("sources", JSON, nullable=False),
    Column("description", String(256), nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(16), nullable=False),
    Column("secret", LargeBinary, nullable=False),
    Column("previous_secret", LargeBinary, nullable=True),
    Column("previous_secret_expire_time", UtcDateTime(), nullable=True),
    Column("cursor", BigInteger, nullable=False),
    Column("hold_until", UtcDateTime(), nullable=True),
    Column("failing_since", UtcDateTime(), nullable=True),
    Column("lease_owner", String(40), nullable=True),
    Column("lease_until", UtcDateTime(), nullable=True),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Index("ix_webhook_endpoints_tenant_id_id", "tenant_id", "id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), nullable=False),
    Column("endpoint_id", String(40), nullable=False),
    Column("event_id", String(40), nullable=False),
    Column("event_sequence", BigInteger, nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False),
    Column("response_status_code", Integer, nullable=False),
    Column("last_error", String(1024), nullable=False),
    Column("last_attempt_time", UtcDateTime(), nullable=True),
    Column("next_attempt_time", UtcDateTime(), nullable=True),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("redelivery", Boolean, nullable=False),
    # What the sender picks: an endpoint's open deliveries in sequence order.
    Index("ix_webhook_deliveries_endpoint_open", "endpoint_id", "status", "event_sequence"),
    # ListWebhookDeliveries: newest first.
    Index("ix_webhook_deliveries_endpoint_id_id", "endpoint_id", "id"),
    Index(
        "ux_webhook_deliveries_original",
        "endpoint_id",
        "event_sequence",
        unique=True,
        sqlite_where=text("NOT redelivery"),
        postgresql_where=text("NOT redelivery"),
    ),
    Index("ix_webhook_deliveries_status_create_time", "status", "create_time"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("delivery_id", String(40), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("endpoint_id", String(40), nullable=False),
    Column("attempt_time", UtcDateTime(), nullable=False),
    Column("response_status_code", Integer, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("response_excerpt", String(512), nullable=False),
    Column("error", String(1024), nullable=False),
    Column("next_retry_time", UtcDateTime(), nullable=True),
    Index("ix_webhook_attempts_endpoint_id", "endpoint_id"),
)

webhook_redeliveries = Table(
    "webhook_redeliveries",
    metadata,
    Column("endpoint_id", String(40), primary_key=True),
    Column("idempotency_key", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("queued_count", BigInteger, nullable=False),
    Column("first_sequence", BigInteger, nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
)
