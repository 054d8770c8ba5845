"""What the tenants capability offers the others, besides the authentication layer's
TenantDirectory (auth/ports.py): each a plain async function on the caller's unit of work,
handed over by app/wiring.py."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from nexus_server.auth.revocations import Revocations
from nexus_server.common.memo import Memo
from nexus_server.db.uow import UnitOfWork
from nexus_server.tenants import lifecycle, store
from nexus_server.tenants.cache import TENANT
from nexus_server.tenants.invalidation import invalidate_tenant

if TYPE_CHECKING:
    from nexus_server.identity.ports import People

PAYMENT_OVERDUE = "payment_overdue"  # the suspension cause billing sets and lifts


async def plan_of(uow: UnitOfWork, tenant_id: str) -> str:
    """The tenant's billing plan id, "" if there is no such tenant (rate limits per plan)."""
    row = await store.get_tenant(uow.session, tenant_id)
    return row.plan_id if row is not None else ""


class CachedPlans:
    """`plan_of`, remembered per tenant: usage asks for the plan on every quota read and
    every ingest, and a plan changes a few times in a tenant's life. A tenant change in the
    revocation feed (`tenant`, which billing sends when it moves a tenant to another plan)
    drops the entry on every replica within a poll interval; `ttl` bounds it should a feed
    row be missed. A read that raced with a change is used once and not remembered."""

    def __init__(self, revocations: Revocations, *, ttl: float = 30.0, capacity: int = 50_000):
        self.ttl = ttl
        self._plans: Memo[str, tuple[float, str]] = Memo(capacity)
        self._epoch = 0
        revocations.on_revoke(self._invalidate)

    def _invalidate(self, kind: str, subject: str) -> None:
        if kind == TENANT:
            self._epoch += 1
            self._plans.pop(subject, None)

    async def plan_of(self, uow: UnitOfWork, tenant_id: str) -> str:
        cached = self._plans.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        started, epoch = time.monotonic(), self._epoch
        plan = await plan_of(uow, tenant_id)
        if epoch == self._epoch and plan:
            self._plans.put(tenant_id, (started, plan))
        return plan


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


@dataclass(frozen=True)
class BillingFacts:
    tenant_id: str
    status: str
    suspension_cause: str | None
    plan_id: str
    create_time: datetime


ADMIN_ROLES = ("owner", "admin")


class AdminEmails:
    """Whom to tell when something needs a tenant's attention (a payment failed, a webhook
    endpoint was disabled): the addresses of its active owners and admins."""

    def __init__(self, people: People):
        self.people = people

    async def __call__(self, uow: UnitOfWork, tenant_id: str) -> list[str]:
        admins = [
            m.user_id
            for m in await store.all_memberships(uow.session, tenant_id)
            if set(m.roles) & set(ADMIN_ROLES)
        ]
        people = await self.people.by_ids(uow, sorted(admins))
        return [people[u].email for u in sorted(admins) if u in people and people[u].status == "active"]


class ForBilling:
    """What billing drives in tenants: the plan in force, payment suspensions, seat counts
    and whom to remind. Each write sends the tenant feed row (`invalidate_tenant`) in the
    caller's transaction, so every replica's caches follow within a poll interval."""

    def __init__(self, revocations: Revocations, people: People):
        self.revocations = revocations
        self.people = people

    async def facts(self, uow: UnitOfWork, tenant_id: str) -> BillingFacts | None:
        row = await store.get_tenant(uow.session, tenant_id)
        if row is None:
            return None
        return BillingFacts(row.id, row.status, row.suspension_cause, row.plan_id, row.create_time)

    async def set_plan(self, uow: UnitOfWork, tenant_id: str, plan_id: str) -> None:
        await store.update_tenant(
            uow.session, tenant_id, {"plan_id": plan_id, "update_time": uow.clock.now()}
        )
        await invalidate_tenant(uow, self.revocations, tenant_id)

    async def changed(self, uow: UnitOfWork, tenant_id: str) -> None:
        await invalidate_tenant(uow, self.revocations, tenant_id)

    async def suspend_for_payment(self, uow: UnitOfWork, tenant_id: str, reason: str) -> None:
        row = await store.get_tenant(uow.session, tenant_id)
        if row is None or row.status != "active":
            return  # deleted, or an operator's suspension already holds
        await lifecycle.suspend_tenant(uow, self.revocations, tenant_id, reason, cause=PAYMENT_OVERDUE)

    async def reactivate_after_payment(self, uow: UnitOfWork, tenant_id: str) -> bool:
        row = await store.get_tenant(uow.session, tenant_id)
        if row is None or row.status != "suspended" or row.suspension_cause != PAYMENT_OVERDUE:
            return False
        await lifecycle.reactivate_tenant(uow, self.revocations, tenant_id)
        return True

    async def member_count(self, uow: UnitOfWork, tenant_id: str) -> int:
        return len(await store.all_memberships(uow.session, tenant_id))

    async def admin_emails(self, uow: UnitOfWork, tenant_id: str) -> list[str]:
        return await AdminEmails(self.people)(uow, tenant_id)

    async def live_tenant_ids(self, uow: UnitOfWork) -> list[str]:
        return [row[0] for row in await store.plans_of_live_tenants(uow.session)]
