"""Role matrix: each tenant role × each mutating TenantService RPC gets exactly the allowed
outcome: OK when the role may, PERMISSION_DENIED otherwise.

The expected table is written out here from the contract's caller column (API.md), and a
test checks it against the access options in the descriptor, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from nexus.common.v1 import access_pb2
from nexus.tenant.v1 import member_pb2, project_pb2, role_pb2, tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server import contract
from nexus_server.app.server import NexusServer
from nexus_server.common import projects
from nexus_server.tenants import grants, groups, invitations, roles
from nexus_server.tenants.actor import Actor
from nexus_server.tenants.permissions import BUILT_IN_PERMISSIONS
from tests.integration.tenants_support import refusal, tenants
from tests.support import User, make_tenant, register_user, set_roles, unique

# RPC → who may call it: "user" anyone signed in, "member" any role, "admin" admins and
# owners (and custom roles granting `permission`), "owner" owners, "platform" nobody here.
EXPECTED: dict[str, tuple[str, str]] = {
    "CreateTenant": ("user", ""),
    "UpdateTenant": ("admin", "tenants.write"),
    "DeleteTenant": ("owner", ""),
    "SuspendTenant": ("platform", ""),
    "ReactivateTenant": ("platform", ""),
    "AddMember": ("admin", "tenants.members.write"),
    "UpdateMember": ("admin", "tenants.members.write"),
    "RemoveMember": ("admin", "tenants.members.write"),
    "LeaveTenant": ("member", ""),
    "RevokeInvitation": ("admin", "tenants.members.write"),
    "CreateRole": ("admin", "tenants.roles.write"),
    "UpdateRole": ("admin", "tenants.roles.write"),
    "DeleteRole": ("admin", "tenants.roles.write"),
    "CreateGroup": ("admin", "tenants.groups.write"),
    "UpdateGroup": ("admin", "tenants.groups.write"),
    "AddGroupMember": ("admin", "tenants.groups.write"),
    "RemoveGroupMember": ("admin", "tenants.groups.write"),
    "DeleteGroup": ("admin", "tenants.groups.write"),
    "GrantProjectAccess": ("admin", "tenants.project_access.write"),
    "RevokeProjectAccess": ("admin", "tenants.project_access.write"),
}
# The custom role: what `member` holds, plus managing members.
CUSTOM_PERMISSIONS = sorted(BUILT_IN_PERMISSIONS["member"] | {"tenants.members.write"})
ROLES = ("owner", "admin", "member", "read_only", "custom", "outsider")
_CALLER = {
    access_pb2.CALLER_USER: "user",
    access_pb2.CALLER_MEMBER: "member",
    access_pb2.CALLER_ADMIN: "admin",
    access_pb2.CALLER_OWNER: "owner",
    access_pb2.CALLER_PLATFORM_ADMIN: "platform",
}


def allowed(role: str, rpc: str) -> bool:
    least, permission = EXPECTED[rpc]
    if least == "user":
        return True
    if role == "outsider" or least == "platform":
        return False
    if least == "member":
        return True
    if least == "owner":
        return role == "owner"
    return role in ("owner", "admin") or (role == "custom" and permission == "tenants.members.write")


@dataclass
class Cell:
    tenant_id: str
    actor: User
    target: str
    newcomer: str
    spare_role: str
    group: str
    invitation: str
    owner: str  # a member who is in no group


async def _cell(server: NexusServer, channel: grpc.aio.Channel, role: str) -> Cell:
    owner, actor, target, newcomer = [await register_user(channel) for _ in range(4)]
    tenant_id = await make_tenant(server, owner.user_id)
    async with server.db.unit_of_work() as uow:
        custom = await roles.create_role(uow, Actor(), tenant_id, "Member manager", "", CUSTOM_PERMISSIONS)
        spare = await roles.create_role(uow, Actor(), tenant_id, "Spare", "", ["tenants.read"])
        group = await groups.create_group(uow, Actor(), tenant_id, "Team", "", ["read_only"])
    await set_roles(server, tenant_id, target.user_id, ["member"])
    if role != "outsider":
        await set_roles(server, tenant_id, actor.user_id, [custom.id if role == "custom" else role])
    async with server.db.unit_of_work() as uow:
        await groups.add_group_member(
            uow, server.ctx.revocations, Actor(), tenant_id, group.id, target.user_id
        )
        await grants.grant(
            uow,
            server.ctx.revocations,
            projects.DEFAULT_PROJECTS,
            tenant_id,
            target.user_id,
            "nexus-sales",
            "user",
            None,
        )
        invitation = await invitations.invite(
            uow,
            invitations.Post(),
            tenant_id,
            f"{unique('inv')}@example.com",
            ["member"],
            None,
            invitations.DEFAULT_TTL,
        )
    return Cell(
        tenant_id, actor, target.user_id, newcomer.user_id, spare.id, group.id, invitation.id, owner.user_id
    )


def _request(rpc: str, c: Cell) -> Any:
    t = c.tenant_id
    mask = field_mask_pb2.FieldMask
    requests: dict[str, Callable[[], Message]] = {
        "CreateTenant": lambda: pb.CreateTenantRequest(
            tenant=tenant_pb2.Tenant(slug=unique("m"), display_name="M")
        ),
        "UpdateTenant": lambda: pb.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(id=t, display_name="Renamed"), update_mask=mask(paths=["display_name"])
        ),
        "DeleteTenant": lambda: pb.DeleteTenantRequest(id=t),
        "SuspendTenant": lambda: pb.SuspendTenantRequest(id=t, reason="matrix"),
        "ReactivateTenant": lambda: pb.ReactivateTenantRequest(id=t),
        "AddMember": lambda: pb.AddMemberRequest(tenant_id=t, user_id=c.newcomer, roles=["read_only"]),
        "UpdateMember": lambda: pb.UpdateMemberRequest(
            tenant_id=t, member=member_pb2.Member(user_id=c.target, roles=["read_only"])
        ),
        "RemoveMember": lambda: pb.RemoveMemberRequest(tenant_id=t, user_id=c.target),
        "LeaveTenant": lambda: pb.LeaveTenantRequest(tenant_id=t),
        "RevokeInvitation": lambda: pb.RevokeInvitationRequest(tenant_id=t, invitation_id=c.invitation),
        "CreateRole": lambda: pb.CreateRoleRequest(
            tenant_id=t, role=role_pb2.Role(name="Another", permissions=["tenants.read"])
        ),
        "UpdateRole": lambda: pb.UpdateRoleRequest(
            tenant_id=t, role=role_pb2.Role(id=c.spare_role, name="Renamed"), update_mask=mask(paths=["name"])
        ),
        "DeleteRole": lambda: pb.DeleteRoleRequest(tenant_id=t, role_id=c.spare_role),
        "CreateGroup": lambda: pb.CreateGroupRequest(
            tenant_id=t, group=role_pb2.Group(name="Other", roles=["read_only"])
        ),
        "UpdateGroup": lambda: pb.UpdateGroupRequest(
            tenant_id=t, group=role_pb2.Group(id=c.group, name="Renamed"), update_mask=mask(paths=["name"])
        ),
        "AddGroupMember": lambda: pb.AddGroupMemberRequest(tenant_id=t, group_id=c.group, user_id=c.owner),
        "RemoveGroupMember": lambda: pb.RemoveGroupMemberRequest(
            tenant_id=t, group_id=c.group, user_id=c.target
        ),
        "DeleteGroup": lambda: pb.DeleteGroupRequest(tenant_id=t, group_id=c.group),
        "GrantProjectAccess": lambda: pb.GrantProjectAccessRequest(
            tenant_id=t, user_id=c.target, project="liminal", role=project_pb2.PROJECT_ROLE_USER
        ),
        "RevokeProjectAccess": lambda: pb.RevokeProjectAccessRequest(
            tenant_id=t, user_id=c.target, project="nexus-sales"
        ),
    }
    return requests[rpc]()


@pytest.mark.parametrize("rpc", sorted(EXPECTED))
@pytest.mark.parametrize("role", ROLES)
async def test_role_gets_exactly_the_allowed_outcome(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, role: str, rpc: str
) -> None:
    cell = await _cell(server[0], channel, role)
    stub = tenants(channel)
    code, reason = await refusal(
        getattr(stub, rpc)(_request(rpc, cell), metadata=cell.actor.metadata(cell.tenant_id))
    )
    if allowed(role, rpc):
        assert (code, reason) == (grpc.StatusCode.OK, "")
    else:
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert reason == (
            "TENANT_ACCESS_DENIED"
            if role == "outsider" and EXPECTED[rpc][0] != "platform"
            else "ROLE_REQUIRED"
        )


def test_expected_table_is_the_contracts_caller_column() -> None:
    service = next(s for s in contract.services() if s.name == "TenantService")
    for method in service.methods:
        if method.name in EXPECTED:
            rule = contract.access_rule(method)
            assert (_CALLER[rule.caller], rule.permission) == EXPECTED[method.name], method.name
