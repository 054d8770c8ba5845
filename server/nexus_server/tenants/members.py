"""Members: invite (AddMember), change roles, remove, leave, and the member view.

The last-owner rule is checked under the tenant's row lock, so two owners demoting each
other at once cannot leave a tenant without an owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
from nexus_server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import access, rules, store
from nexus_server.tenants.actor import (
    Actor,
    require_known_roles,
    require_may_hand_out,
    require_may_take_away,
)
from nexus_server.tenants.invalidation import invalidate_member
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.people import People
from nexus_server.tenants.permissions import MEMBER, OWNER


@dataclass(frozen=True)
class MemberView:
    """A membership as the contract shows it: direct and inherited roles, groups, person."""

    row: store.MembershipRow
    standing: access.Standing
    email: str
    display_name: str


async def view(uow: UnitOfWork, people: People, row: store.MembershipRow) -> MemberView:
    held = await access.standing(uow.session, row.tenant_id, row.user_id, row.roles)
    user = await people.by_id(uow, row.user_id)
    return MemberView(row, held, user.email if user else "", user.display_name if user else "")


async def _views(uow: UnitOfWork, people: People, rows: list[store.MembershipRow]) -> list[MemberView]:
    found = await people.by_ids(uow, [r.user_id for r in rows])
    views = []
    for row in rows:
        held = await access.standing(uow.session, row.tenant_id, row.user_id, row.roles)
        user = found.get(row.user_id)
        views.append(MemberView(row, held, user.email if user else "", user.display_name if user else ""))
    return views


async def _last_owner_guard(uow: UnitOfWork, tenant_id: str, user_id: str) -> None:
    if await store.count_owners(uow.session, tenant_id) <= 1:
        raise FailedPrecondition(
            "the tenant would be left without an owner; make another member an owner first",
            reason="LAST_OWNER",
            violations=[PreconditionViolation("LAST_OWNER", f"users/{user_id}", "the only owner")],
        )


@dataclass(frozen=True)
class AddRequest:
    tenant_id: str
    email: str = ""
    user_id: str = ""
    roles: tuple[str, ...] = ()
    invitation_ttl: timedelta | None = None
    post: Any = None  # invitations.Post: how an invitation is mailed


async def add_member(
    uow: UnitOfWork, people: People, actor: Actor, request: AddRequest
) -> store.InvitationRow:
    """Invite the person: always an invitation, never a membership at once, so that no one
    joins a tenant without accepting, and the answer and the mail are the same whether or
    not the address has an account (which would otherwise be told to any tenant admin)."""
    from nexus_server.tenants import invitations

    with Violations() as bad:
        rules.identifier(request.tenant_id, "ten", "tenant_id", bad)
        email = ""
        if request.user_id:
            rules.identifier(request.user_id, "usr", "user_id", bad)
        elif request.email:
            email = rules.email(request.email, "email", bad)
        else:
            bad.add("invitee", "give email or user_id")
        roles = rules.role_names(list(request.roles), "roles", bad, minimum=0)
        ttl = request.invitation_ttl
        if ttl is not None and ttl and not timedelta(hours=1) <= ttl <= timedelta(days=30):
            bad.add("invitation_ttl", "must be from 1 hour to 30 days")
    roles = roles or [MEMBER]
    await lock_tenant(uow, request.tenant_id)
    await require_known_roles(uow.session, request.tenant_id, roles, "roles")
    await require_may_hand_out(uow.session, request.tenant_id, actor, roles)
    if request.user_id:
        user = await people.by_id(uow, request.user_id)
        if user is None:
            raise NotFound(f"no account has the id {request.user_id}")
        email = user.email
    else:
        user = await people.by_email(uow, email)
    # Only this tenant's own members are told apart: its admins can list them anyway.
    if user is not None and await store.get_membership(uow.session, request.tenant_id, user.id):
        raise AlreadyExists(
            f"{user.id} is already a member; change their roles with UpdateMember",
            reason="ALREADY_MEMBER",
            metadata={"user_id": user.id},
        )
    return await invitations.invite(
        uow,
        request.post or invitations.Post(),
        request.tenant_id,
        email,
        roles,
        actor.user_id or None,
        ttl or invitations.DEFAULT_TTL,
    )


async def update_member(
    uow: UnitOfWork,
    people: People,
    revocations: Revocations,
    actor: Actor,
    tenant_id: str,
    user_id: str,
    roles: list[str],
    paths: list[str],
) -> MemberView:
    with Violations(reason="UPDATE_MASK_INVALID") as mask:
        for path in [p for p in paths if p not in ("roles", "*")][:10]:
            mask.add("update_mask", f"{path!r} cannot be updated; only roles")
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "tenant_id", bad)
        rules.identifier(user_id, "usr", "member.user_id", bad)
        roles = rules.role_names(roles, "member.roles", bad, minimum=1)
    await lock_tenant(uow, tenant_id)
    current = await store.get_membership(uow.session, tenant_id, user_id)
    if current is None:
        raise NotFound(f"{user_id} is not a member of this tenant")
    await require_known_roles(uow.session, tenant_id, roles, "member.roles")
    # Only someone who could have made this member what they are (groups included) may
    # change them, and only into what they could grant.
    held = await access.standing(uow.session, tenant_id, user_id, current.roles)
    await require_may_take_away(uow.session, tenant_id, actor, held.roles)
    await require_may_hand_out(uow.session, tenant_id, actor, [r for r in roles if r not in current.roles])
    if OWNER in current.roles and OWNER not in roles:
        await _last_owner_guard(uow, tenant_id, user_id)
    if list(current.roles) != roles:
        await store.upsert_membership(uow.session, tenant_id, user_id, roles, uow.clock.now())
        await uow.append_event(
            "member.updated",
            {"user_id": user_id, "roles": roles, "previous_roles": list(current.roles)},
            tenant_id=tenant_id,
            subject=user_id,
        )
        await invalidate_member(uow, revocations, tenant_id, user_id)
    row = await store.get_membership(uow.session, tenant_id, user_id)
    assert row is not None
    return await view(uow, people, row)


async def remove_member(
    uow: UnitOfWork,
    revocations: Revocations,
    actor: Actor,
    tenant_id: str,
    user_id: str,
    *,
    leaving: bool = False,
) -> None:
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "tenant_id", bad)
        if not leaving:
            rules.identifier(user_id, "usr", "user_id", bad)
    await lock_tenant(uow, tenant_id)
    current = await store.get_membership(uow.session, tenant_id, user_id)
    if current is None:
        raise NotFound(f"{user_id} is not a member of this tenant")
    if not leaving:
        # Removal takes every role the member holds, their groups' too.
        held = await access.standing(uow.session, tenant_id, user_id, current.roles)
        await require_may_take_away(uow.session, tenant_id, actor, held.roles)
    if OWNER in current.roles:
        await _last_owner_guard(uow, tenant_id, user_id)
    await store.delete_membership(uow.session, tenant_id, user_id)
    await uow.append_event(
        "member.removed",
        {"user_id": user_id, "roles": list(current.roles), "left": leaving},
        tenant_id=tenant_id,
        subject=user_id,
    )
    await invalidate_member(uow, revocations, tenant_id, user_id)


@dataclass(frozen=True)
class MemberQuery:
    tenant_id: str
    page_size: int = 0
    page_token: str = ""
    role: str = ""
    group_id: str = ""
    query: str = ""


async def list_members(uow: UnitOfWork, people: People, q: MemberQuery) -> tuple[list[MemberView], str]:
    with Violations() as bad:
        size = rules.page_size(q.page_size, bad)
        if q.role:
            rules.role_names([q.role], "role", bad, minimum=1)
        rules.identifier(q.group_id, "grp", "group_id", bad, required=False)
        text = rules.text_name(q.query, "query", bad, limit=100, required=False)
    filters = [q.tenant_id, q.role, q.group_id, text]
    after = pagination.decode(q.page_token, "ListMembers", filters, (datetime, str))
    user_ids: set[str] | None = None
    if q.group_id:
        user_ids = set((await store.group_members_of(uow.session, [q.group_id])).get(q.group_id, ()))
        group = await store.get_group(uow.session, q.tenant_id, q.group_id)
        user_ids = user_ids if group is not None else set()
    if q.role:
        holders = await _holders(uow, q.tenant_id, q.role)
        user_ids = holders if user_ids is None else user_ids & holders
    rows = await store.list_members(
        uow.session,
        q.tenant_id,
        after,
        size + 1,
        user_ids=sorted(user_ids) if user_ids is not None else None,
        matching=people.ids_matching(text) if text else None,
    )
    rows, token = pagination.page(rows, size, "ListMembers", filters, lambda r: [r.create_time, r.user_id])
    return await _views(uow, people, rows), token


async def _holders(uow: UnitOfWork, tenant_id: str, role: str) -> set[str]:
    """Members holding `role` directly or through a group (JSON lists: filtered here)."""
    direct = {m.user_id for m in await store.all_memberships(uow.session, tenant_id) if role in m.roles}
    carrying = [g.id for g in await store.all_groups(uow.session, tenant_id) if role in g.roles]
    members = await store.group_members_of(uow.session, carrying)
    return direct | {u for users in members.values() for u in users}
