"""Groups: named sets of a tenant's members that carry roles their members inherit."""

from __future__ import annotations

from datetime import datetime

from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
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
from nexus_server.tenants.actor import (
    Actor,
    require_known_roles,
    require_may_hand_out,
    require_may_take_away,
)
from nexus_server.tenants.invalidation import invalidate_all_members, invalidate_member
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.permissions import OWNER

UPDATABLE = ("name", "description", "roles")
MAX_MEMBERS = 1000


def _roles(values: list[str], field: str, bad: Violations) -> list[str]:
    roles = rules.role_names(values, field, bad, minimum=0)
    if OWNER in roles:
        bad.add(field, "a group cannot carry the owner role")
    return roles


def _check_ids(user_id: str, group_id: str) -> None:
    with Violations() as bad:
        rules.identifier(user_id, "usr", "user_id", bad)
        rules.identifier(group_id, "grp", "group_id", bad)


async def _get(uow: UnitOfWork, tenant_id: str, group_id: str, field: str = "group_id") -> store.GroupRow:
    with Violations() as bad:
        rules.identifier(group_id, "grp", field, bad)
    row = await store.get_group(uow.session, tenant_id, group_id)
    if row is None:
        raise NotFound(f"group {group_id} does not exist")
    return row


async def create_group(
    uow: UnitOfWork, actor: Actor, tenant_id: str, name: str, description: str, roles: list[str]
) -> store.GroupRow:
    with Violations() as bad:
        name = rules.text_name(name, "group.name", bad, limit=64)
        description = rules.description(description, "group.description", bad)
        roles = _roles(roles, "group.roles", bad)
    await lock_tenant(uow, tenant_id)
    await require_known_roles(uow.session, tenant_id, roles, "group.roles")
    await require_may_hand_out(uow.session, tenant_id, actor, roles)
    if await store.group_name_taken(uow.session, tenant_id, name):
        raise AlreadyExists(f"the tenant already has a group named {name!r}")
    now = uow.clock.now()
    row = store.GroupRow(new_id("grp", at=now), tenant_id, name, description, tuple(roles), now, now)
    try:
        await store.insert_group(uow.session, row)
    except store.Conflict:
        raise AlreadyExists(f"the tenant already has a group named {name!r}") from None
    await uow.append_event(
        "group.created",
        {"group_id": row.id, "name": name, "roles": roles},
        tenant_id=tenant_id,
        subject=row.id,
    )
    return row


async def update_group(
    uow: UnitOfWork,
    revocations: Revocations,
    actor: Actor,
    tenant_id: str,
    group_id: str,
    given: dict[str, object],
    paths: list[str],
) -> store.GroupRow:
    fields = fields_to_update(paths, UPDATABLE, given)
    values: dict[str, object] = {}
    roles: list[str] = []
    with Violations() as bad:
        if "name" in fields:
            values["name"] = rules.text_name(str(given["name"]), "group.name", bad, limit=64)
        if "description" in fields:
            values["description"] = rules.description(str(given["description"]), "group.description", bad)
        if "roles" in fields:
            raw = given["roles"]
            assert isinstance(raw, list)
            roles = _roles(raw, "group.roles", bad)
            values["roles"] = tuple(roles)
        rules.identifier(group_id, "grp", "group.id", bad)
    await lock_tenant(uow, tenant_id)
    row = await _get(uow, tenant_id, group_id, "group.id")
    if "roles" in values:
        await require_known_roles(uow.session, tenant_id, roles, "group.roles")
        if set(roles) != set(row.roles):
            # Changing what a group carries changes every member's rank: only someone who
            # could grant all it carries now may.
            await require_may_take_away(uow.session, tenant_id, actor, row.roles)
        await require_may_hand_out(uow.session, tenant_id, actor, set(roles) - set(row.roles))
    values = {k: v for k, v in values.items() if getattr(row, k) != v}
    if not values:
        return row
    if "name" in values and await store.group_name_taken(
        uow.session, tenant_id, str(values["name"]), except_id=group_id
    ):
        raise AlreadyExists("the tenant already has a group of that name")
    values["update_time"] = uow.clock.now()
    try:
        await store.update_group(uow.session, group_id, values)
    except store.Conflict:
        raise AlreadyExists("the tenant already has a group of that name") from None
    found = await _get(uow, tenant_id, group_id)
    await uow.append_event(
        "group.updated",
        {"group_id": group_id, "name": found.name, "roles": list(found.roles)},
        tenant_id=tenant_id,
        subject=group_id,
    )
    if "roles" in values:
        await invalidate_all_members(uow, revocations, tenant_id)
    return found


async def add_group_member(
    uow: UnitOfWork, revocations: Revocations, actor: Actor, tenant_id: str, group_id: str, user_id: str
) -> store.GroupRow:
    _check_ids(user_id, group_id)
    await lock_tenant(uow, tenant_id)
    group = await _get(uow, tenant_id, group_id)
    if user_id in group.member_user_ids:
        return group
    if await store.get_membership(uow.session, tenant_id, user_id) is None:
        raise FailedPrecondition(
            f"{user_id} is not a member of this tenant; add them with AddMember first",
            reason="USER_NOT_MEMBER",
            metadata={"user_id": user_id},
        )
    if len(group.member_user_ids) >= MAX_MEMBERS:
        raise FailedPrecondition(
            f"group {group_id} already has {MAX_MEMBERS} members",
            reason="GROUP_FULL",
            violations=[PreconditionViolation("GROUP_FULL", f"groups/{group_id}", "the group is full")],
        )
    await require_may_hand_out(uow.session, tenant_id, actor, group.roles)
    await store.add_group_member(uow.session, group, user_id, uow.clock.now())
    return await _membership_changed(uow, revocations, tenant_id, group_id, user_id, "group.member_added")


async def remove_group_member(
    uow: UnitOfWork, revocations: Revocations, actor: Actor, tenant_id: str, group_id: str, user_id: str
) -> store.GroupRow:
    _check_ids(user_id, group_id)
    await lock_tenant(uow, tenant_id)
    group = await _get(uow, tenant_id, group_id)
    if user_id not in group.member_user_ids:
        return group
    await require_may_take_away(uow.session, tenant_id, actor, group.roles)
    await store.remove_group_member(uow.session, group_id, user_id)
    return await _membership_changed(uow, revocations, tenant_id, group_id, user_id, "group.member_removed")


async def _membership_changed(
    uow: UnitOfWork, revocations: Revocations, tenant_id: str, group_id: str, user_id: str, event: str
) -> store.GroupRow:
    """After a member joined or left: the group's update time, the event, the member's
    cached standing dropped on every replica; the group as it is now."""
    await store.update_group(uow.session, group_id, {"update_time": uow.clock.now()})
    await uow.append_event(
        event, {"group_id": group_id, "user_id": user_id}, tenant_id=tenant_id, subject=group_id
    )
    await invalidate_member(uow, revocations, tenant_id, user_id)
    return await _get(uow, tenant_id, group_id)


async def delete_group(
    uow: UnitOfWork, revocations: Revocations, actor: Actor, tenant_id: str, group_id: str
) -> None:
    with Violations() as bad:
        rules.identifier(group_id, "grp", "group_id", bad)
    await lock_tenant(uow, tenant_id)
    group = await _get(uow, tenant_id, group_id)
    await require_may_take_away(uow.session, tenant_id, actor, group.roles)
    await store.delete_group(uow.session, group_id)
    await uow.append_event(
        "group.deleted", {"group_id": group_id, "name": group.name}, tenant_id=tenant_id, subject=group_id
    )
    await invalidate_all_members(uow, revocations, tenant_id)


async def list_groups(
    uow: UnitOfWork, tenant_id: str, page_size: int, page_token: str, user_id: str
) -> tuple[list[store.GroupRow], str]:
    with Violations() as bad:
        size = rules.page_size(page_size, bad)
        rules.identifier(user_id, "usr", "user_id", bad, required=False)
    filters = [tenant_id, user_id]
    after = pagination.decode(page_token, "ListGroups", filters, (datetime, str))
    rows = await store.list_groups(uow.session, tenant_id, after, size + 1, user_id=user_id)
    return pagination.page(rows, size, "ListGroups", filters, lambda r: [r.create_time, r.id])
