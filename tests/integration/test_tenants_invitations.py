"""Invitations end to end: AddMember for an address with no account mails a link through
identity's outbox to a real SMTP server (aiosmtpd); the invitee registers and accepts it."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

import grpc

from nexus.tenant.v1 import member_pb2, tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from tests.integration.tenants_support import refusal, tenants
from tests.support import Inbox, User, register_user, unique


async def _owned_tenant(channel: grpc.aio.Channel, name: str) -> tuple[User, Any]:
    """A new user and the tenant they created through the API (so they own it)."""
    owner = await register_user(channel)
    tenant = await tenants(channel).CreateTenant(
        pb.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug=unique("inv"), display_name=name)),
        metadata=owner.metadata(),
    )
    return owner, tenant


def _token(mail: EmailMessage) -> str:
    """The invitation token in a mailed link."""
    found = re.search(r"token=([A-Za-z0-9_-]{43})", mail.get_content())  # type: ignore[attr-defined]
    assert found is not None
    return found.group(1)


async def test_invitation_is_mailed_and_accepted_by_the_invited_address_only(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    channel, inbox = smtp_server
    stub = tenants(channel)
    owner, tenant = await _owned_tenant(channel, "Acme")
    address = f"{unique('newcomer')}@example.com"
    added = await stub.AddMember(
        pb.AddMemberRequest(tenant_id=tenant.id, email=address.upper(), roles=["read_only"]),
        metadata=owner.metadata(),
    )
    assert added.WhichOneof("result") == "invitation"
    assert (added.invitation.email, added.invitation.state) == (address, member_pb2.Invitation.STATE_PENDING)
    token = _token(await inbox.wait_for(address, "Invitation to Acme"))

    stranger = await register_user(channel)
    accept = pb.AcceptInvitationRequest(token=token)
    assert await refusal(stub.AcceptInvitation(accept, metadata=stranger.metadata())) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INVITATION_EMAIL_MISMATCH",
    )
    invitee = await register_user(channel, email=address)
    member = await stub.AcceptInvitation(accept, metadata=invitee.metadata())
    assert (member.tenant_id, member.user_id, list(member.roles), member.added_by) == (
        tenant.id,
        invitee.user_id,
        ["read_only"],
        owner.user_id,
    )
    assert await refusal(stub.AcceptInvitation(accept, metadata=invitee.metadata())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "INVITATION_NOT_PENDING",
    )
    listed = await stub.ListInvitations(
        pb.ListInvitationsRequest(tenant_id=tenant.id), metadata=owner.metadata()
    )
    assert [(i.email, i.state, i.accepted_by) for i in listed.invitations] == [
        (address, member_pb2.Invitation.STATE_ACCEPTED, invitee.user_id)
    ]


async def test_reinviting_replaces_the_token_and_revoking_stops_it(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    channel, inbox = smtp_server
    stub = tenants(channel)
    owner, tenant = await _owned_tenant(channel, "Beta")
    address = f"{unique('twice')}@example.com"
    first = await stub.AddMember(
        pb.AddMemberRequest(tenant_id=tenant.id, email=address), metadata=owner.metadata()
    )
    old = _token(await inbox.wait_for(address, "Beta"))
    inbox.messages.clear()
    second = await stub.AddMember(
        pb.AddMemberRequest(tenant_id=tenant.id, email=address, roles=["admin"]), metadata=owner.metadata()
    )
    assert second.invitation.id == first.invitation.id and list(second.invitation.roles) == ["admin"]
    await inbox.wait_for(address, "Beta")
    invitee = await register_user(channel, email=address)
    stale = pb.AcceptInvitationRequest(token=old)
    assert (await refusal(stub.AcceptInvitation(stale, metadata=invitee.metadata())))[
        0
    ] == grpc.StatusCode.NOT_FOUND
    revoked = await stub.RevokeInvitation(
        pb.RevokeInvitationRequest(tenant_id=tenant.id, invitation_id=first.invitation.id),
        metadata=owner.metadata(),
    )
    assert revoked.state == member_pb2.Invitation.STATE_REVOKED
