"""Who is acting, and the rules on what they may hand out.

The auth layer admits a caller to an RPC; these rules decide what that caller may grant
within it: only owners grant or take away `owner` (ROLE_REQUIRED), and a member acting
through a custom role cannot give out a permission they do not hold (PERMISSION_NOT_HELD).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.common.errors import FieldViolation, InvalidArgument, PermissionDenied
from nexus_server.tenants import access, store
from nexus_server.tenants.permissions import ADMIN, BUILT_IN_PERMISSIONS, OWNER


@dataclass(frozen=True)
class Actor:
    """The person behind a change; an empty user_id is the operator (the `nexus` command)."""

    user_id: str = ""
    platform_admin: bool = False

    @property
    def unrestricted(self) -> bool:
        return self.platform_admin or not self.user_id


async def require_known_roles(session: AsyncSession, tenant_id: str, roles: list[str], field: str) -> None:
    """Every custom role id names a role of this tenant (UNKNOWN_ROLE otherwise)."""
    custom = [r for r in roles if r not in BUILT_IN_PERMISSIONS]
    found = await store.roles_by_id(session, tenant_id, custom)
    missing = [
        FieldViolation(f"{field}[{i}]", f"{role} is not a role of this tenant")
        for i, role in enumerate(roles)
        if role not in BUILT_IN_PERMISSIONS and role not in found
    ]
    if missing:
        raise InvalidArgument(missing, reason="UNKNOWN_ROLE")


async def require_may_hand_out(
    session: AsyncSession,
    tenant_id: str,
    actor: Actor,
    roles: Iterable[str],
    *,
    touches_owner: bool = False,
) -> None:
    """The actor may grant (or, with `touches_owner`, take away) every role in `roles`."""
    roles = set(roles)
    if actor.unrestricted:
        return
    held = await access.standing_of(session, tenant_id, actor.user_id)
    mine = held.roles if held else frozenset[str]()
    if OWNER in mine:
        return
    if OWNER in roles or touches_owner:
        raise PermissionDenied(
            "only owners may grant or take away the owner role",
            reason="ROLE_REQUIRED",
            metadata={"required_role": OWNER},
        )
    if ADMIN in mine:
        return  # admins hold every permission a role can carry
    granted = await access.role_permissions(session, tenant_id, roles)
    have = held.permissions if held else frozenset[str]()
    missing = sorted(frozenset().union(*granted.values()) - have)
    if missing:
        raise PermissionDenied(
            f"you cannot give out {missing[0]}, which you do not hold",
            reason="PERMISSION_NOT_HELD",
            metadata={"permission": missing[0]},
        )


async def require_permissions_held(
    session: AsyncSession, tenant_id: str, actor: Actor, permissions: Iterable[str]
) -> None:
    """For custom roles: the actor holds every permission the role would carry."""
    if actor.unrestricted:
        return
    held = await access.standing_of(session, tenant_id, actor.user_id)
    mine = held.roles if held else frozenset[str]()
    if OWNER in mine or ADMIN in mine:
        return
    have = held.permissions if held else frozenset[str]()
    missing = sorted(set(permissions) - have)
    if missing:
        raise PermissionDenied(
            f"you cannot give out {missing[0]}, which you do not hold",
            reason="PERMISSION_NOT_HELD",
            metadata={"permission": missing[0]},
        )
