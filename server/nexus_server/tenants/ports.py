"""What the tenants capability offers the others, besides the authentication layer's
TenantDirectory (auth/ports.py): each a plain async function on the caller's unit of work,
handed over by app/wiring.py."""

from __future__ import annotations

from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import store


async def plan_of(uow: UnitOfWork, tenant_id: str) -> str:
    """The tenant's billing plan id, "" if there is no such tenant (rate limits per plan)."""
    row = await store.get_tenant(uow.session, tenant_id)
    return row.plan_id if row is not None else ""
