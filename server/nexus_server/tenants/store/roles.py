"""Custom roles: named sets of catalog permissions, unique by case-folded name in a tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.store.rows import RoleRow, guarded
from nexus_server.tenants.tables import roles


def _role(r: Any) -> RoleRow:
    return RoleRow(
        r.id, r.tenant_id, r.name, r.description, tuple(r.permissions), r.create_time, r.update_time
    )


async def insert_role(session: AsyncSession, row: RoleRow) -> None:
    values = {**row.__dict__, "permissions": list(row.permissions), "name_key": row.name.casefold()}
    await guarded(session, insert(roles).values(**values))


async def get_role(session: AsyncSession, tenant_id: str, role_id: str) -> RoleRow | None:
    query = select(roles).where(roles.c.tenant_id == tenant_id, roles.c.id == role_id)
    found = (await session.execute(query)).first()
    return _role(found) if found is not None else None


async def roles_by_id(session: AsyncSession, tenant_id: str, role_ids: Sequence[str]) -> dict[str, RoleRow]:
    if not role_ids:
        return {}
    query = select(roles).where(roles.c.tenant_id == tenant_id, roles.c.id.in_(list(role_ids)))
    return {r.id: _role(r) for r in await session.execute(query)}


async def role_name_taken(session: AsyncSession, tenant_id: str, name: str, *, except_id: str = "") -> bool:
    query = select(roles.c.id).where(
        roles.c.tenant_id == tenant_id, roles.c.name_key == name.casefold(), roles.c.id != except_id
    )
    return (await session.execute(query)).first() is not None


async def update_role(session: AsyncSession, role_id: str, values: dict[str, Any]) -> None:
    if "name" in values:
        values = {**values, "name_key": values["name"].casefold()}
    if "permissions" in values:
        values = {**values, "permissions": list(values["permissions"])}
    await guarded(session, update(roles).where(roles.c.id == role_id).values(**values))


async def delete_role(session: AsyncSession, role_id: str) -> None:
    await session.execute(delete(roles).where(roles.c.id == role_id))


async def list_roles(session: AsyncSession, tenant_id: str) -> list[RoleRow]:
    query = select(roles).where(roles.c.tenant_id == tenant_id).order_by(roles.c.create_time, roles.c.id)
    return [_role(r) for r in await session.execute(query)]
