"""Builds the tenants capability: the tenant directory (for authentication), the port it
offers identity (project grants for tokens), and the TenantService servicer."""

from __future__ import annotations

from typing import Any

from nexus_server.app.context import AppContext
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import grants, invitations
from nexus_server.tenants.cache import AccessCache
from nexus_server.tenants.directory import CachedTenantDirectory
from nexus_server.tenants.projects import DEFAULT_PROJECTS, parse_catalog
from nexus_server.tenants.service import TenantServicer


def build(ctx: AppContext) -> object | None:
    # One cache serves the authentication layer and CheckPermission; the feed keeps it true.
    cache = AccessCache(ctx.db, ctx.revocations)
    ctx.background.append(cache.refresh_forever)
    ctx.tenants = CachedTenantDirectory(ctx.db, ctx.revocations, cache=cache)
    catalog = parse_catalog(ctx.settings.projects) if ctx.settings.projects.strip() else DEFAULT_PROJECTS
    mailer: Any = ctx.extras.get("mailer")

    async def mail(uow: UnitOfWork, recipient: str, subject: str, body: str) -> None:
        # Looked up per call: identity may register its mailer after this is built.
        sender: Any = ctx.extras.get("mailer", mailer)
        if sender is not None:
            await sender.queue(uow, recipient, subject, body)

    public_url = getattr(ctx.settings, "public_url", "http://127.0.0.1:8080")
    ctx.extras["tenants.project_grants"] = grants.project_roles
    identity: Any = ctx.extras.get("identity")
    if identity is not None and getattr(identity, "project_grants", False) is None:
        # Identity's port for the access token's `projects` claim (identity/deps.py).
        identity.project_grants = grants.project_roles
    return TenantServicer(ctx, catalog, invitations.Post(mail, public_url), cache)
