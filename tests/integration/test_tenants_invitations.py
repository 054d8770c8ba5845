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
    found = re.search(r"token=([A-Za-z0-9_-]{43})", mail.get_content())
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


async def _verified_user(channel: grpc.aio.Channel, inbox: Inbox) -> User:
    """A registered account whose address is verified (sign-in used to accept for such)."""
    from nexus.identity.v1 import identity_service_pb2 as ipb
    from nexus.identity.v1 import identity_service_pb2_grpc as irpc

    user = await register_user(channel)
    mail = await inbox.wait_for(user.email, "Verify")
    found = re.search(r"token=(nxv_[0-9A-Za-z]+)", mail.get_content())
    assert found is not None
    await irpc.IdentityServiceStub(channel).VerifyEmail(ipb.VerifyEmailRequest(token=found.group(1)))
    return user


async def test_adding_an_account_only_invites_it_until_it_accepts(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    from nexus.identity.v1 import identity_service_pb2 as ipb
    from nexus.identity.v1 import identity_service_pb2_grpc as irpc

    channel, inbox = smtp_server
    stub = tenants(channel)
    owner, tenant = await _owned_tenant(channel, "Gamma")
    person = await _verified_user(channel, inbox)
    added = await stub.AddMember(
        pb.AddMemberRequest(tenant_id=tenant.id, email=person.email, roles=["admin"]),
        metadata=owner.metadata(),
    )
    assert added.WhichOneof("result") == "invitation"
    assert (added.invitation.email, added.invitation.state) == (
        person.email,
        member_pb2.Invitation.STATE_PENDING,
    )
    token = _token(await inbox.wait_for(person.email, "Invitation to Gamma"))
    # Signing in (with a verified address) joins nothing: the person has not said yes.
    signed_in = await irpc.IdentityServiceStub(channel).Login(
        ipb.LoginRequest(email=person.email, password=person.password)
    )
    assert signed_in.tenant_id == ""
    listed = await stub.ListMembers(pb.ListMembersRequest(tenant_id=tenant.id), metadata=owner.metadata())
    assert [m.user_id for m in listed.members] == [owner.user_id]
    member = await stub.AcceptInvitation(pb.AcceptInvitationRequest(token=token), metadata=person.metadata())
    assert (member.tenant_id, member.user_id, list(member.roles)) == (tenant.id, person.user_id, ["admin"])


async def test_add_member_answers_alike_whether_the_address_has_an_account(
    smtp_server: tuple[grpc.aio.Channel, Inbox],
) -> None:
    channel, inbox = smtp_server
    stub = tenants(channel)
    owner, tenant = await _owned_tenant(channel, "Delta")
    known = (await register_user(channel)).email
    unknown = f"{unique('nobody')}@example.com"
    answers = [
        await stub.AddMember(pb.AddMemberRequest(tenant_id=tenant.id, email=a), metadata=owner.metadata())
        for a in (known, unknown)
    ]
    assert [a.WhichOneof("result") for a in answers] == ["invitation", "invitation"]
    shapes = [sorted(f.name for f, _ in a.invitation.ListFields()) for a in answers]
    assert shapes[0] == shapes[1]
    assert [a.invitation.email for a in answers] == [known, unknown]

    def neutral(mail: EmailMessage, address: str) -> tuple[str, str]:
        body = mail.get_content()
        body = re.sub(r"token=[A-Za-z0-9_-]{43}", "token=T", body.replace(address, "A"))
        return mail["Subject"], re.sub(r"\d{4}-\d\d-\d\dT[\d:.+]+", "TIME", body)

    mails = [neutral(await inbox.wait_for(a, "Invitation to Delta"), a) for a in (known, unknown)]
    assert mails[0] == mails[1]
