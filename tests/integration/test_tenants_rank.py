"""No one takes away more rank than they have: a member acting through a custom role may
remove, demote or detach only what they could have granted (members, groups, roles)."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from nexus.tenant.v1 import member_pb2, role_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import Team, refusal, team, tenants
from tests.support import User, register_user, set_roles, unique

Server = tuple[NexusServer, int]
OUTRANKED = (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_RANK")


async def _acting_with(server: NexusServer, channel: grpc.aio.Channel, permission: str) -> tuple[Team, str]:
    """A team whose plain member also holds a custom role granting only `permission`."""
    t = await team(server, channel)
    role = await tenants(channel).CreateRole(
        pb.CreateRoleRequest(
            tenant_id=t.tenant_id, role=role_pb2.Role(name=unique("Only"), permissions=[permission])
        ),
        metadata=t.owner.metadata(),
    )
    await set_roles(server, t.tenant_id, t.member.user_id, ["member", role.id])
    return t, role.id


async def _member(server: NexusServer, channel: grpc.aio.Channel, tenant_id: str, roles: list[str]) -> User:
    person = await register_user(channel)
    await set_roles(server, tenant_id, person.user_id, roles)
    return person


async def _roles_of(channel: grpc.aio.Channel, t: Team) -> dict[str, list[str]]:
    listed = await tenants(channel).ListMembers(
        pb.ListMembersRequest(tenant_id=t.tenant_id), metadata=t.owner.metadata()
    )
    return {m.user_id: list(m.roles) for m in listed.members}


async def test_members_write_cannot_remove_or_demote_an_admin_but_can_a_member(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t, _ = await _acting_with(server[0], channel, "tenants.members.write")
    stub = tenants(channel)
    admin = await _member(server[0], channel, t.tenant_id, ["admin"])
    plain = await _member(server[0], channel, t.tenant_id, ["member"])
    remove = pb.RemoveMemberRequest(tenant_id=t.tenant_id, user_id=admin.user_id)
    assert await refusal(stub.RemoveMember(remove, metadata=t.member.metadata())) == OUTRANKED
    demote = pb.UpdateMemberRequest(
        tenant_id=t.tenant_id,
        member=member_pb2.Member(user_id=admin.user_id, roles=["read_only"]),
        update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
    )
    assert await refusal(stub.UpdateMember(demote, metadata=t.member.metadata())) == OUTRANKED
    assert (await _roles_of(channel, t))[admin.user_id] == ["admin"]
    demote.member.user_id = plain.user_id
    assert list((await stub.UpdateMember(demote, metadata=t.member.metadata())).roles) == ["read_only"]
    remove.user_id = plain.user_id
    await stub.RemoveMember(remove, metadata=t.member.metadata())
    assert plain.user_id not in await _roles_of(channel, t)


async def test_rank_held_through_a_group_counts(server: Server, channel: grpc.aio.Channel) -> None:
    t, _ = await _acting_with(server[0], channel, "tenants.members.write")
    stub = tenants(channel)
    admin = await _member(server[0], channel, t.tenant_id, ["member"])
    group = await stub.CreateGroup(
        pb.CreateGroupRequest(tenant_id=t.tenant_id, group=role_pb2.Group(name=unique("A"), roles=["admin"])),
        metadata=t.owner.metadata(),
    )
    await stub.AddGroupMember(
        pb.AddGroupMemberRequest(tenant_id=t.tenant_id, group_id=group.id, user_id=admin.user_id),
        metadata=t.owner.metadata(),
    )
    remove = pb.RemoveMemberRequest(tenant_id=t.tenant_id, user_id=admin.user_id)
    assert await refusal(stub.RemoveMember(remove, metadata=t.member.metadata())) == OUTRANKED


async def test_groups_write_cannot_delete_or_detach_from_a_group_carrying_admin(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t, _ = await _acting_with(server[0], channel, "tenants.groups.write")
    stub = tenants(channel)
    person = await _member(server[0], channel, t.tenant_id, ["read_only"])
    made = {}
    for name, roles in (("admins", ["admin"]), ("plain", ["member"])):
        group = await stub.CreateGroup(
            pb.CreateGroupRequest(
                tenant_id=t.tenant_id, group=role_pb2.Group(name=unique(name), roles=roles)
            ),
            metadata=t.owner.metadata(),
        )
        await stub.AddGroupMember(
            pb.AddGroupMemberRequest(tenant_id=t.tenant_id, group_id=group.id, user_id=person.user_id),
            metadata=t.owner.metadata(),
        )
        made[name] = group.id

    def detach(group_id: str) -> pb.RemoveGroupMemberRequest:
        return pb.RemoveGroupMemberRequest(tenant_id=t.tenant_id, group_id=group_id, user_id=person.user_id)

    def delete(group_id: str) -> pb.DeleteGroupRequest:
        return pb.DeleteGroupRequest(tenant_id=t.tenant_id, group_id=group_id)

    strip = pb.UpdateGroupRequest(
        tenant_id=t.tenant_id,
        group=role_pb2.Group(id=made["admins"], roles=["member"]),
        update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
    )
    me = t.member.metadata()
    assert await refusal(stub.RemoveGroupMember(detach(made["admins"]), metadata=me)) == OUTRANKED
    assert await refusal(stub.DeleteGroup(delete(made["admins"]), metadata=me)) == OUTRANKED
    assert await refusal(stub.UpdateGroup(strip, metadata=me)) == OUTRANKED
    listed = await stub.ListGroups(pb.ListGroupsRequest(tenant_id=t.tenant_id), metadata=t.owner.metadata())
    assert {g.id: (list(g.roles), list(g.member_user_ids)) for g in listed.groups}[made["admins"]] == (
        ["admin"],
        [person.user_id],
    )
    assert list((await stub.RemoveGroupMember(detach(made["plain"]), metadata=me)).member_user_ids) == []
    await stub.DeleteGroup(delete(made["plain"]), metadata=me)


async def test_roles_write_cannot_delete_or_shrink_a_held_role_beyond_its_own(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t, _ = await _acting_with(server[0], channel, "tenants.roles.write")
    stub = tenants(channel)

    async def role(permissions: list[str]) -> str:
        made: role_pb2.Role = await stub.CreateRole(
            pb.CreateRoleRequest(
                tenant_id=t.tenant_id, role=role_pb2.Role(name=unique("R"), permissions=permissions)
            ),
            metadata=t.owner.metadata(),
        )
        return made.id

    powerful, humble, idle = (
        await role(["webhooks.write", "tenants.read"]),
        await role(["tenants.read"]),
        await role(["webhooks.write"]),
    )
    await _member(server[0], channel, t.tenant_id, ["member", powerful, humble])
    me = t.member.metadata()
    shrink = pb.UpdateRoleRequest(
        tenant_id=t.tenant_id,
        role=role_pb2.Role(id=powerful, permissions=["tenants.read"]),
        update_mask=field_mask_pb2.FieldMask(paths=["permissions"]),
    )
    assert await refusal(stub.UpdateRole(shrink, metadata=me)) == OUTRANKED
    forced = pb.DeleteRoleRequest(tenant_id=t.tenant_id, role_id=powerful, force=True)
    assert await refusal(stub.DeleteRole(forced, metadata=me)) == OUTRANKED
    # Taking away only what the actor holds, or from no one, is allowed.
    await stub.DeleteRole(
        pb.DeleteRoleRequest(tenant_id=t.tenant_id, role_id=humble, force=True), metadata=me
    )
    await stub.DeleteRole(pb.DeleteRoleRequest(tenant_id=t.tenant_id, role_id=idle), metadata=me)
