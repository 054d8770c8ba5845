"""Invitations: how a person joins a tenant they did not create (AddMember invites).

A person joins only by accepting with the mailed token (AcceptInvitation), signed in to
the account of the invited address: never at once, and never by merely signing up or in,
so that no tenant can pull an account in without its consent. Whether the address has an
account changes neither the invitation nor its mail.

The mailed token is 32 random bytes (43 base64url characters); only its SHA-256 is stored,
so the table never holds a usable token. Re-inviting an address replaces the pending
invitation's token, roles and expiry. The mail goes through identity's outbox in the same
transaction (`Mail`), so an invitation is mailed if and only if it commits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from nexus_server.auth.revocations import Revocations
from nexus_server.common import pagination
from nexus_server.common.errors import (
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    PreconditionViolation,
)
from nexus_server.common.ids import new_id
from nexus_server.common.validation import Violations
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import rules, store
from nexus_server.tenants.invalidation import invalidate_member
from nexus_server.tenants.locking import lock_tenant
from nexus_server.tenants.people import People

DEFAULT_TTL = timedelta(days=7)
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")

# (uow, recipient, subject, body): queue a mail in the caller's transaction.
Mail = Callable[[UnitOfWork, str, str, str], Awaitable[None]]


@dataclass(frozen=True)
class Post:
    """How invitations reach people (identity's outbox; None while it is not built) and the
    base of the link they follow."""

    mail: Mail | None = None
    public_url: str = "http://127.0.0.1:8080"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def state_of(row: store.InvitationRow, uow: UnitOfWork) -> str:
    if row.state == "pending" and row.expire_time <= uow.clock.now():
        return "expired"
    return row.state


async def _send(uow: UnitOfWork, post: Post, row: store.InvitationRow, token: str) -> None:
    tenant = await store.get_tenant(uow.session, row.tenant_id)
    name = tenant.display_name if tenant else row.tenant_id
    link = f"{post.public_url.rstrip('/')}/invitations/accept?token={token}"
    body = (
        f"You have been invited to join {name} on Nexus.\n\n"
        f"Accept the invitation: {link}\n\n"
        f"Sign in, or sign up, with this address ({row.email}) to accept it. If you do not "
        f"want to join, ignore this email. It expires at {row.expire_time.isoformat()}.\n"
    )
    if post.mail is not None:
        await post.mail(uow, row.email, f"Invitation to {name} on Nexus", body)


async def invite(
    uow: UnitOfWork,
    post: Post,
    tenant_id: str,
    email: str,
    roles: list[str],
    invited_by: str | None,
    ttl: timedelta,
) -> store.InvitationRow:
    now = uow.clock.now()
    token = secrets.token_urlsafe(32)
    pending = await store.pending_invitation(uow.session, tenant_id, email)
    if pending is not None:
        values = {
            "roles": roles,
            "token_hash": digest(token),
            "invited_by": invited_by,
            "send_time": now,
            "expire_time": now + ttl,
        }
        await store.update_invitation(uow.session, pending.id, values)
        invitation_id = pending.id
    else:
        invitation_id = new_id("ivt", at=now)
        await store.insert_invitation(
            uow.session,
            store.InvitationRow(
                id=invitation_id,
                tenant_id=tenant_id,
                email=email,
                roles=tuple(roles),
                token_hash=digest(token),
                state="pending",
                invited_by=invited_by,
                accepted_by=None,
                create_time=now,
                send_time=now,
                expire_time=now + ttl,
                accept_time=None,
                revoke_time=None,
            ),
        )
    row = await store.get_invitation(uow.session, tenant_id, invitation_id)
    assert row is not None
    await _send(uow, post, row, token)
    await uow.append_event(
        "invitation.created",
        {"invitation_id": row.id, "email": email, "roles": roles, "resent": pending is not None},
        tenant_id=tenant_id,
        subject=row.id,
    )
    return row


async def revoke(uow: UnitOfWork, tenant_id: str, invitation_id: str) -> store.InvitationRow:
    with Violations() as bad:
        rules.identifier(tenant_id, "ten", "tenant_id", bad)
        rules.identifier(invitation_id, "ivt", "invitation_id", bad)
    await lock_tenant(uow, tenant_id)
    row = await store.get_invitation(uow.session, tenant_id, invitation_id)
    if row is None:
        raise NotFound(f"invitation {invitation_id} does not exist")
    if row.state == "revoked":
        return row
    if row.state == "accepted":
        raise _not_pending(row)
    await store.update_invitation(uow.session, row.id, {"state": "revoked", "revoke_time": uow.clock.now()})
    await uow.append_event(
        "invitation.revoked",
        {"invitation_id": row.id, "email": row.email},
        tenant_id=tenant_id,
        subject=row.id,
    )
    found = await store.get_invitation(uow.session, tenant_id, invitation_id)
    assert found is not None
    return found


def _not_pending(row: store.InvitationRow) -> FailedPrecondition:
    return FailedPrecondition(
        f"invitation {row.id} is {row.state}",
        reason="INVITATION_NOT_PENDING",
        violations=[
            PreconditionViolation("STATE", f"invitations/{row.id}", f"the invitation is {row.state}")
        ],
    )


async def _join(uow: UnitOfWork, revocations: Revocations, row: store.InvitationRow, user_id: str) -> None:
    """Make `user_id` a member with the invitation's surviving roles (or leave them as they
    are if they already are one) and mark it accepted."""
    now = uow.clock.now()
    if await store.get_membership(uow.session, row.tenant_id, user_id) is None:
        custom = await store.roles_by_id(
            uow.session, row.tenant_id, [r for r in row.roles if r.startswith("rol_")]
        )
        roles = [r for r in row.roles if not r.startswith("rol_") or r in custom]
        await store.upsert_membership(
            uow.session, row.tenant_id, user_id, roles or ["member"], now, added_by=row.invited_by
        )
        await uow.append_event(
            "member.added",
            {"user_id": user_id, "roles": roles, "added_by": row.invited_by or "", "invitation_id": row.id},
            tenant_id=row.tenant_id,
            subject=user_id,
        )
        await invalidate_member(uow, revocations, row.tenant_id, user_id)
    await store.update_invitation(
        uow.session, row.id, {"state": "accepted", "accepted_by": user_id, "accept_time": now}
    )
    await uow.append_event(
        "invitation.accepted",
        {"invitation_id": row.id, "user_id": user_id},
        tenant_id=row.tenant_id,
        subject=row.id,
    )


async def accept(
    uow: UnitOfWork, revocations: Revocations, people: People, token: str, user_id: str
) -> store.MembershipRow:
    with Violations() as bad:
        if not _TOKEN.fullmatch(token):
            bad.add("token", "must be the 43-character token from the email")
    row = await store.invitation_by_token_hash(uow.session, digest(token))
    if row is not None:
        # Lock, then read again: of two concurrent accepts, the second sees it accepted.
        await store.get_tenant(uow.session, row.tenant_id, lock=True)
        row = await store.invitation_by_token_hash(uow.session, digest(token))
    if row is None:
        raise NotFound("no invitation has this token")
    state = state_of(row, uow)
    if state == "expired":
        raise FailedPrecondition("the invitation has expired; ask for a new one", reason="INVITATION_EXPIRED")
    if state != "pending":
        raise _not_pending(row)
    user = await people.by_id(uow, user_id)
    if user is None or user.email != row.email:
        raise PermissionDenied(
            "this invitation was sent to another address", reason="INVITATION_EMAIL_MISMATCH"
        )
    tenant = await store.get_tenant(uow.session, row.tenant_id)
    if tenant is None or tenant.status == "deleted":
        raise NotFound("no invitation has this token")
    if tenant.status == "suspended":
        raise PermissionDenied(f"tenant {tenant.id} is suspended", reason="TENANT_SUSPENDED")
    await _join(uow, revocations, row, user_id)
    member = await store.get_membership(uow.session, row.tenant_id, user_id)
    assert member is not None
    return member


STATES = {0: "", 1: "pending", 2: "accepted", 3: "revoked", 4: "expired"}


async def list_invitations(
    uow: UnitOfWork, tenant_id: str, page_size: int, page_token: str, state: str
) -> tuple[list[store.InvitationRow], str]:
    with Violations() as bad:
        size = rules.page_size(page_size, bad)
    filters = [tenant_id, state]
    after = pagination.decode(page_token, "ListInvitations", filters, (datetime, str))
    rows = await store.list_invitations(
        uow.session, tenant_id, after, size + 1, state=state, now=uow.clock.now()
    )
    return pagination.page(rows, size, "ListInvitations", filters, lambda r: [r.create_time, r.id])
