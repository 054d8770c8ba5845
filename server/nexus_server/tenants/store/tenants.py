"""Tenants: insert, read (by id, slug, verified domain), update, status, list."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.store.rows import TenantRow, after_key, guarded
from nexus_server.tenants.tables import memberships, tenants


@dataclass(frozen=True)
class TenantFilter:
    user_id: str | None  # None: every tenant (platform administrators)
    name: str = ""
    slug: str = ""
    domain: str = ""
    statuses: tuple[str, ...] = ("active", "suspended")


async def insert_tenant(session: AsyncSession, row: TenantRow) -> None:
    await guarded(session, insert(tenants).values(**row.__dict__))


async def slug_exists(session: AsyncSession, slug: str, *, except_id: str = "") -> bool:
    query = select(tenants.c.id).where(
        tenants.c.slug == slug, tenants.c.status != "deleted", tenants.c.id != except_id
    )
    return (await session.execute(query)).first() is not None


async def domain_exists(session: AsyncSession, domain: str, *, except_id: str = "") -> bool:
    """Whether another tenant has proved control of `domain` (pending claims do not count)."""
    query = select(tenants.c.id).where(
        tenants.c.domain == domain,
        tenants.c.domain_verify_time.is_not(None),
        tenants.c.status != "deleted",
        tenants.c.id != except_id,
    )
    return (await session.execute(query)).first() is not None


async def get_tenant(session: AsyncSession, tenant_id: str, *, lock: bool = False) -> TenantRow | None:
    query = select(tenants).where(tenants.c.id == tenant_id)
    if lock:
        # Serialises membership changes of one tenant (the last-owner rule); SQLite's
        # BEGIN IMMEDIATE already serialises writers.
        query = query.with_for_update()
    found = (await session.execute(query)).mappings().first()
    return TenantRow(**found) if found else None


async def tenant_by_domain(session: AsyncSession, domain: str) -> TenantRow | None:
    query = select(tenants).where(
        tenants.c.domain == domain, tenants.c.domain_verify_time.is_not(None), tenants.c.status != "deleted"
    )
    found = (await session.execute(query)).mappings().first()
    return TenantRow(**found) if found else None


async def tenant_by_slug(session: AsyncSession, slug: str) -> TenantRow | None:
    query = select(tenants).where(tenants.c.slug == slug, tenants.c.status != "deleted")
    found = (await session.execute(query)).mappings().first()
    return TenantRow(**found) if found else None


async def update_tenant(session: AsyncSession, tenant_id: str, values: dict[str, Any]) -> None:
    await guarded(session, update(tenants).where(tenants.c.id == tenant_id).values(**values))


async def set_status(
    session: AsyncSession,
    tenant_id: str,
    status: str,
    now: datetime,
    cause: str | None = None,
    reason: str | None = None,
) -> None:
    values: dict[str, object] = {
        "status": status,
        "update_time": now,
        "suspension_cause": cause,
        "suspend_reason": reason if status == "suspended" else None,
    }
    if status == "suspended":
        values["suspend_time"] = now
    elif status == "active":
        values["suspend_time"] = None
    if status == "deleted":
        values["delete_time"] = now
    await session.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))


async def list_tenants(
    session: AsyncSession, where: TenantFilter, after: Sequence[Any] | None, limit: int
) -> list[TenantRow]:
    query = select(tenants).where(tenants.c.status.in_(where.statuses))
    if where.user_id is not None:
        mine = select(memberships.c.tenant_id).where(memberships.c.user_id == where.user_id)
        query = query.where(tenants.c.id.in_(mine))
    if where.name:
        needle = where.name.lower()
        query = query.where(
            or_(
                func.lower(tenants.c.display_name).contains(needle, autoescape=True),
                tenants.c.slug.contains(needle, autoescape=True),
            )
        )
    if where.slug:
        query = query.where(tenants.c.slug == where.slug)
    if where.domain:
        query = query.where(tenants.c.domain == where.domain)
    if after is not None:
        query = query.where(after_key([tenants.c.create_time, tenants.c.id], after))
    query = query.order_by(tenants.c.create_time, tenants.c.id).limit(limit)
    return [TenantRow(**r) for r in (await session.execute(query)).mappings()]


async def plans_of_live_tenants(session: AsyncSession) -> list[tuple[str, str, str]]:
    """(id, display name, plan) of every tenant not deleted, for platform-wide reports."""
    rows = await session.execute(
        select(tenants.c.id, tenants.c.display_name, tenants.c.plan_id).where(tenants.c.status != "deleted")
    )
    return [(i, n, p) for i, n, p in rows]
