"""What billing needs from the other capabilities, as typed ports that app/wiring.py hands
over (billing imports none of them), and the bundle of everything its workflows use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from nexus_server.billing.catalog import Catalog
from nexus_server.billing.provider import CreditsCheckout, PaymentProvider
from nexus_server.db.uow import UnitOfWork


class TenantFacts(Protocol):
    @property
    def tenant_id(self) -> str: ...
    @property
    def status(self) -> str: ...  # active | suspended | deleted
    @property
    def suspension_cause(self) -> str | None: ...
    @property
    def plan_id(self) -> str: ...
    @property
    def create_time(self) -> datetime: ...


class Tenants(Protocol):
    """The tenants capability, as billing drives it. Every write here also tells every
    replica's caches (the tenant feed), in the caller's transaction."""

    async def facts(self, uow: UnitOfWork, tenant_id: str) -> TenantFacts | None: ...

    async def set_plan(self, uow: UnitOfWork, tenant_id: str, plan_id: str) -> None:
        """The plan whose limits and quotas apply to the tenant from now on."""
        ...

    async def changed(self, uow: UnitOfWork, tenant_id: str) -> None:
        """The tenant's billing terms changed (a new period, say): caches drop it."""
        ...

    async def suspend_for_payment(self, uow: UnitOfWork, tenant_id: str, reason: str) -> None: ...

    async def reactivate_after_payment(self, uow: UnitOfWork, tenant_id: str) -> bool:
        """Lift a suspension that billing made; False (and nothing done) if an operator
        suspended the tenant, or it is not suspended."""
        ...

    async def member_count(self, uow: UnitOfWork, tenant_id: str) -> int: ...

    async def admin_emails(self, uow: UnitOfWork, tenant_id: str) -> list[str]:
        """The addresses of the tenant's owners and admins, for dunning reminders."""
        ...

    async def live_tenant_ids(self, uow: UnitOfWork) -> list[str]: ...


# (uow, recipient, subject, body): identity's mail outbox, in the caller's transaction.
Mail = Callable[[UnitOfWork, str, str, str], Awaitable[None]]
# (uow, tenant_id, metric, start, end): usage's daily rollups summed over [start, end).
UsedBetween = Callable[[UnitOfWork, str, str, datetime, datetime], Awaitable[int]]


@dataclass(frozen=True)
class Deps:
    catalog: Catalog
    provider: PaymentProvider | None  # None: the local payment provider
    tenants: Tenants
    mail: Mail | None
    used_between: UsedBetween
    grace: timedelta
    public_url: str  # default success, cancel and return URLs lead back here
    webhook_secrets: tuple[str, ...] = ()
    # Credit purchases: Stripe (the same provider), Revolut Merchant, or None (local).
    credits: CreditsCheckout | None = None
    revolut_webhook_secrets: tuple[str, ...] = ()

    @property
    def local(self) -> bool:
        return self.provider is None
