"""The group RPCs: create, list, update, delete, and add or remove a member."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from nexus.tenant.v1 import role_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.tenants import convert, groups
from nexus_server.tenants.service.base import EMPTY, RpcBase, actor


class GroupRpcs(RpcBase):
    async def CreateGroup(self, request: pb.CreateGroupRequest, context: Any) -> role_pb2.Group:
        async with self.db.unit_of_work() as uow:
            row = await groups.create_group(
                uow,
                actor(),
                request.tenant_id,
                request.group.name,
                request.group.description,
                list(request.group.roles),
            )
        return convert.group(row)

    async def ListGroups(self, request: pb.ListGroupsRequest, context: Any) -> pb.ListGroupsResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await groups.list_groups(
                uow, request.tenant_id, request.page_size, request.page_token, request.user_id
            )
        return pb.ListGroupsResponse(groups=[convert.group(r) for r in rows], next_page_token=token)

    async def UpdateGroup(self, request: pb.UpdateGroupRequest, context: Any) -> role_pb2.Group:
        given: dict[str, object] = {
            "name": request.group.name,
            "description": request.group.description,
            "roles": list(request.group.roles),
        }
        async with self.db.unit_of_work() as uow:
            row = await groups.update_group(
                uow,
                self.revocations,
                actor(),
                request.tenant_id,
                request.group.id,
                given,
                list(request.update_mask.paths),
            )
        return convert.group(row)

    async def AddGroupMember(self, request: pb.AddGroupMemberRequest, context: Any) -> role_pb2.Group:
        async with self.db.unit_of_work() as uow:
            row = await groups.add_group_member(
                uow, self.revocations, actor(), request.tenant_id, request.group_id, request.user_id
            )
        return convert.group(row)

    async def RemoveGroupMember(self, request: pb.RemoveGroupMemberRequest, context: Any) -> role_pb2.Group:
        async with self.db.unit_of_work() as uow:
            row = await groups.remove_group_member(
                uow, self.revocations, actor(), request.tenant_id, request.group_id, request.user_id
            )
        return convert.group(row)

    async def DeleteGroup(self, request: pb.DeleteGroupRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await groups.delete_group(uow, self.revocations, actor(), request.tenant_id, request.group_id)
        return EMPTY
