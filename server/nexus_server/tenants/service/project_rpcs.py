"""The project RPCs: the catalog, project access (grant, revoke, list), CheckPermission."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.common import pagination
from nexus_server.common.validation import Violations
from nexus_server.interceptors.call import current_call
from nexus_server.tenants import convert, grants
from nexus_server.tenants.service.base import EMPTY, RpcBase, actor


def _project_role(value: int, field: str, *, optional: bool) -> str | None:
    if value == 0 and optional:
        return None
    with Violations() as bad:
        if value not in convert.PROJECT_ROLE_NAME:
            bad.add(field, "must be PROJECT_ROLE_ADMIN, _USER or _READ_ONLY")
    return convert.PROJECT_ROLE_NAME[value]


class ProjectRpcs(RpcBase):
    async def ListProjects(self, request: pb.ListProjectsRequest, context: Any) -> pb.ListProjectsResponse:
        page, token = pagination.page_of(
            "ListProjects", list(self.catalog), request.page_size, request.page_token, ["projects"]
        )
        return pb.ListProjectsResponse(projects=[convert.project(p) for p in page], next_page_token=token)

    async def GrantProjectAccess(self, request: pb.GrantProjectAccessRequest, context: Any) -> Any:
        role = _project_role(request.role, "role", optional=False)
        assert role is not None
        async with self.db.unit_of_work() as uow:
            row = await grants.grant(
                uow,
                self.revocations,
                self.catalog,
                request.tenant_id,
                request.user_id,
                request.project,
                role,
                actor().user_id or None,
            )
        return convert.grant(row)

    async def RevokeProjectAccess(
        self, request: pb.RevokeProjectAccessRequest, context: Any
    ) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await grants.revoke(
                uow, self.revocations, self.catalog, request.tenant_id, request.user_id, request.project
            )
        return EMPTY

    async def ListProjectAccess(
        self, request: pb.ListProjectAccessRequest, context: Any
    ) -> pb.ListProjectAccessResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await grants.list_grants(
                uow,
                request.tenant_id,
                request.page_size,
                request.page_token,
                request.user_id,
                request.project,
            )
        return pb.ListProjectAccessResponse(grants=[convert.grant(r) for r in rows], next_page_token=token)

    async def CheckPermission(
        self, request: pb.CheckPermissionRequest, context: Any
    ) -> pb.CheckPermissionResponse:
        least = _project_role(request.project_role, "project_role", optional=True)
        tenant_id = request.tenant_id or current_call().tenant_id
        # Served from memory (cache.py): no database read on a warm cache.
        result = await grants.check(
            self.facts,
            self.catalog,
            tenant_id=tenant_id,
            subject=request.subject,
            permission=request.permission,
            project=request.project,
            least_role=least,
        )
        return pb.CheckPermissionResponse(
            allowed=result.decision.allowed,
            reason=result.decision.value,  # type: ignore[arg-type]
            granted_by_roles=result.granted_by_roles,
            project_role=convert.PROJECT_ROLE.get(result.project_role, 0),
        )
