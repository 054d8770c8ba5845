"""Memberships: a person's roles in a tenant, and the owner count behind the last-owner rule."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.store.rows import MembershipRow, after_key
from nexus_server.tenants.tables import group_members, memberships, project_grants, tenants

_MEMBER_COLUMNS = (
    memberships.c.tenant_id,
    memberships.c.user_id,
    memberships.c.roles,
    memberships.c.create_time,
    memberships.c.update_time,
    memberships.c.added_by,
)


def _member(r: Any) -> MembershipRow:
    return MembershipRow(r.tenant_id, r.user_id, tuple(r.roles), r.create_time, r.update_time, r.added_by)


async def upsert_membership(
    session: AsyncSession,
    tenant_id: str,
    user_id: str,
    roles: list[str],
    now: datetime,
    *,
    added_by: str | None = None,
) -> None:
    values = {"roles": list(dict.fromkeys(roles)), "is_owner": "owner" in roles, "update_time": now}
    changed = await session.execute(
        update(memberships)
        .where(memberships.c.tenant_id == tenant_id, memberships.c.user_id == user_id)
        .values(**values)
    )
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(
            insert(memberships).values(
                tenant_id=tenant_id, user_id=user_id, create_time=now, added_by=added_by, **values
            )
        )


async def get_membership(session: AsyncSession, tenant_id: str, user_id: str) -> MembershipRow | None:
    query = select(*_MEMBER_COLUMNS).where(
        memberships.c.tenant_id == tenant_id, memberships.c.user_id == user_id
    )
    found = (await session.execute(query)).first()
    return _member(found) if found is not None else None


async def memberships_of_user(session: AsyncSession, user_id: str) -> list[MembershipRow]:
    """The user's memberships of tenants that are not deleted, oldest first."""
    rows = await session.execute(
        select(*_MEMBER_COLUMNS)
        .join(tenants, tenants.c.id == memberships.c.tenant_id)
        .where(memberships.c.user_id == user_id, tenants.c.status != "deleted")
        .order_by(memberships.c.create_time, memberships.c.tenant_id)
    )
    return [_member(r) for r in rows]


async def delete_membership(session: AsyncSession, tenant_id: str, user_id: str) -> None:
    await session.execute(
        delete(group_members).where(
            group_members.c.tenant_id == tenant_id, group_members.c.user_id == user_id
        )
    )
    await session.execute(
        delete(project_grants).where(
            project_grants.c.tenant_id == tenant_id, project_grants.c.user_id == user_id
        )
    )
    await session.execute(
        delete(memberships).where(memberships.c.tenant_id == tenant_id, memberships.c.user_id == user_id)
    )


async def count_owners(session: AsyncSession, tenant_id: str) -> int:
    query = select(func.count()).where(memberships.c.tenant_id == tenant_id, memberships.c.is_owner)
    return int((await session.execute(query)).scalar_one())


async def list_members(
    session: AsyncSession,
    tenant_id: str,
    after: Sequence[Any] | None,
    limit: int,
    *,
    user_ids: Sequence[str] | None = None,
    matching: Select[Any] | None = None,
) -> list[MembershipRow]:
    """`matching`: a subquery of user ids a search matched (identity's `People.ids_matching`)."""
    query = select(*_MEMBER_COLUMNS).where(memberships.c.tenant_id == tenant_id)
    if user_ids is not None:
        query = query.where(memberships.c.user_id.in_(list(user_ids)))
    if matching is not None:
        query = query.where(memberships.c.user_id.in_(matching))
    if after is not None:
        query = query.where(
            after_key(
                [memberships.c.create_time, memberships.c.user_id],
                after,
            )
        )
    query = query.order_by(memberships.c.create_time, memberships.c.user_id).limit(limit)
    return [_member(r) for r in await session.execute(query)]


async def all_memberships(session: AsyncSession, tenant_id: str) -> list[MembershipRow]:
    query = select(*_MEMBER_COLUMNS).where(memberships.c.tenant_id == tenant_id)
    return [_member(r) for r in await session.execute(query)]
