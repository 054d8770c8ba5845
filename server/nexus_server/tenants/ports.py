"""What the tenants capability offers the others, besides the authentication layer's
TenantDirectory (auth/ports.py): each a plain async function on the caller's unit of work,
handed over by app/wiring.py."""

from __future__ import annotations

from dataclasses import dataclass

from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import store


async def plan_of(uow: UnitOfWork, tenant_id: str) -> str:
    """The tenant's billing plan id, "" if there is no such tenant (rate limits per plan)."""
    row = await store.get_tenant(uow.session, tenant_id)
    return row.plan_id if row is not None else ""


@dataclass(frozen=True)
class TenantBrief:
    """What platform-wide reports show of a tenant (usage's overview)."""

    tenant_id: str
    display_name: str
    plan_id: str


async def live_tenants(uow: UnitOfWork) -> list[TenantBrief]:
    """Every tenant not deleted. One read of the whole table: for operators' reports, which
    are rare and need every tenant's plan (to count tenants per plan)."""
    return [TenantBrief(*row) for row in await store.plans_of_live_tenants(uow.session)]


@dataclass(frozen=True)
class Standing:
    """A person's standing in a tenant, as identity needs it to pick a session's tenant."""

    tenant_id: str
    status: str  # active | suspended | deleted
    roles: tuple[str, ...] | None  # None: not a member


class Standings:
    """Identity's view of tenancy at sign-in and refresh (identity/sessions.py)."""

    async def standing_in(self, uow: UnitOfWork, tenant_id: str, user_id: str) -> Standing | None:
        """The person's standing in the tenant; None if there is no such tenant."""
        tenant = await store.get_tenant(uow.session, tenant_id)
        if tenant is None:
            return None
        membership = await store.get_membership(uow.session, tenant_id, user_id)
        return Standing(tenant.id, tenant.status, tuple(membership.roles) if membership else None)

    async def sole_tenant(self, uow: UnitOfWork, user_id: str) -> Standing | None:
        """The person's one tenant, if they belong to exactly one (not deleted)."""
        memberships = await store.memberships_of_user(uow.session, user_id)
        if len(memberships) != 1:
            return None
        only = memberships[0]
        tenant = await store.get_tenant(uow.session, only.tenant_id)
        return Standing(only.tenant_id, tenant.status, tuple(only.roles)) if tenant else None
