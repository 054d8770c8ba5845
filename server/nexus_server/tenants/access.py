"""What a member may do: their roles (direct and from groups), the union of the permissions
of those roles, and the CheckPermission decision for sub-projects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.common.projects import role_at_least
from nexus_server.tenants import store
from nexus_server.tenants.permissions import BUILT_IN_PERMISSIONS
from nexus_server.tenants.rules import order_roles


@dataclass(frozen=True)
class Standing:
    """A member's standing in one tenant."""

    direct: tuple[str, ...]  # roles held directly, in Member.roles order
    inherited: tuple[str, ...]  # roles from groups not held directly
    group_ids: tuple[str, ...]
    role_permissions: dict[str, frozenset[str]]  # every held role → what it grants

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(self.direct) | frozenset(self.inherited)

    @property
    def permissions(self) -> frozenset[str]:
        return frozenset().union(*self.role_permissions.values())

    def granting(self, permission: str) -> list[str]:
        """The roles that grant `permission`, direct ones first."""
        return [r for r in (*self.direct, *self.inherited) if permission in self.role_permissions.get(r, ())]


async def role_permissions(
    session: AsyncSession, tenant_id: str, role_ids: set[str]
) -> dict[str, frozenset[str]]:
    """Each role's permissions; custom roles that no longer exist grant nothing."""
    custom = await store.roles_by_id(
        session, tenant_id, [r for r in role_ids if r not in BUILT_IN_PERMISSIONS]
    )
    found: dict[str, frozenset[str]] = {}
    for role in role_ids:
        if role in BUILT_IN_PERMISSIONS:
            found[role] = BUILT_IN_PERMISSIONS[role]
        elif role in custom:
            found[role] = frozenset(custom[role].permissions)
    return found


async def standing(
    session: AsyncSession, tenant_id: str, user_id: str, direct_roles: tuple[str, ...] | list[str]
) -> Standing:
    member_groups = await store.groups_of_member(session, tenant_id, user_id)
    from_groups = {r for g in member_groups for r in g.roles}
    direct = order_roles(list(direct_roles))
    inherited = order_roles(from_groups - set(direct))
    granted = await role_permissions(session, tenant_id, set(direct) | set(inherited))
    return Standing(tuple(direct), tuple(inherited), tuple(g.id for g in member_groups), granted)


async def standing_of(session: AsyncSession, tenant_id: str, user_id: str) -> Standing | None:
    row = await store.get_membership(session, tenant_id, user_id)
    if row is None:
        return None
    return await standing(session, tenant_id, user_id, row.roles)


class Decision(Enum):
    GRANTED_BY_ROLE = 1
    GRANTED_BY_GROUP = 2
    GRANTED_BY_PROJECT_ACCESS = 3
    TENANT_NOT_FOUND = 4
    TENANT_SUSPENDED = 5
    SUBJECT_INACTIVE = 6
    NOT_MEMBER = 7
    PERMISSION_NOT_GRANTED = 8
    NO_PROJECT_ACCESS = 9
    PROJECT_ROLE_TOO_LOW = 10

    @property
    def allowed(self) -> bool:
        return self.value <= 3


@dataclass(frozen=True)
class Check:
    decision: Decision
    granted_by_roles: tuple[str, ...] = ()
    project_role: str = ""


class Facts(Protocol):
    """Where CheckPermission reads what it decides on (cache.AccessCache)."""

    async def tenant_status(self, tenant_id: str) -> str | None: ...
    async def user_status(self, user_id: str) -> str | None: ...
    async def member(self, tenant_id: str, user_id: str) -> _Member | None: ...


class _Member(Protocol):
    @property
    def standing(self) -> Standing: ...
    @property
    def grants(self) -> Mapping[str, str]: ...


async def check(
    facts: Facts,
    *,
    tenant_id: str,
    subject: str,
    permission: str = "",
    project: str = "",
    least_role: str | None = None,
) -> Check:
    """The CheckPermission decision; the first reason in the contract's order wins."""
    status = await facts.tenant_status(tenant_id)
    if status is None or status == "deleted":
        return Check(Decision.TENANT_NOT_FOUND)
    if status == "suspended":
        return Check(Decision.TENANT_SUSPENDED)
    if await facts.user_status(subject) != "active":
        return Check(Decision.SUBJECT_INACTIVE)
    member = await facts.member(tenant_id, subject)
    if member is None:
        return Check(Decision.NOT_MEMBER)
    if project:
        role = member.grants.get(project)
        if role is None:
            return Check(Decision.NO_PROJECT_ACCESS)
        if not role_at_least(role, least_role):
            return Check(Decision.PROJECT_ROLE_TOO_LOW, project_role=role)
        return Check(Decision.GRANTED_BY_PROJECT_ACCESS, project_role=role)
    held = member.standing
    roles = held.granting(permission)
    if not roles:
        return Check(Decision.PERMISSION_NOT_GRANTED)
    by_role = roles[0] in held.direct
    return Check(Decision.GRANTED_BY_ROLE if by_role else Decision.GRANTED_BY_GROUP, tuple(roles))
