"""Builds the tenants capability: the tenant directory (for authentication), the port it
offers identity (project grants for tokens), and the TenantServicer."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from nexus_server.app.context import AppContext
from nexus_server.common.projects import DEFAULT_PROJECTS, parse_catalog
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import grants, invitations
from nexus_server.tenants.cache import AccessCache
from nexus_server.tenants.directory import CachedTenantDirectory
from nexus_server.tenants.domain_proof import DnsTxtLookup
from nexus_server.tenants.lifecycle import RevokeTenantKeys
from nexus_server.tenants.people import People
from nexus_server.tenants.service import TenantServicer

# (uow, tenant_id, user_id) -> project name → role: what identity puts in the `projects` claim.
ProjectGrants = Callable[[UnitOfWork, str, str], Coroutine[Any, Any, dict[str, str]]]


@dataclass(frozen=True)
class Built:
    servicer: TenantServicer
    project_grants: ProjectGrants  # for identity: the access token's `projects` claim


def build(
    ctx: AppContext, *, mail: invitations.Mail | None, revoke_keys: RevokeTenantKeys, people: People
) -> Built:
    """`mail`: identity's outbox, through which invitations reach people; `revoke_keys`:
    the apikeys port that revokes a deleted tenant's keys; `people`: identity's directory of
    accounts (emails and names of members, account status)."""
    # One cache serves the authentication layer and CheckPermission; the feed keeps it true.
    cache = AccessCache(ctx.db, ctx.revocations, people)
    ctx.background.append(cache.refresh_forever)
    ctx.tenants = CachedTenantDirectory(ctx.db, ctx.revocations, cache=cache)
    catalog = parse_catalog(ctx.settings.projects) if ctx.settings.projects.strip() else DEFAULT_PROJECTS
    txt = DnsTxtLookup(ctx.settings.dns_nameservers)
    post = invitations.Post(mail, ctx.settings.public_url)
    servicer = TenantServicer(ctx, catalog, post, cache, txt, revoke_keys, people)
    return Built(servicer, grants.project_roles)
