"""Custom roles: named sets of catalog permissions, and the built-in roles beside them."""

from __future__ import annotations

from dataclasses import dataclass

from nexus_server.auth.revocations import Revocations
from nexus_server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)
from nexus_server.common.fieldmask import fields_to_update
from nexus_server.common.ids import new_id
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import rules, store
from nexus_server.tenants.actor import Actor, require_may_take_away, require_permissions_held
from nexus_server.tenants.invalidation import invalidate_all_members
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.permissions import BUILT_IN_PERMISSIONS, BUILT_IN_ROLES, BY_NAME

UPDATABLE = ("name", "description", "permissions")


@dataclass(frozen=True)
class RoleView:
    id: str
    tenant_id: str
    name: str
    description: str
    permissions: tuple[str, ...]
    built_in: bool
    row: store.RoleRow | None = None


BUILT_IN_VIEWS = tuple(
    RoleView(r, "", r, f"The built-in {r} role.", tuple(sorted(BUILT_IN_PERMISSIONS[r])), True)
    for r in BUILT_IN_ROLES
)


def _view(row: store.RoleRow) -> RoleView:
    return RoleView(row.id, row.tenant_id, row.name, row.description, row.permissions, False, row)


def _permissions(values: list[str], field: str, bad: Violations, unknown: Violations) -> list[str]:
    """Sorted unique names; shape violations go to `bad`, names not in the catalog to `unknown`."""
    unique = sorted(set(values))
    if not unique:
        bad.add(field, "must name at least one permission")
    if len(unique) > 200:
        bad.add(field, "must name at most 200 permissions")
    for i, name in enumerate(values[:200]):
        if name not in BY_NAME:
            unknown.add(f"{field}[{i}]", f"{name[:128]!r} is not in the permission catalog")
    return unique


def _join(bad: Violations, unknown: Violations) -> None:
    """Unknown permissions beside other mistakes are reported with them (INVALID_REQUEST);
    alone, `unknown` raises them as UNKNOWN_PERMISSION once `bad` has passed."""
    if bad:
        bad.extend(unknown.found)


async def _name_free(uow: UnitOfWork, tenant_id: str, name: str, except_id: str = "") -> None:
    if name.casefold() in BUILT_IN_ROLES or await store.role_name_taken(
        uow.session, tenant_id, name, except_id=except_id
    ):
        raise AlreadyExists(f"the tenant already has a role named {name!r}")


async def create_role(
    uow: UnitOfWork, actor: Actor, tenant_id: str, name: str, description: str, permissions: list[str]
) -> RoleView:
    unknown = Violations(reason="UNKNOWN_PERMISSION")
    with Violations() as bad:
        name = rules.text_name(name, "role.name", bad, limit=64)
        description = rules.description(description, "role.description", bad)
        names = _permissions(permissions, "role.permissions", bad, unknown)
        _join(bad, unknown)
    unknown.raise_if_any()
    await lock_tenant(uow, tenant_id)
    await require_permissions_held(uow.session, tenant_id, actor, names)
    await _name_free(uow, tenant_id, name)
    now = uow.clock.now()
    row = store.RoleRow(new_id("rol", at=now), tenant_id, name, description, tuple(names), now, now)
    try:
        await store.insert_role(uow.session, row)
    except store.Conflict:
        raise AlreadyExists(f"the tenant already has a role named {name!r}") from None
    await uow.append_event(
        "role.created",
        {"role_id": row.id, "name": name, "permissions": names},
        tenant_id=tenant_id,
        subject=row.id,
    )
    return _view(row)


async def _custom(uow: UnitOfWork, tenant_id: str, role_id: str, field: str) -> store.RoleRow:
    if role_id in BUILT_IN_ROLES:
        raise FailedPrecondition(
            f"the built-in role {role_id} cannot be changed or deleted",
            reason="BUILT_IN_ROLE_IMMUTABLE",
            violations=[PreconditionViolation("BUILT_IN", f"roles/{role_id}", "built-in roles are fixed")],
        )
    with Violations() as bad:
        rules.identifier(role_id, "rol", field, bad)
    row = await store.get_role(uow.session, tenant_id, role_id)
    if row is None:
        raise NotFound(f"role {role_id} does not exist")
    return row


async def update_role(
    uow: UnitOfWork,
    revocations: Revocations,
    actor: Actor,
    tenant_id: str,
    role_id: str,
    given: dict[str, object],
    paths: list[str],
) -> RoleView:
    fields = fields_to_update(paths, UPDATABLE, given)
    values: dict[str, object] = {}
    unknown = Violations(reason="UNKNOWN_PERMISSION")
    with Violations() as bad:
        if "name" in fields:
            values["name"] = rules.text_name(str(given["name"]), "role.name", bad, limit=64)
        if "description" in fields:
            values["description"] = rules.description(str(given["description"]), "role.description", bad)
        if "permissions" in fields:
            perms = given["permissions"]
            assert isinstance(perms, list)
            values["permissions"] = tuple(_permissions(perms, "role.permissions", bad, unknown))
        # The role is looked up before the fields are judged: a built-in or missing role
        # answers as such, whatever else is wrong.
        await lock_tenant(uow, tenant_id)
        row = await _custom(uow, tenant_id, role_id, "role.id")
        _join(bad, unknown)
    unknown.raise_if_any()
    if "permissions" in values:
        added = set(values["permissions"]) - set(row.permissions)  # type: ignore[call-overload]
        if values["permissions"] != row.permissions and any(await _holders(uow, tenant_id, role_id)):
            # Its holders' rank changes with it: only someone who could grant it as it is may.
            await require_may_take_away(uow.session, tenant_id, actor, [role_id])
        await require_permissions_held(uow.session, tenant_id, actor, added)
    values = {k: v for k, v in values.items() if getattr(row, k) != v}
    if not values:
        return _view(row)
    if "name" in values:
        await _name_free(uow, tenant_id, str(values["name"]), except_id=role_id)
    values["update_time"] = uow.clock.now()
    try:
        await store.update_role(uow.session, role_id, values)
    except store.Conflict:
        raise AlreadyExists("the tenant already has a role of that name") from None
    found = await store.get_role(uow.session, tenant_id, role_id)
    assert found is not None
    await uow.append_event(
        "role.updated",
        {"role_id": role_id, "name": found.name, "permissions": list(found.permissions)},
        tenant_id=tenant_id,
        subject=role_id,
    )
    if "permissions" in values:
        await invalidate_all_members(uow, revocations, tenant_id)
    return _view(found)


async def _holders(
    uow: UnitOfWork, tenant_id: str, role_id: str
) -> tuple[list[store.MembershipRow], list[store.GroupRow], list[store.InvitationRow]]:
    """The members, groups and pending invitations that hold the role."""
    members = [m for m in await store.all_memberships(uow.session, tenant_id) if role_id in m.roles]
    groups = [g for g in await store.all_groups(uow.session, tenant_id) if role_id in g.roles]
    invitations = [
        i for i in await store.pending_invitations_of_tenant(uow.session, tenant_id) if role_id in i.roles
    ]
    return members, groups, invitations


async def delete_role(
    uow: UnitOfWork, revocations: Revocations, actor: Actor, tenant_id: str, role_id: str, *, force: bool
) -> None:
    await lock_tenant(uow, tenant_id)
    row = await _custom(uow, tenant_id, role_id, "role_id")
    members, groups, invitations = await _holders(uow, tenant_id, role_id)
    if members or groups or invitations:
        # Deleting a held role takes it from its holders: only someone who could grant it may.
        await require_may_take_away(uow.session, tenant_id, actor, [role_id])
    if (members or groups or invitations) and not force:
        holders = [f"users/{m.user_id}" for m in members] + [f"groups/{g.id}" for g in groups]
        holders += [f"invitations/{i.id}" for i in invitations]
        raise FailedPrecondition(
            f"role {role_id} is still held; take it away first or delete with force",
            reason="ROLE_IN_USE",
            violations=[PreconditionViolation("IN_USE", h, "holds the role") for h in sorted(holders)[:100]],
        )
    now = uow.clock.now()
    for m in members:
        await store.upsert_membership(
            uow.session, tenant_id, m.user_id, [r for r in m.roles if r != role_id], now
        )
    for g in groups:
        await store.update_group(
            uow.session, g.id, {"roles": [r for r in g.roles if r != role_id], "update_time": now}
        )
    for i in invitations:
        await store.update_invitation(uow.session, i.id, {"roles": [r for r in i.roles if r != role_id]})
    await store.delete_role(uow.session, role_id)
    await uow.append_event(
        "role.deleted",
        {"role_id": role_id, "name": row.name, "forced": bool(members or groups or invitations)},
        tenant_id=tenant_id,
        subject=role_id,
    )
    await invalidate_all_members(uow, revocations, tenant_id)


async def list_roles(uow: UnitOfWork, tenant_id: str) -> list[RoleView]:
    return [*BUILT_IN_VIEWS, *(_view(r) for r in await store.list_roles(uow.session, tenant_id))]
