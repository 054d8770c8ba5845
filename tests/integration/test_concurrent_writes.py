"""Concurrent identical writes answer as the contract says, never INTERNAL (issue 12, finding 8).

On PostgreSQL two calls that both passed "not there yet" used to collide on a unique rule:
six concurrent AddGroupMember of one user gave five INTERNAL, concurrent GrantProjectAccess
two. Each create-like RPC is driven here with the same request six times at once; every
answer is success or the contract's refusal, and the log records the change once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from sqlalchemy import func, select

from nexus.identity.v1 import identity_service_pb2 as identity_pb
from nexus.identity.v1 import identity_service_pb2_grpc as identity_rpc
from nexus.tenant.v1 import project_pb2, role_pb2, tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from nexus_server.db.schema import events
from tests.integration.tenants_support import invitation_token, refusal, team, tenants
from tests.support import PASSWORD, register_user, unique

Server = tuple[NexusServer, int]
TIMES = 6


async def _at_once(call: Callable[[], Awaitable[Any]]) -> Counter[tuple[grpc.StatusCode, str]]:
    return Counter(await asyncio.gather(*(refusal(call()) for _ in range(TIMES))))


async def _events(server: NexusServer, tenant_id: str, type_: str) -> int:
    async with server.db.unit_of_work(readonly=True) as uow:
        query = select(func.count()).where(events.c.tenant_id == tenant_id, events.c.type == type_)
        return int((await uow.session.execute(query)).scalar_one())


OK = (grpc.StatusCode.OK, "")


async def test_idempotent_adds_succeed_every_time_and_happen_once(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub, owner = tenants(channel), t.owner.metadata()
    group = await stub.CreateGroup(
        pb.CreateGroupRequest(tenant_id=t.tenant_id, group=role_pb2.Group(name="Ops", roles=["read_only"])),
        metadata=owner,
    )
    add = pb.AddGroupMemberRequest(tenant_id=t.tenant_id, group_id=group.id, user_id=t.member.user_id)
    assert await _at_once(lambda: stub.AddGroupMember(add, metadata=owner)) == Counter({OK: TIMES})
    assert await _events(server[0], t.tenant_id, "group.member_added") == 1

    grant = pb.GrantProjectAccessRequest(
        tenant_id=t.tenant_id,
        user_id=t.member.user_id,
        project="nexus-sales",
        role=project_pb2.PROJECT_ROLE_USER,
    )
    assert await _at_once(lambda: stub.GrantProjectAccess(grant, metadata=owner)) == Counter({OK: TIMES})
    assert await _events(server[0], t.tenant_id, "project_access.granted") == 1

    remove = pb.RemoveGroupMemberRequest(tenant_id=t.tenant_id, group_id=group.id, user_id=t.member.user_id)
    assert await _at_once(lambda: stub.RemoveGroupMember(remove, metadata=owner)) == Counter({OK: TIMES})
    assert await _events(server[0], t.tenant_id, "group.member_removed") == 1


async def test_named_creates_make_one_and_refuse_the_rest(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub, owner = tenants(channel), t.owner.metadata()
    group = pb.CreateGroupRequest(tenant_id=t.tenant_id, group=role_pb2.Group(name="Same", roles=["member"]))
    role = pb.CreateRoleRequest(
        tenant_id=t.tenant_id, role=role_pb2.Role(name="Same", permissions=["tenants.members.read"])
    )
    slug = unique("race")
    tenant = pb.CreateTenantRequest(tenant=tenant_pb2.Tenant(slug=slug, display_name="Race"))
    for call in (
        lambda: stub.CreateGroup(group, metadata=owner),
        lambda: stub.CreateRole(role, metadata=owner),
        lambda: stub.CreateTenant(tenant, metadata=owner),
    ):
        answers = await _at_once(call)
        assert answers[OK] == 1, answers
        assert {code for code, _ in answers if (code, _) != OK} == {grpc.StatusCode.ALREADY_EXISTS}, answers


async def test_invitations_are_one_per_address_and_accepted_once(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub, owner = tenants(channel), t.owner.metadata()
    person = await register_user(channel)
    invite = pb.AddMemberRequest(tenant_id=t.tenant_id, email=person.email)
    assert await _at_once(lambda: stub.AddMember(invite, metadata=owner)) == Counter({OK: TIMES})
    pending = await stub.ListInvitations(pb.ListInvitationsRequest(tenant_id=t.tenant_id), metadata=owner)
    assert [i.email for i in pending.invitations].count(person.email) == 1

    # Each of those re-sent the invitation with a fresh token; accept one sent alone.
    invitee = await register_user(channel)
    await stub.AddMember(pb.AddMemberRequest(tenant_id=t.tenant_id, email=invitee.email), metadata=owner)
    token = await invitation_token(server[0], invitee.email)
    accept = pb.AcceptInvitationRequest(token=token)
    answers = await _at_once(lambda: stub.AcceptInvitation(accept, metadata=invitee.metadata()))
    assert answers[OK] == 1, answers
    assert set(answers) - {OK} <= {(grpc.StatusCode.FAILED_PRECONDITION, "INVITATION_NOT_PENDING")}, answers
    assert await _events(server[0], t.tenant_id, "invitation.accepted") == 1


async def test_concurrent_sign_ups_of_one_address_make_one_account(channel: grpc.aio.Channel) -> None:
    stub = identity_rpc.IdentityServiceStub(channel)
    address = f"{unique('race')}@example.com"
    request = identity_pb.RegisterRequest(email=address, password=PASSWORD, display_name="R")
    answers = await _at_once(lambda: stub.Register(request))
    assert set(answers) <= {OK, (grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN")}, answers
