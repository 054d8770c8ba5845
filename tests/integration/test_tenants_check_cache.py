"""CheckPermission answers from a cache; every change that bears on an answer shows in the
very next answer of the replica that made it (other replicas: test_tenants_suspension.py).

Each test first asks, so the answer is cached, then changes something and asks again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import field_mask_pb2

from nexus.identity.v1 import identity_service_pb2 as ipb
from nexus.identity.v1 import identity_service_pb2_grpc as irpc
from nexus.tenant.v1 import member_pb2, role_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus.tenant.v1.tenant_service_pb2_grpc import TenantServiceStub
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import Team, platform_admin, team, tenants
from tests.support import issue_key, key_metadata, unique

Server = tuple[NexusServer, int]
Check = pb.CheckPermissionResponse


Checker = Callable[[str], Awaitable[Check]]


async def _checker(server: Server, channel: grpc.aio.Channel, t: Team) -> tuple[TenantServiceStub, Checker]:
    """The TenantService, and CheckPermission of the team's member by a key of the team."""
    key = await issue_key(server[0], t.tenant_id, ["tenants:read"])
    stub = tenants(channel)

    async def check(permission: str) -> Check:
        request = pb.CheckPermissionRequest(subject=t.member.user_id, permission=permission)
        answer: Check = await stub.CheckPermission(request, metadata=key_metadata(key))
        return answer

    return stub, check


async def test_a_role_change_shows_in_the_next_answer(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub, check = await _checker(server, channel, t)
    assert (await check("events.publish")).allowed
    await stub.UpdateMember(
        pb.UpdateMemberRequest(
            tenant_id=t.tenant_id,
            member=member_pb2.Member(user_id=t.member.user_id, roles=["read_only"]),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
        ),
        metadata=t.owner.metadata(),
    )
    assert (await check("events.publish")).reason == Check.REASON_PERMISSION_NOT_GRANTED


async def test_a_custom_roles_new_permissions_show_in_the_next_answer(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub, check = await _checker(server, channel, t)
    role = await stub.CreateRole(
        pb.CreateRoleRequest(
            tenant_id=t.tenant_id, role=role_pb2.Role(name=unique("Billing"), permissions=["billing.read"])
        ),
        metadata=t.owner.metadata(),
    )
    await stub.UpdateMember(
        pb.UpdateMemberRequest(
            tenant_id=t.tenant_id,
            member=member_pb2.Member(user_id=t.member.user_id, roles=["read_only", role.id]),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
        ),
        metadata=t.owner.metadata(),
    )
    assert (await check("billing.write")).reason == Check.REASON_PERMISSION_NOT_GRANTED
    await stub.UpdateRole(
        pb.UpdateRoleRequest(
            tenant_id=t.tenant_id,
            role=role_pb2.Role(id=role.id, permissions=["billing.read", "billing.write"]),
            update_mask=field_mask_pb2.FieldMask(paths=["permissions"]),
        ),
        metadata=t.owner.metadata(),
    )
    granted = await check("billing.write")
    assert (granted.allowed, list(granted.granted_by_roles)) == (True, [role.id])


async def test_joining_and_leaving_a_group_show_in_the_next_answer(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub, check = await _checker(server, channel, t)
    group = await stub.CreateGroup(
        pb.CreateGroupRequest(
            tenant_id=t.tenant_id, group=role_pb2.Group(name=unique("Ops"), roles=["admin"])
        ),
        metadata=t.owner.metadata(),
    )
    assert (await check("tenants.members.write")).reason == Check.REASON_PERMISSION_NOT_GRANTED
    membership = {"tenant_id": t.tenant_id, "group_id": group.id, "user_id": t.member.user_id}
    await stub.AddGroupMember(pb.AddGroupMemberRequest(**membership), metadata=t.owner.metadata())
    assert (await check("tenants.members.write")).reason == Check.REASON_GRANTED_BY_GROUP
    await stub.RemoveGroupMember(pb.RemoveGroupMemberRequest(**membership), metadata=t.owner.metadata())
    assert (await check("tenants.members.write")).reason == Check.REASON_PERMISSION_NOT_GRANTED


async def test_removal_shows_in_the_next_answer(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub, check = await _checker(server, channel, t)
    assert (await check("tenants.read")).allowed
    await stub.RemoveMember(
        pb.RemoveMemberRequest(tenant_id=t.tenant_id, user_id=t.member.user_id), metadata=t.owner.metadata()
    )
    assert (await check("tenants.read")).reason == Check.REASON_NOT_MEMBER


async def test_a_disabled_account_is_inactive_within_a_second(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    _, check = await _checker(server, channel, t)
    admin = await platform_admin(server[0], channel)
    identity = irpc.IdentityServiceStub(channel)
    assert (await check("tenants.read")).allowed
    await identity.DisableUser(ipb.DisableUserRequest(id=t.member.user_id), metadata=admin.metadata())
    start = time.monotonic()
    while (answer := await check("tenants.read")).reason != Check.REASON_SUBJECT_INACTIVE:
        assert time.monotonic() - start < 1.0, f"still {answer.reason} after a second"
        await asyncio.sleep(0.02)
    await identity.EnableUser(ipb.EnableUserRequest(id=t.member.user_id), metadata=admin.metadata())
    start = time.monotonic()
    while not (answer := await check("tenants.read")).allowed:
        assert time.monotonic() - start < 1.0, f"still {answer.reason} after a second"
        await asyncio.sleep(0.02)
