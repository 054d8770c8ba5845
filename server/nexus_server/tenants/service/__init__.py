"""TenantServicer: proto ↔ domain for every RPC; the rules live in the workflow modules.

Tenancy is never re-checked here: the authentication layer admitted the call to the tenant
each request names in its own `tenant_id` (or its access rule's `tenant_field`), through
auth/authorization.py, before any of these methods runs.

The RPCs are grouped by resource, one mixin a module: tenant_rpcs, member_rpcs (members and
invitations), role_rpcs (roles and permissions), group_rpcs, project_rpcs (the catalog,
project access, CheckPermission); base.py declares the handles they read."""

from __future__ import annotations

from nexus.tenant.v1 import tenant_service_pb2_grpc as rpc
from nexus_server.app.context import AppContext
from nexus_server.common.projects import Project
from nexus_server.tenants import invitations, lifecycle
from nexus_server.tenants.cache import AccessCache
from nexus_server.tenants.domain_proof import TxtLookup
from nexus_server.tenants.people import People
from nexus_server.tenants.service.group_rpcs import GroupRpcs
from nexus_server.tenants.service.member_rpcs import MemberRpcs
from nexus_server.tenants.service.project_rpcs import ProjectRpcs
from nexus_server.tenants.service.role_rpcs import RoleRpcs
from nexus_server.tenants.service.tenant_rpcs import TenantRpcs

__all__ = ["TenantServicer"]


class TenantServicer(TenantRpcs, MemberRpcs, RoleRpcs, GroupRpcs, ProjectRpcs, rpc.TenantServiceServicer):
    def __init__(
        self,
        ctx: AppContext,
        catalog: tuple[Project, ...],
        post: invitations.Post,
        facts: AccessCache,
        txt: TxtLookup,
        revoke_keys: lifecycle.RevokeTenantKeys,
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
        self.people = people
