"""TenantServicer: proto ↔ domain for every RPC; the rules live in the workflow modules.

Tenancy is never re-checked here: the authentication layer admitted the call to the tenant
each request names in its own `tenant_id` (or its access rule's `tenant_field`), through
auth/authorization.py, before any of these methods runs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from google.protobuf import empty_pb2

from nexus.tenant.v1 import member_pb2, role_pb2, tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus.tenant.v1 import tenant_service_pb2_grpc as rpc
from nexus_server.app.context import AppContext
from nexus_server.auth.principal import Principal
from nexus_server.common import pagination
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.projects import Project
from nexus_server.interceptors.call import current_call
from nexus_server.tenants import (
    convert,
    grants,
    groups,
    invitations,
    members,
    roles,
    workflows,
)
from nexus_server.tenants.actor import Actor
from nexus_server.tenants.cache import AccessCache
from nexus_server.tenants.domain_proof import TxtLookup
from nexus_server.tenants.people import People
from nexus_server.tenants.permissions import CATALOG

_EMPTY = empty_pb2.Empty()


def _principal() -> Principal:
    return current_call().require_principal()


def _actor() -> Actor:
    principal = _principal()
    return Actor(principal.user_id, principal.platform_admin)


def _ttl(request: pb.AddMemberRequest) -> timedelta | None:
    if not request.HasField("invitation_ttl"):
        return None
    seconds, nanos = request.invitation_ttl.seconds, request.invitation_ttl.nanos
    if not 0 <= seconds <= 400 * 86400 or not 0 <= nanos < 10**9:
        raise InvalidArgument(FieldViolation("invitation_ttl", "must be from 1 hour to 30 days"))
    return timedelta(seconds=seconds, microseconds=nanos // 1000)


def _project_role(value: int, field: str, *, optional: bool) -> str | None:
    if value == 0 and optional:
        return None
    if value not in convert.PROJECT_ROLE_NAME:
        raise InvalidArgument(FieldViolation(field, "must be PROJECT_ROLE_ADMIN, _USER or _READ_ONLY"))
    return convert.PROJECT_ROLE_NAME[value]


class TenantServicer(rpc.TenantServiceServicer):
    def __init__(
        self,
        ctx: AppContext,
        catalog: tuple[Project, ...],
        post: invitations.Post,
        facts: AccessCache,
        txt: TxtLookup,
        revoke_keys: workflows.RevokeTenantKeys,
        people: People,
    ):
        self.ctx = ctx
        self.facts = facts
        self.db = ctx.db
        self.revocations = ctx.revocations
        self.catalog = catalog
        self.post = post
        self.txt = txt
        self.revoke_keys = revoke_keys
        self.people = people  # identity's directory of accounts

    # --- tenants ---------------------------------------------------------------------------

    async def CreateTenant(self, request: pb.CreateTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work() as uow:
            row = await workflows.create_tenant(
                uow,
                owner_user_id=_principal().user_id,
                slug=request.tenant.slug,
                display_name=request.tenant.display_name,
                domain=request.tenant.domain,
            )
        return convert.tenant(row)

    async def GetTenant(self, request: pb.GetTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await workflows.get_tenant(uow, request.id, include_deleted=_principal().platform_admin)
        return convert.tenant(row)

    async def ListTenants(self, request: pb.ListTenantsRequest, context: Any) -> pb.ListTenantsResponse:
        if request.status and request.status not in convert.STATUS_NAME:
            raise InvalidArgument(FieldViolation("status", "is not a tenant status"))
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
            rows, token = await workflows.list_tenants(uow, _actor(), query)
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
            row = await workflows.verify_domain(uow, self.revocations, self.txt, request.id)
        return convert.tenant(row)

    async def DeleteTenant(self, request: pb.DeleteTenantRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await workflows.delete_tenant(uow, self.revocations, self.revoke_keys, request.id)
        return _EMPTY

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
            row = await workflows.suspend_tenant(uow, self.revocations, request.id, request.reason)
        return convert.tenant(row)

    async def ReactivateTenant(self, request: pb.ReactivateTenantRequest, context: Any) -> tenant_pb2.Tenant:
        async with self.db.unit_of_work() as uow:
            row = await workflows.reactivate_tenant(uow, self.revocations, request.id)
        return convert.tenant(row)

    # --- members and invitations -----------------------------------------------------------

    async def AddMember(self, request: pb.AddMemberRequest, context: Any) -> pb.AddMemberResponse:
        add = members.AddRequest(
            tenant_id=request.tenant_id,
            email=request.email,
            user_id=request.user_id,
            roles=tuple(request.roles),
            invitation_ttl=_ttl(request),
            post=self.post,
        )
        async with self.db.unit_of_work() as uow:
            invitation = await members.add_member(uow, self.people, _actor(), add)
            return pb.AddMemberResponse(invitation=convert.invitation(invitation, uow))

    async def ListMembers(self, request: pb.ListMembersRequest, context: Any) -> pb.ListMembersResponse:
        query = members.MemberQuery(
            tenant_id=request.tenant_id,
            page_size=request.page_size,
            page_token=request.page_token,
            role=request.role,
            group_id=request.group_id,
            query=request.query,
        )
        async with self.db.unit_of_work(readonly=True) as uow:
            views, token = await members.list_members(uow, self.people, query)
        return pb.ListMembersResponse(members=[convert.member(v) for v in views], next_page_token=token)

    async def UpdateMember(self, request: pb.UpdateMemberRequest, context: Any) -> member_pb2.Member:
        async with self.db.unit_of_work() as uow:
            view = await members.update_member(
                uow,
                self.people,
                self.revocations,
                _actor(),
                request.tenant_id,
                request.member.user_id,
                list(request.member.roles),
                list(request.update_mask.paths),
            )
        return convert.member(view)

    async def RemoveMember(self, request: pb.RemoveMemberRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await members.remove_member(uow, self.revocations, _actor(), request.tenant_id, request.user_id)
        return _EMPTY

    async def LeaveTenant(self, request: pb.LeaveTenantRequest, context: Any) -> empty_pb2.Empty:
        actor = _actor()
        async with self.db.unit_of_work() as uow:
            await members.remove_member(
                uow, self.revocations, actor, request.tenant_id, actor.user_id, leaving=True
            )
        return _EMPTY

    async def ListInvitations(
        self, request: pb.ListInvitationsRequest, context: Any
    ) -> pb.ListInvitationsResponse:
        if request.state not in (0, *convert.INVITATION_STATE_NAME):
            raise InvalidArgument(FieldViolation("state", "is not an invitation state"))
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await invitations.list_invitations(
                uow,
                request.tenant_id,
                request.page_size,
                request.page_token,
                convert.INVITATION_STATE_NAME.get(request.state, ""),
            )
            return pb.ListInvitationsResponse(
                invitations=[convert.invitation(r, uow) for r in rows], next_page_token=token
            )

    async def RevokeInvitation(
        self, request: pb.RevokeInvitationRequest, context: Any
    ) -> member_pb2.Invitation:
        async with self.db.unit_of_work() as uow:
            row = await invitations.revoke(uow, request.tenant_id, request.invitation_id)
            return convert.invitation(row, uow)

    async def AcceptInvitation(self, request: pb.AcceptInvitationRequest, context: Any) -> member_pb2.Member:
        async with self.db.unit_of_work() as uow:
            row = await invitations.accept(
                uow, self.revocations, self.people, request.token, _principal().user_id
            )
            view = await members.view(uow, self.people, row)
        return convert.member(view)

    # --- roles and permissions -------------------------------------------------------------

    async def CreateRole(self, request: pb.CreateRoleRequest, context: Any) -> role_pb2.Role:
        async with self.db.unit_of_work() as uow:
            view = await roles.create_role(
                uow,
                _actor(),
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
                _actor(),
                request.tenant_id,
                request.role.id,
                given,
                list(request.update_mask.paths),
            )
        return convert.role(view)

    async def DeleteRole(self, request: pb.DeleteRoleRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await roles.delete_role(
                uow, self.revocations, _actor(), request.tenant_id, request.role_id, force=request.force
            )
        return _EMPTY

    async def ListPermissions(
        self, request: pb.ListPermissionsRequest, context: Any
    ) -> pb.ListPermissionsResponse:
        page, token = pagination.page_of(
            "ListPermissions", list(CATALOG), request.page_size, request.page_token, ["permissions"]
        )
        return pb.ListPermissionsResponse(
            permissions=[convert.permission(p) for p in page], next_page_token=token
        )

    # --- groups ----------------------------------------------------------------------------

    async def CreateGroup(self, request: pb.CreateGroupRequest, context: Any) -> role_pb2.Group:
        async with self.db.unit_of_work() as uow:
            row = await groups.create_group(
                uow,
                _actor(),
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
                _actor(),
                request.tenant_id,
                request.group.id,
                given,
                list(request.update_mask.paths),
            )
        return convert.group(row)

    async def AddGroupMember(self, request: pb.AddGroupMemberRequest, context: Any) -> role_pb2.Group:
        async with self.db.unit_of_work() as uow:
            row = await groups.add_group_member(
                uow, self.revocations, _actor(), request.tenant_id, request.group_id, request.user_id
            )
        return convert.group(row)

    async def RemoveGroupMember(self, request: pb.RemoveGroupMemberRequest, context: Any) -> role_pb2.Group:
        async with self.db.unit_of_work() as uow:
            row = await groups.remove_group_member(
                uow, self.revocations, _actor(), request.tenant_id, request.group_id, request.user_id
            )
        return convert.group(row)

    async def DeleteGroup(self, request: pb.DeleteGroupRequest, context: Any) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await groups.delete_group(uow, self.revocations, _actor(), request.tenant_id, request.group_id)
        return _EMPTY

    # --- projects --------------------------------------------------------------------------

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
                _actor().user_id or None,
            )
        return convert.grant(row)

    async def RevokeProjectAccess(
        self, request: pb.RevokeProjectAccessRequest, context: Any
    ) -> empty_pb2.Empty:
        async with self.db.unit_of_work() as uow:
            await grants.revoke(
                uow, self.revocations, self.catalog, request.tenant_id, request.user_id, request.project
            )
        return _EMPTY

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
