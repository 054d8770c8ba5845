"""The role RPCs: custom roles (create, list beside the built-in ones, update, delete) and
the permission catalog."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from nexus.tenant.v1 import role_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.common import pagination
from nexus_server.tenants import convert, roles
from nexus_server.tenants.permissions import CATALOG
from nexus_server.tenants.service.base import EMPTY, RpcBase, actor


class RoleRpcs(RpcBase):
    async def CreateRole(self, request: pb.CreateRoleRequest, context: Any) -> role_pb2.Role:
        async with self.db.unit_of_work() as uow:
            view = await roles.create_role(
                uow,
                actor(),
                request.tenant_id,
                request.role.name,
                request.role.description,
                list(request.role.permissions),
            )
        return convert.role(view)

    async def ListRoles(self, request: pb.ListRolesRequest, context: Any) -> pb.ListRolesResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            views = await roles.list_roles(uow, request.tenant_id)
        page, token = pagination.page_of(
            "ListRoles", views, request.page_size, request.page_token, ["roles", request.tenant_id]
        )
        return pb.ListRolesResponse(roles=[convert.role(v) for v in page], next_page_token=token)

    async def UpdateRole(self, request: pb.UpdateRoleRequest, context: Any) -> role_pb2.Role:
        given: dict[str, object] = {
            "name": request.role.name,
            "description": request.role.description,
            "permissions": list(request.role.permissions),
        }
        async with self.db.unit_of_work() as uow:
            view = await roles.update_role(
                uow,
                self.revocations,
                actor(),
                request.tenant_id,
                request.role.id,
                given,
                list(request.update_mask.paths),
            )
        return convert.role(view)

    async def DeleteRole(self, request: pb.DeleteRoleRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await roles.delete_role(
                uow, self.revocations, actor(), request.tenant_id, request.role_id, force=request.force
            )
        return EMPTY

    async def ListPermissions(
        self, request: pb.ListPermissionsRequest, context: Any
    ) -> pb.ListPermissionsResponse:
        page, token = pagination.page_of(
            "ListPermissions", list(CATALOG), request.page_size, request.page_token, ["permissions"]
        )
        return pb.ListPermissionsResponse(
            permissions=[convert.permission(p) for p in page], next_page_token=token
        )
