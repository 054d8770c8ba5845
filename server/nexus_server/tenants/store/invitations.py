"""Invitations to join a tenant, found by id, token hash or pending address."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.store.rows import InvitationRow
from nexus_server.tenants.tables import invitations


def _invitation(r: Any) -> InvitationRow:
    values = dict(r._mapping)
    values["roles"] = tuple(values["roles"])
    return InvitationRow(**values)


async def insert_invitation(session: AsyncSession, row: InvitationRow) -> None:
    await session.execute(insert(invitations).values(**{**row.__dict__, "roles": list(row.roles)}))


async def update_invitation(session: AsyncSession, invitation_id: str, values: dict[str, Any]) -> None:
    if "roles" in values:
        values = {**values, "roles": list(values["roles"])}
    await session.execute(update(invitations).where(invitations.c.id == invitation_id).values(**values))


async def get_invitation(session: AsyncSession, tenant_id: str, invitation_id: str) -> InvitationRow | None:
    query = select(invitations).where(invitations.c.tenant_id == tenant_id, invitations.c.id == invitation_id)
    found = (await session.execute(query)).first()
    return _invitation(found) if found is not None else None


async def invitation_by_token_hash(session: AsyncSession, token_hash: str) -> InvitationRow | None:
    query = select(invitations).where(invitations.c.token_hash == token_hash)
    found = (await session.execute(query)).first()
    return _invitation(found) if found is not None else None


async def pending_invitation(session: AsyncSession, tenant_id: str, email: str) -> InvitationRow | None:
    query = select(invitations).where(
        invitations.c.tenant_id == tenant_id, invitations.c.email == email, invitations.c.state == "pending"
    )
    found = (await session.execute(query)).first()
    return _invitation(found) if found is not None else None


async def pending_invitations_of_tenant(session: AsyncSession, tenant_id: str) -> list[InvitationRow]:
    query = select(invitations).where(invitations.c.tenant_id == tenant_id, invitations.c.state == "pending")
    return [_invitation(r) for r in await session.execute(query)]


async def list_invitations(
    session: AsyncSession,
    tenant_id: str,
    after: Sequence[Any] | None,
    limit: int,
    *,
    state: str = "",
    now: datetime,
) -> list[InvitationRow]:
    query = select(invitations).where(invitations.c.tenant_id == tenant_id)
    if state == "expired":
        query = query.where(invitations.c.state == "pending", invitations.c.expire_time <= now)
    elif state == "pending":
        query = query.where(invitations.c.state == "pending", invitations.c.expire_time > now)
    elif state:
        query = query.where(invitations.c.state == state)
    if after is not None:
        # Newest first: strictly before the key.
        created, last_id = after
        query = query.where(
            or_(
                invitations.c.create_time < created,
                and_(invitations.c.create_time == created, invitations.c.id < last_id),
            )
        )
    query = query.order_by(invitations.c.create_time.desc(), invitations.c.id.desc()).limit(limit)
    return [_invitation(r) for r in await session.execute(query)]
