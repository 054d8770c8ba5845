"""Persistence of tenants, memberships, custom roles, groups, project grants and
invitations (SQLAlchemy Core; no rules here)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Executable, Select, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.tenants.tables import (
    group_members,
    groups,
    invitations,
    memberships,
    project_grants,
    roles,
    tenants,
)


class Conflict(Exception):
    """A unique rule was broken by a concurrent writer between check and write."""


async def _guarded(session: AsyncSession, statement: Executable) -> None:
    # A savepoint, so a unique violation from a concurrent writer leaves the transaction usable
    # and surfaces as a Conflict the workflow can name (SLUG_TAKEN, …) instead of INTERNAL.
    try:
        async with session.begin_nested():
            await session.execute(statement)
    except IntegrityError:
        raise Conflict from None


@dataclass(frozen=True)
class TenantRow:
    id: str
    slug: str
    display_name: str
    domain: str | None
    status: str
    suspension_cause: str | None
    plan_id: str
    create_time: datetime
    update_time: datetime
    delete_time: datetime | None
    suspend_reason: str | None = None
    suspend_time: datetime | None = None
    domain_token: str | None = None
    domain_verify_time: datetime | None = None


@dataclass(frozen=True)
class MembershipRow:
    tenant_id: str
    user_id: str
    roles: tuple[str, ...]
    create_time: datetime
    update_time: datetime | None = None
    added_by: str | None = None


@dataclass(frozen=True)
class RoleRow:
    id: str
    tenant_id: str
    name: str
    description: str
    permissions: tuple[str, ...]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class GroupRow:
    id: str
    tenant_id: str
    name: str
    description: str
    roles: tuple[str, ...]
    create_time: datetime
    update_time: datetime
    member_user_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantRow:
    tenant_id: str
    user_id: str
    project: str
    role: str
    granted_by: str | None
    grant_time: datetime


@dataclass(frozen=True)
class InvitationRow:
    id: str
    tenant_id: str
    email: str
    roles: tuple[str, ...]
    token_hash: str
    state: str
    invited_by: str | None
    accepted_by: str | None
    create_time: datetime
    send_time: datetime
    expire_time: datetime
    accept_time: datetime | None
    revoke_time: datetime | None


@dataclass(frozen=True)
class TenantFilter:
    user_id: str | None  # None: every tenant (platform administrators)
    name: str = ""
    slug: str = ""
    domain: str = ""
    statuses: tuple[str, ...] = ("active", "suspended")


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


def _after(columns: Sequence[ColumnElement[Any]], key: Sequence[Any]) -> ColumnElement[bool]:
    """Rows strictly after `key` in the order of `columns` (keyset paging)."""
    first, *rest = columns
    if not rest:
        last: ColumnElement[bool] = first > key[0]
        return last
    return or_(first > key[0], and_(first == key[0], _after(rest, key[1:])))


# --- tenants ---------------------------------------------------------------------------------


async def insert_tenant(session: AsyncSession, row: TenantRow) -> None:
    await _guarded(session, insert(tenants).values(**row.__dict__))


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
    await _guarded(session, update(tenants).where(tenants.c.id == tenant_id).values(**values))


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
        query = query.where(_after([tenants.c.create_time, tenants.c.id], after))
    query = query.order_by(tenants.c.create_time, tenants.c.id).limit(limit)
    return [TenantRow(**r) for r in (await session.execute(query)).mappings()]


# --- memberships -----------------------------------------------------------------------------


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
            _after(
                [memberships.c.create_time, memberships.c.user_id],
                after,
            )
        )
    query = query.order_by(memberships.c.create_time, memberships.c.user_id).limit(limit)
    return [_member(r) for r in await session.execute(query)]


async def all_memberships(session: AsyncSession, tenant_id: str) -> list[MembershipRow]:
    query = select(*_MEMBER_COLUMNS).where(memberships.c.tenant_id == tenant_id)
    return [_member(r) for r in await session.execute(query)]


# --- custom roles ----------------------------------------------------------------------------


def _role(r: Any) -> RoleRow:
    return RoleRow(
        r.id, r.tenant_id, r.name, r.description, tuple(r.permissions), r.create_time, r.update_time
    )


async def insert_role(session: AsyncSession, row: RoleRow) -> None:
    values = {**row.__dict__, "permissions": list(row.permissions), "name_key": row.name.casefold()}
    await _guarded(session, insert(roles).values(**values))


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
    await _guarded(session, update(roles).where(roles.c.id == role_id).values(**values))


async def delete_role(session: AsyncSession, role_id: str) -> None:
    await session.execute(delete(roles).where(roles.c.id == role_id))


async def list_roles(session: AsyncSession, tenant_id: str) -> list[RoleRow]:
    query = select(roles).where(roles.c.tenant_id == tenant_id).order_by(roles.c.create_time, roles.c.id)
    return [_role(r) for r in await session.execute(query)]


# --- groups ----------------------------------------------------------------------------------


def _group(r: Any, members: tuple[str, ...] = ()) -> GroupRow:
    return GroupRow(
        r.id, r.tenant_id, r.name, r.description, tuple(r.roles), r.create_time, r.update_time, members
    )


async def insert_group(session: AsyncSession, row: GroupRow) -> None:
    values = {k: v for k, v in row.__dict__.items() if k != "member_user_ids"}
    values.update(roles=list(row.roles), name_key=row.name.casefold())
    await _guarded(session, insert(groups).values(**values))


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
    await _guarded(session, update(groups).where(groups.c.id == group_id).values(**values))


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
        query = query.where(_after([groups.c.create_time, groups.c.id], after))
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


# --- project grants --------------------------------------------------------------------------


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
        query = query.where(_after([project_grants.c.user_id, project_grants.c.project], after))
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


# --- invitations -----------------------------------------------------------------------------


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
