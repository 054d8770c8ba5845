"""Groups and their members."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.store.rows import GroupRow, after_key, guarded
from nexus_server.tenants.tables import group_members, groups


def _group(r: Any, members: tuple[str, ...] = ()) -> GroupRow:
    return GroupRow(
        r.id, r.tenant_id, r.name, r.description, tuple(r.roles), r.create_time, r.update_time, members
    )


async def insert_group(session: AsyncSession, row: GroupRow) -> None:
    values = {k: v for k, v in row.__dict__.items() if k != "member_user_ids"}
    values.update(roles=list(row.roles), name_key=row.name.casefold())
    await guarded(session, insert(groups).values(**values))


async def group_members_of(session: AsyncSession, group_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    if not group_ids:
        return {}
    query = (
        select(group_members.c.group_id, group_members.c.user_id)
        .where(group_members.c.group_id.in_(list(group_ids)))
        .order_by(group_members.c.user_id)
    )
    found: dict[str, list[str]] = {g: [] for g in group_ids}
    for r in await session.execute(query):
        found[r.group_id].append(r.user_id)
    return {g: tuple(m) for g, m in found.items()}


async def get_group(session: AsyncSession, tenant_id: str, group_id: str) -> GroupRow | None:
    query = select(groups).where(groups.c.tenant_id == tenant_id, groups.c.id == group_id)
    found = (await session.execute(query)).first()
    if found is None:
        return None
    return _group(found, (await group_members_of(session, [group_id]))[group_id])


async def group_name_taken(session: AsyncSession, tenant_id: str, name: str, *, except_id: str = "") -> bool:
    query = select(groups.c.id).where(
        groups.c.tenant_id == tenant_id, groups.c.name_key == name.casefold(), groups.c.id != except_id
    )
    return (await session.execute(query)).first() is not None


async def update_group(session: AsyncSession, group_id: str, values: dict[str, Any]) -> None:
    if "name" in values:
        values = {**values, "name_key": values["name"].casefold()}
    if "roles" in values:
        values = {**values, "roles": list(values["roles"])}
    await guarded(session, update(groups).where(groups.c.id == group_id).values(**values))


async def delete_group(session: AsyncSession, group_id: str) -> None:
    await session.execute(delete(group_members).where(group_members.c.group_id == group_id))
    await session.execute(delete(groups).where(groups.c.id == group_id))


async def list_groups(
    session: AsyncSession, tenant_id: str, after: Sequence[Any] | None, limit: int, *, user_id: str = ""
) -> list[GroupRow]:
    query = select(groups).where(groups.c.tenant_id == tenant_id)
    if user_id:
        query = query.where(
            groups.c.id.in_(select(group_members.c.group_id).where(group_members.c.user_id == user_id))
        )
    if after is not None:
        query = query.where(after_key([groups.c.create_time, groups.c.id], after))
    rows = list(await session.execute(query.order_by(groups.c.create_time, groups.c.id).limit(limit)))
    members = await group_members_of(session, [r.id for r in rows])
    return [_group(r, members[r.id]) for r in rows]


async def all_groups(session: AsyncSession, tenant_id: str) -> list[GroupRow]:
    query = select(groups).where(groups.c.tenant_id == tenant_id)
    return [_group(r) for r in await session.execute(query)]


async def add_group_member(session: AsyncSession, group: GroupRow, user_id: str, now: datetime) -> None:
    await session.execute(
        insert(group_members).values(
            group_id=group.id, tenant_id=group.tenant_id, user_id=user_id, create_time=now
        )
    )


async def remove_group_member(session: AsyncSession, group_id: str, user_id: str) -> bool:
    result = await session.execute(
        delete(group_members).where(group_members.c.group_id == group_id, group_members.c.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def groups_of_member(session: AsyncSession, tenant_id: str, user_id: str) -> list[GroupRow]:
    """The groups a member belongs to, in id order (roles, not member lists)."""
    query = (
        select(groups)
        .join(group_members, group_members.c.group_id == groups.c.id)
        .where(group_members.c.tenant_id == tenant_id, group_members.c.user_id == user_id)
        .order_by(groups.c.id)
    )
    return [_group(r) for r in await session.execute(query)]


async def group_ids_of_members(
    session: AsyncSession, tenant_id: str, user_ids: Sequence[str]
) -> dict[str, list[str]]:
    if not user_ids:
        return {}
    query = (
        select(group_members.c.user_id, group_members.c.group_id)
        .where(group_members.c.tenant_id == tenant_id, group_members.c.user_id.in_(list(user_ids)))
        .order_by(group_members.c.group_id)
    )
    found: dict[str, list[str]] = {u: [] for u in user_ids}
    for r in await session.execute(query):
        found[r.user_id].append(r.group_id)
    return found
