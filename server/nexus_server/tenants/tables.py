"""Tenants, their members, custom roles, groups, project grants and invitations."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    text,
)

from nexus_server.db.schema import metadata
from nexus_server.db.types import UtcDateTime

# Deleted tenants give up their slug and domain, so uniqueness holds among the others only:
# partial unique indexes (PostgreSQL and SQLite both have them). A domain is unique among
# the tenants that proved control of it: pending claims do not block one another.
_NOT_DELETED = text("status <> 'deleted'")
_VERIFIED = text("status <> 'deleted' AND domain_verify_time IS NOT NULL")

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("slug", String(63), nullable=False),
    Column("display_name", String(200), nullable=False),
    # The normalised custom domain (IDNA, lower case, no port or trailing dot).
    Column("domain", String(253), nullable=True),
    # The token the domain's TXT record must carry; the domain resolves only once verified.
    Column("domain_token", String(64), nullable=True),
    Column("domain_verify_time", UtcDateTime(), nullable=True),
    Column("status", String(16), nullable=False),  # active | suspended | deleted
    Column("suspension_cause", String(32), nullable=True),  # operator | payment_overdue
    Column("plan_id", String(64), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Column("delete_time", UtcDateTime(), nullable=True),
    Column("suspend_reason", String(500), nullable=True),
    Column("suspend_time", UtcDateTime(), nullable=True),
    Index("uq_tenants_slug", "slug", unique=True, postgresql_where=_NOT_DELETED, sqlite_where=_NOT_DELETED),
    Index("uq_tenants_domain", "domain", unique=True, postgresql_where=_VERIFIED, sqlite_where=_VERIFIED),
    Index(None, "create_time", "id"),
)

# A person's directly held roles in a tenant: built-in names and custom role ids (JSON list).
# `is_owner` mirrors "owner" in roles so the last-owner rule is one indexed count.
memberships = Table(
    "memberships",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(40), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    Column("is_owner", Boolean(), nullable=False, server_default=text("false")),
    Column("added_by", String(40), nullable=True),
    PrimaryKeyConstraint("tenant_id", "user_id"),
    Index(None, "user_id"),
    Index(None, "tenant_id", "create_time", "user_id"),
)

# Custom roles (`rol_…`). `name_key` is the case-folded name, unique within the tenant.
roles = Table(
    "tenant_roles",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("name_key", String(64), nullable=False),
    Column("description", String(500), nullable=False),
    Column("permissions", JSON, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "name_key"),
)

groups = Table(
    "tenant_groups",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("name_key", String(64), nullable=False),
    Column("description", String(500), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("update_time", UtcDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "name_key"),
)

group_members = Table(
    "tenant_group_members",
    metadata,
    Column("group_id", String(40), ForeignKey("tenant_groups.id"), nullable=False),
    Column("tenant_id", String(40), nullable=False),
    Column("user_id", String(40), nullable=False),
    Column("create_time", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("group_id", "user_id"),
    Index(None, "tenant_id", "user_id"),
)

# One member's role in one project of the ecosystem, per tenant.
project_grants = Table(
    "project_grants",
    metadata,
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("user_id", String(40), nullable=False),
    Column("project", String(63), nullable=False),
    Column("role", String(16), nullable=False),  # admin | user | read_only
    Column("granted_by", String(40), nullable=True),
    Column("grant_time", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "user_id", "project"),
    Index(None, "user_id"),
)

# Invitations of addresses that have no account. Only the SHA-256 of the mailed token is kept.
invitations = Table(
    "invitations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("email", String(254), nullable=False),
    Column("roles", JSON, nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False),  # pending | accepted | revoked
    Column("invited_by", String(40), nullable=True),
    Column("accepted_by", String(40), nullable=True),
    Column("create_time", UtcDateTime(), nullable=False),
    Column("send_time", UtcDateTime(), nullable=False),
    Column("expire_time", UtcDateTime(), nullable=False),
    Column("accept_time", UtcDateTime(), nullable=True),
    Column("revoke_time", UtcDateTime(), nullable=True),
    Index(None, "tenant_id", "email"),
    Index(None, "email", "state"),
)
