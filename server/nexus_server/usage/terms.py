"""What a tenant's plan says about usage: the billing period and each metric's quota.

Usage asks a `TermsSource` for the terms in force at a moment. Until the billing capability
publishes its plan catalog and subscription periods, `BuiltInTerms` answers from the
tenant's plan id (the tenants capability's port) with the built-in quotas below and the
calendar month in UTC as the period. Billing replaces it through app/wiring.py; nothing in
usage changes then.

Periods begin and end at midnight UTC, so a period is a whole number of the daily rollups
and history, quotas and invoices agree on which day counts where.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from typing import Protocol

from nexus_server.db.uow import UnitOfWork


class Enforcement(Enum):
    UNLIMITED = 1
    HARD_LIMIT = 2
    BILLED_OVERAGE = 3


@dataclass(frozen=True)
class Quota:
    metric: str
    included: int = 0
    enforcement: Enforcement = Enforcement.UNLIMITED
    overage_unit_price: Decimal = Decimal(0)  # per unit, in the plan's currency

    def overage(self, used: int) -> int:
        return 0 if self.enforcement is Enforcement.UNLIMITED else max(used - self.included, 0)

    def remaining(self, used: int) -> int:
        return 0 if self.enforcement is Enforcement.UNLIMITED else max(self.included - used, 0)

    def cost(self, overage: int) -> Decimal:
        """What `overage` units cost, rounded to the minor unit (cents): zero unless billed."""
        if self.enforcement is not Enforcement.BILLED_OVERAGE:
            return Decimal("0.00")
        return (self.overage_unit_price * overage).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Terms:
    plan_id: str
    period_start: datetime
    period_end: datetime
    currency: str = "USD"
    quotas: Mapping[str, Quota] = field(default_factory=dict)
    # Records timed before this belong to invoiced periods and are refused.
    closed_until: datetime | None = None

    def quota(self, metric: str) -> Quota:
        return self.quotas.get(metric) or Quota(metric)


class TermsSource(Protocol):
    async def terms(self, uow: UnitOfWork, tenant_id: str, at: datetime) -> Terms:
        """The terms of the period that contains `at`."""
        ...


def usage_quota(metric: str, included: int, unlimited: bool, overage_unit_price: Decimal | None) -> Quota:
    """A quota as a plan catalog states it: unlimited, billed past `included` when it has an
    overage price, else a hard limit."""
    if unlimited:
        return Quota(metric)
    if overage_unit_price is not None:
        return Quota(metric, included, Enforcement.BILLED_OVERAGE, overage_unit_price)
    return Quota(metric, included, Enforcement.HARD_LIMIT)


def _quotas(*quotas: Quota) -> dict[str, Quota]:
    return {q.metric: q for q in quotas}


_CALL_PRICE = Decimal("0.001")  # USD per API call over quota (API.md)

# The built-in plans' quotas per period, until billing's catalog replaces them.
BUILT_IN_QUOTAS: dict[str, dict[str, Quota]] = {
    "free": _quotas(
        Quota("api_calls", 10_000, Enforcement.HARD_LIMIT),
        Quota("ai_tokens", 100_000, Enforcement.HARD_LIMIT),
    ),
    "pro": _quotas(
        Quota("api_calls", 1_000_000, Enforcement.BILLED_OVERAGE, _CALL_PRICE),
        Quota("ai_tokens", 5_000_000, Enforcement.BILLED_OVERAGE, Decimal("0.000002")),
    ),
    "business": _quotas(
        Quota("api_calls", 10_000_000, Enforcement.BILLED_OVERAGE, _CALL_PRICE),
        Quota("ai_tokens", 50_000_000, Enforcement.BILLED_OVERAGE, Decimal("0.000002")),
    ),
    "enterprise": {},
}


def month_of(at: datetime) -> tuple[datetime, datetime]:
    start = at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


# (uow, tenant_id) -> the tenant's plan id, "" if no such tenant: the tenants capability's port.
PlanOf = Callable[[UnitOfWork, str], Awaitable[str]]


class BuiltInTerms:
    """The built-in plans' quotas over calendar months (UTC)."""

    def __init__(self, plan_of: PlanOf):
        self._plan_of = plan_of

    async def terms(self, uow: UnitOfWork, tenant_id: str, at: datetime) -> Terms:
        plan = await self._plan_of(uow, tenant_id) or "free"
        start, end = month_of(at)
        return Terms(plan, start, end, quotas=BUILT_IN_QUOTAS.get(plan, {}))
