"""Who is acting, and the rules on what they may hand out or take away.

The auth layer admits a caller to an RPC; these rules decide what that caller may grant
or take away within it: only owners grant or take away `owner` (ROLE_REQUIRED), and a
member acting through a custom role can neither give out a permission they do not hold
(PERMISSION_NOT_HELD) nor take away, from a member, a group or a held custom role, a role
granting one (INSUFFICIENT_RANK): no one takes away more rank than they have. `refusal` is
the rule itself, pure; the `require_*` functions read the standings it needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.common.errors import PermissionDenied
from nexus_server.common.validation import Violations
from nexus_server.tenants import access, store
from nexus_server.tenants.permissions import ADMIN, BUILT_IN_PERMISSIONS, OWNER
from nexus_server.tenants.rules import order_roles


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
    with Violations(reason="UNKNOWN_ROLE") as unknown:
        for i, role in enumerate(roles):
            if role not in BUILT_IN_PERMISSIONS and role not in found:
                unknown.add(f"{field}[{i}]", f"{role} is not a role of this tenant")


def refusal(
    actor: Actor,
    held: access.Standing | None,
    roles: Mapping[str, frozenset[str]],
    *,
    taking: bool = False,
) -> PermissionDenied | None:
    """Why `actor`, whose standing in the tenant is `held`, may not grant the `roles` (each
    role → the permissions it grants), or, with `taking`, take them away; None if they may.

    One rule both ways, so that no one takes away more rank than they have: owners may do
    anything; only owners touch `owner` (ROLE_REQUIRED); admins hold every permission a role
    can carry; anyone else may grant or take away a role only if they hold every permission
    it grants (PERMISSION_NOT_HELD when granting, INSUFFICIENT_RANK when taking away).
    """
    if actor.unrestricted:
        return None
    mine = held.roles if held else frozenset[str]()
    if OWNER in mine:
        return None
    if OWNER in roles:
        return PermissionDenied(
            "only owners may grant or take away the owner role",
            reason="ROLE_REQUIRED",
            metadata={"required_role": OWNER},
        )
    if ADMIN in mine:
        return None
    have = held.permissions if held else frozenset[str]()
    if not taking:
        missing = sorted(frozenset[str]().union(*roles.values()) - have)
        if not missing:
            return None
        return PermissionDenied(
            f"you cannot give out {missing[0]}, which you do not hold",
            reason="PERMISSION_NOT_HELD",
            metadata={"permission": missing[0]},
        )
    for role in order_roles(set(roles)):
        lacking = sorted(roles[role] - have)
        if lacking:
            return PermissionDenied(
                f"{role} grants {lacking[0]}, which you do not hold, so you cannot take it away "
                "from anyone nor change or remove whoever holds it",
                reason="INSUFFICIENT_RANK",
                metadata={"role": role, "permission": lacking[0]},
            )
    return None


async def _require(
    session: AsyncSession, tenant_id: str, actor: Actor, roles: Iterable[str], *, taking: bool
) -> None:
    if actor.unrestricted:
        return
    held = await access.standing_of(session, tenant_id, actor.user_id)
    granted = await access.role_permissions(session, tenant_id, set(roles))
    denied = refusal(actor, held, granted, taking=taking)
    if denied is not None:
        raise denied


async def require_may_hand_out(
    session: AsyncSession, tenant_id: str, actor: Actor, roles: Iterable[str]
) -> None:
    """The actor may grant every role in `roles`."""
    await _require(session, tenant_id, actor, roles, taking=False)


async def require_may_take_away(
    session: AsyncSession, tenant_id: str, actor: Actor, roles: Iterable[str]
) -> None:
    """The actor may take away every role in `roles`: the roles a member they change or
    remove holds, those of a group they change, empty or delete, or a held custom role they
    change or delete. Custom roles that no longer exist grant nothing, so they pass."""
    await _require(session, tenant_id, actor, roles, taking=True)


async def require_permissions_held(
    session: AsyncSession, tenant_id: str, actor: Actor, permissions: Iterable[str]
) -> None:
    """For custom roles: the actor holds every permission the role would carry."""
    if actor.unrestricted:
        return
    held = await access.standing_of(session, tenant_id, actor.user_id)
    denied = refusal(actor, held, {"": frozenset(permissions)})
    if denied is not None:
        raise denied
