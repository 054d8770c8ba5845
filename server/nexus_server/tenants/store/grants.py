"""Project grants: user × project × role in a tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.store.rows import GrantRow, after_key
from nexus_server.tenants.tables import project_grants, tenants


def _grant(r: Any) -> GrantRow:
    return GrantRow(r.tenant_id, r.user_id, r.project, r.role, r.granted_by, r.grant_time)


async def get_grant(session: AsyncSession, tenant_id: str, user_id: str, project: str) -> GrantRow | None:
    query = select(project_grants).where(
        project_grants.c.tenant_id == tenant_id,
        project_grants.c.user_id == user_id,
        project_grants.c.project == project,
    )
    found = (await session.execute(query)).first()
    return _grant(found) if found is not None else None


async def grants_of_member(session: AsyncSession, tenant_id: str, user_id: str) -> dict[str, str]:
    """`{project: role}` of one member in one tenant."""
    query = select(project_grants.c.project, project_grants.c.role).where(
        project_grants.c.tenant_id == tenant_id, project_grants.c.user_id == user_id
    )
    return {r.project: r.role for r in await session.execute(query)}


async def put_grant(session: AsyncSession, row: GrantRow) -> None:
    changed = await session.execute(
        update(project_grants)
        .where(
            project_grants.c.tenant_id == row.tenant_id,
            project_grants.c.user_id == row.user_id,
            project_grants.c.project == row.project,
        )
        .values(role=row.role, granted_by=row.granted_by, grant_time=row.grant_time)
    )
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(insert(project_grants).values(**row.__dict__))


async def delete_grant(session: AsyncSession, tenant_id: str, user_id: str, project: str) -> bool:
    result = await session.execute(
        delete(project_grants).where(
            project_grants.c.tenant_id == tenant_id,
            project_grants.c.user_id == user_id,
            project_grants.c.project == project,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_grants(
    session: AsyncSession,
    tenant_id: str,
    after: Sequence[Any] | None,
    limit: int,
    *,
    user_id: str = "",
    project: str = "",
) -> list[GrantRow]:
    query = select(project_grants).where(project_grants.c.tenant_id == tenant_id)
    if user_id:
        query = query.where(project_grants.c.user_id == user_id)
    if project:
        query = query.where(project_grants.c.project == project)
    if after is not None:
        query = query.where(after_key([project_grants.c.user_id, project_grants.c.project], after))
    query = query.order_by(project_grants.c.user_id, project_grants.c.project).limit(limit)
    return [_grant(r) for r in await session.execute(query)]


async def project_grants_of_user(session: AsyncSession, user_id: str) -> dict[str, dict[str, str]]:
    """Every project grant of `user_id`, by tenant: `{tenant_id: {project: role}}`, with role
    one of `admin`, `user`, `read_only`. Tenants that are deleted are left out. For the
    identity capability: the access token's `projects` claim is `result.get(tid, {})`."""
    query = (
        select(project_grants.c.tenant_id, project_grants.c.project, project_grants.c.role)
        .join(tenants, tenants.c.id == project_grants.c.tenant_id)
        .where(project_grants.c.user_id == user_id, tenants.c.status != "deleted")
    )
    found: dict[str, dict[str, str]] = {}
    for r in await session.execute(query):
        found.setdefault(r.tenant_id, {})[r.project] = r.role
    return found
