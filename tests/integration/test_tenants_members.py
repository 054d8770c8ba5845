"""Members, custom roles, groups, project grants and CheckPermission through gRPC."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from nexus.tenant.v1 import member_pb2, project_pb2, role_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import invitation_token, refusal, team, tenants
from tests.support import issue_key, key_metadata, register_user, set_roles, unique

Server = tuple[NexusServer, int]
Check = pb.CheckPermissionResponse


async def test_an_account_added_by_email_is_invited_and_joins_when_it_accepts(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    person = await register_user(channel)
    added = await stub.AddMember(
        pb.AddMemberRequest(tenant_id=t.tenant_id, email=f"  {person.email.upper()} ", roles=["read_only"]),
        metadata=t.owner.metadata(),
    )
    assert (added.invitation.email, list(added.invitation.roles), added.invitation.invited_by) == (
        person.email,
        ["read_only"],
        t.owner.user_id,
    )
    token = await invitation_token(server[0], person.email)
    member = await stub.AcceptInvitation(pb.AcceptInvitationRequest(token=token), metadata=person.metadata())
    assert (member.user_id, list(member.roles), member.added_by) == (
        person.user_id,
        ["read_only"],
        t.owner.user_id,
    )
    code, reason = await refusal(
        stub.AddMember(
            pb.AddMemberRequest(tenant_id=t.tenant_id, user_id=person.user_id), metadata=t.owner.metadata()
        )
    )
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALREADY_MEMBER")


async def test_last_owner_cannot_leave_or_be_demoted(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    demote = pb.UpdateMemberRequest(
        tenant_id=t.tenant_id, member=member_pb2.Member(user_id=t.owner.user_id, roles=["admin"])
    )
    assert await refusal(stub.UpdateMember(demote, metadata=t.owner.metadata())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_OWNER",
    )
    leave = pb.LeaveTenantRequest(tenant_id=t.tenant_id)
    assert await refusal(stub.LeaveTenant(leave, metadata=t.owner.metadata())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LAST_OWNER",
    )
    promote = pb.UpdateMemberRequest(
        tenant_id=t.tenant_id, member=member_pb2.Member(user_id=t.member.user_id, roles=["owner"])
    )
    await stub.UpdateMember(promote, metadata=t.owner.metadata())
    await stub.LeaveTenant(leave, metadata=t.owner.metadata())
    left = await stub.ListMembers(pb.ListMembersRequest(tenant_id=t.tenant_id), metadata=t.member.metadata())
    assert [m.user_id for m in left.members] == [t.member.user_id]


async def test_admin_cannot_grant_owner(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    admin = await register_user(channel)
    await set_roles(server[0], t.tenant_id, admin.user_id, ["admin"])
    request = pb.UpdateMemberRequest(
        tenant_id=t.tenant_id,
        member=member_pb2.Member(user_id=t.member.user_id, roles=["owner"]),
        update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
    )
    assert await refusal(tenants(channel).UpdateMember(request, metadata=admin.metadata())) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_REQUIRED",
    )


async def test_custom_role_opens_its_rpcs_and_cannot_hand_out_more(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    role = await stub.CreateRole(
        pb.CreateRoleRequest(
            tenant_id=t.tenant_id,
            role=role_pb2.Role(
                name="Member manager", permissions=["tenants.members.read", "tenants.members.write"]
            ),
        ),
        metadata=t.owner.metadata(),
    )
    assert role.id.startswith("rol_") and not role.built_in
    await set_roles(server[0], t.tenant_id, t.member.user_id, [role.id])
    listed = await stub.ListMembers(
        pb.ListMembersRequest(tenant_id=t.tenant_id), metadata=t.member.metadata()
    )
    assert len(listed.members) == 2
    newcomer = await register_user(channel)
    grant_member = pb.AddMemberRequest(tenant_id=t.tenant_id, user_id=newcomer.user_id, roles=["member"])
    assert await refusal(stub.AddMember(grant_member, metadata=t.member.metadata())) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "PERMISSION_NOT_HELD",
    )
    same_role = pb.AddMemberRequest(tenant_id=t.tenant_id, user_id=newcomer.user_id, roles=[role.id])
    added = await stub.AddMember(same_role, metadata=t.member.metadata())
    assert list(added.invitation.roles) == [role.id]
    groups = pb.ListGroupsRequest(tenant_id=t.tenant_id)
    assert (await refusal(stub.ListGroups(groups, metadata=t.member.metadata())))[
        0
    ] == grpc.StatusCode.PERMISSION_DENIED


async def test_unknown_role_and_permission_have_their_reasons(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    ghost = "rol_" + "0" * 22
    add = pb.AddMemberRequest(tenant_id=t.tenant_id, user_id=t.owner.user_id, roles=[ghost])
    assert await refusal(stub.AddMember(add, metadata=t.owner.metadata())) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_ROLE",
    )
    create = pb.CreateRoleRequest(
        tenant_id=t.tenant_id, role=role_pb2.Role(name="x", permissions=["tenants.fly"])
    )
    assert await refusal(stub.CreateRole(create, metadata=t.owner.metadata())) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNKNOWN_PERMISSION",
    )


async def test_group_roles_are_inherited_and_lost_with_the_group(
    server: Server, channel: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    group = await stub.CreateGroup(
        pb.CreateGroupRequest(
            tenant_id=t.tenant_id, group=role_pb2.Group(name=unique("Ops"), roles=["admin"])
        ),
        metadata=t.owner.metadata(),
    )
    listing = pb.ListGroupsRequest(tenant_id=t.tenant_id)
    assert (await refusal(stub.ListGroups(listing, metadata=t.member.metadata())))[
        0
    ] == grpc.StatusCode.PERMISSION_DENIED
    add = pb.AddGroupMemberRequest(tenant_id=t.tenant_id, group_id=group.id, user_id=t.member.user_id)
    assert list((await stub.AddGroupMember(add, metadata=t.owner.metadata())).member_user_ids) == [
        t.member.user_id
    ]
    seen = await stub.ListGroups(listing, metadata=t.member.metadata())  # now an admin through the group
    assert [g.id for g in seen.groups] == [group.id]
    members = await stub.ListMembers(
        pb.ListMembersRequest(tenant_id=t.tenant_id, role="admin"), metadata=t.owner.metadata()
    )
    assert [(m.user_id, list(m.inherited_roles), list(m.group_ids)) for m in members.members] == [
        (t.member.user_id, ["admin"], [group.id])
    ]
    await stub.DeleteGroup(
        pb.DeleteGroupRequest(tenant_id=t.tenant_id, group_id=group.id), metadata=t.owner.metadata()
    )
    assert (await refusal(stub.ListGroups(listing, metadata=t.member.metadata())))[
        0
    ] == grpc.StatusCode.PERMISSION_DENIED


async def test_group_cannot_carry_owner(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    create = pb.CreateGroupRequest(
        tenant_id=t.tenant_id, group=role_pb2.Group(name="Owners", roles=["owner"])
    )
    assert (await refusal(tenants(channel).CreateGroup(create, metadata=t.owner.metadata())))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_role_in_use_is_refused_unless_forced(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    role = await stub.CreateRole(
        pb.CreateRoleRequest(
            tenant_id=t.tenant_id, role=role_pb2.Role(name="Reader", permissions=["tenants.read"])
        ),
        metadata=t.owner.metadata(),
    )
    await set_roles(server[0], t.tenant_id, t.member.user_id, ["member", role.id])
    delete = pb.DeleteRoleRequest(tenant_id=t.tenant_id, role_id=role.id)
    assert await refusal(stub.DeleteRole(delete, metadata=t.owner.metadata())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ROLE_IN_USE",
    )
    await stub.DeleteRole(
        pb.DeleteRoleRequest(tenant_id=t.tenant_id, role_id=role.id, force=True), metadata=t.owner.metadata()
    )
    members = await stub.ListMembers(
        pb.ListMembersRequest(tenant_id=t.tenant_id), metadata=t.owner.metadata()
    )
    assert {m.user_id: list(m.roles) for m in members.members}[t.member.user_id] == ["member"]
    builtin = pb.DeleteRoleRequest(tenant_id=t.tenant_id, role_id="admin")
    assert await refusal(stub.DeleteRole(builtin, metadata=t.owner.metadata())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "BUILT_IN_ROLE_IMMUTABLE",
    )


async def test_project_grants_drive_check_permission(server: Server, channel: grpc.aio.Channel) -> None:
    t = await team(server[0], channel)
    stub = tenants(channel)
    key = await issue_key(server[0], t.tenant_id, ["tenants:read"])

    async def check(**kwargs: object) -> Check:
        request = pb.CheckPermissionRequest(subject=t.member.user_id, **kwargs)  # type: ignore[arg-type]
        response: Check = await stub.CheckPermission(request, metadata=key_metadata(key))
        return response

    assert (await check(project="nexus-sales")).reason == Check.REASON_NO_PROJECT_ACCESS
    grant = pb.GrantProjectAccessRequest(
        tenant_id=t.tenant_id,
        user_id=t.member.user_id,
        project="nexus-sales",
        role=project_pb2.PROJECT_ROLE_USER,
    )
    assert (
        await stub.GrantProjectAccess(grant, metadata=t.owner.metadata())
    ).role == project_pb2.PROJECT_ROLE_USER
    allowed = await check(project="nexus-sales", project_role=project_pb2.PROJECT_ROLE_READ_ONLY)
    assert (allowed.allowed, allowed.reason, allowed.project_role) == (
        True,
        Check.REASON_GRANTED_BY_PROJECT_ACCESS,
        project_pb2.PROJECT_ROLE_USER,
    )
    too_low = await check(project="nexus-sales", project_role=project_pb2.PROJECT_ROLE_ADMIN)
    assert (too_low.allowed, too_low.reason) == (False, Check.REASON_PROJECT_ROLE_TOO_LOW)
    by_role = await check(permission="events.publish")
    assert (by_role.allowed, by_role.reason, list(by_role.granted_by_roles)) == (
        True,
        Check.REASON_GRANTED_BY_ROLE,
        ["member"],
    )
    assert (await check(permission="tenants.members.write")).reason == Check.REASON_PERMISSION_NOT_GRANTED
    outsider = await register_user(channel)
    other = await stub.CheckPermission(
        pb.CheckPermissionRequest(subject=outsider.user_id, permission="tenants.read"),
        metadata=key_metadata(key),
    )
    assert other.reason == Check.REASON_NOT_MEMBER
    revoke = pb.RevokeProjectAccessRequest(
        tenant_id=t.tenant_id, user_id=t.member.user_id, project="nexus-sales"
    )
    await stub.RevokeProjectAccess(revoke, metadata=t.owner.metadata())
    assert (await check(project="nexus-sales")).reason == Check.REASON_NO_PROJECT_ACCESS
    unknown = stub.CheckPermission(
        pb.CheckPermissionRequest(subject=t.member.user_id, project="no-such-app"), metadata=key_metadata(key)
    )
    assert await refusal(unknown) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_PROJECT")


async def test_grant_needs_membership_and_lands_in_the_token_claim(
    server: Server, channel: grpc.aio.Channel
) -> None:
    from tests.integration.tenants_support import login

    t = await team(server[0], channel)
    stub = tenants(channel)
    outsider = await register_user(channel)
    grant = pb.GrantProjectAccessRequest(
        tenant_id=t.tenant_id,
        user_id=outsider.user_id,
        project="liminal",
        role=project_pb2.PROJECT_ROLE_ADMIN,
    )
    assert await refusal(stub.GrantProjectAccess(grant, metadata=t.owner.metadata())) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "USER_NOT_MEMBER",
    )
    grant.user_id = t.member.user_id
    await stub.GrantProjectAccess(grant, metadata=t.owner.metadata())
    fresh = await login(channel, t.member.email, t.member.user_id, t.tenant_id)
    principal = await server[0].ctx.tokens.verify_access_token(fresh.access_token)  # type: ignore[union-attr]
    assert dict(principal.projects) == {"liminal": "admin"}


async def test_list_projects_is_the_catalog(channel: grpc.aio.Channel) -> None:
    user = await register_user(channel)
    projects = await tenants(channel).ListProjects(pb.ListProjectsRequest(), metadata=user.metadata())
    assert [p.key for p in projects.projects] == [
        "nexus-sales",
        "dream-people",
        "testing-hub",
        "liminal",
        "resonance",
        "agi-safety",
        "liminal-shelter",
    ]
