"""The tenant RPCs: create, read, list, update, verify the domain, delete, resolve, suspend."""

from __future__ import annotations

from typing import Any

from google.protobuf import empty_pb2

from nexus.tenant.v1 import tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.common.validation import Violations
from nexus_server.tenants import convert, lifecycle, workflows
from nexus_server.tenants.service.base import EMPTY, RpcBase, actor, principal


class TenantRpcs(RpcBase):
    async def CreateTenant(self, request: pb.CreateTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work() as uow:
            row = await workflows.create_tenant(
                uow,
                owner_user_id=principal().user_id,
                slug=request.tenant.slug,
                display_name=request.tenant.display_name,
                domain=request.tenant.domain,
            )
        return convert.tenant(row)

    async def GetTenant(self, request: pb.GetTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await workflows.get_tenant(uow, request.id, include_deleted=principal().platform_admin)
        return convert.tenant(row)

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Any) -> pb.ListTenantsResponse:
        with Violations() as bad:
            if request.status and request.status not in convert.STATUS_NAME:
                bad.add("status", "is not a tenant status")
        query = workflows.TenantQuery(
            page_size=request.page_size,
            page_token=request.page_token,
            all_tenants=request.all_tenants,
            name=request.name,
            slug=request.slug,
            domain=request.domain,
            status=convert.STATUS_NAME.get(request.status, ""),
        )
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await workflows.list_tenants(uow, actor(), query)
        return pb.ListTenantsResponse(tenants=[convert.tenant(r) for r in rows], next_page_token=token)

    async def UpdateTenant(self, request: pb.UpdateTenantRequest, context: Any) -> tenant_pb2.Tenant:
        given = {
            "slug": request.tenant.slug,
            "display_name": request.tenant.display_name,
            "domain": request.tenant.domain,
        }
        async with self.db.unit_of_work() as uow:
            row = await workflows.update_tenant(
                uow, self.revocations, request.tenant.id, given, list(request.update_mask.paths)
            )
        return convert.tenant(row)

    async def VerifyTenantDomain(
        self, request: pb.VerifyTenantDomainRequest, context: Any
    ) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work() as uow:
            row = await lifecycle.verify_domain(uow, self.revocations, self.txt, request.id)
        return convert.tenant(row)

    async def DeleteTenant(self, request: pb.DeleteTenantRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await lifecycle.delete_tenant(uow, self.revocations, self.revoke_keys, request.id)
        return EMPTY

    async def ResolveTenant(self, request: pb.ResolveTenantRequest, context: Any) -> pb.ResolveTenantResponse:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await workflows.resolve_tenant(
                uow, domain=request.domain, slug=request.slug, tenant_id=request.id
            )
        return pb.ResolveTenantResponse(
            tenant_id=row.id,
            slug=row.slug,
            display_name=row.display_name,
            domain=row.domain or "",
            status=convert.STATUS[row.status],
        )

    async def SuspendTenant(self, request: pb.SuspendTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work() as uow:
            row = await lifecycle.suspend_tenant(uow, self.revocations, request.id, request.reason)
        return convert.tenant(row)

    async def ReactivateTenant(self, request: pb.ReactivateTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work() as uow:
            row = await lifecycle.reactivate_tenant(uow, self.revocations, request.id)
        return convert.tenant(row)
