"""The terms in force for a tenant, as billing's catalog and subscriptions say: the plan,
its quotas, and the billing period containing a moment. Usage asks on every quota read,
ingest and metering flush, so the answer is remembered per tenant; the tenant feed (which
every subscription change sends, subscriptions._plan_in_force) drops it on every replica,
and `ttl` bounds an entry should a feed row be missed. A read that raced with a change is
used once and not remembered.

A tenant billing never touched is on the plan the tenants capability records (the free plan,
unless an operator set another) over calendar months, as the account billing would make for
it says.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from nexus_server.auth.revocations import Revocations
from nexus_server.billing import rules, store
from nexus_server.billing.catalog import Catalog, PlanQuota
from nexus_server.common.memo import Memo
from nexus_server.db.uow import UnitOfWork
from nexus_server.ratelimit.policies import TENANT_FEED

# (uow, tenant_id) -> the plan id the tenants capability records, "" if no such tenant.
PlanOf = Callable[[UnitOfWork, str], Awaitable[str]]


@dataclass(frozen=True)
class PlanTerms:
    plan_id: str
    period_start: datetime
    period_end: datetime
    currency: str
    quotas: tuple[PlanQuota, ...]


@dataclass(frozen=True)
class _Basis:
    plan_id: str
    anchor: datetime
    interval: str


class CatalogTerms:
    def __init__(
        self,
        catalog: Catalog,
        revocations: Revocations,
        plan_of: PlanOf,
        *,
        ttl: float = 30.0,
        capacity: int = 50_000,
    ):
        self.catalog = catalog
        self.plan_of = plan_of
        self.ttl = ttl
        self._memo: Memo[str, tuple[float, _Basis]] = Memo(capacity)
        self._epoch = 0
        revocations.on_revoke(self._invalidate)

    def _invalidate(self, kind: str, subject: str) -> None:
        if kind == TENANT_FEED:
            self._epoch += 1
            self._memo.pop(subject, None)

    async def terms(self, uow: UnitOfWork, tenant_id: str, at: datetime) -> PlanTerms:
        basis = await self._basis(uow, tenant_id)
        start, end = rules.period_at(basis.anchor, basis.interval, at)
        plan = self.catalog.plan(basis.plan_id) or self.catalog.free
        return PlanTerms(plan.id, start, end, self.catalog.currency, plan.quotas)

    async def _basis(self, uow: UnitOfWork, tenant_id: str) -> _Basis:
        cached = self._memo.get(tenant_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        started, epoch = time.monotonic(), self._epoch
        row = await store.current_of(uow.session, tenant_id)
        if row is None:
            plan = await self.plan_of(uow, tenant_id) or self.catalog.free.id
            basis = _Basis(plan, rules.month_anchor(uow.clock.now()), "month")
        else:
            in_force = row.plan_id if row.status in rules.IN_FORCE else self.catalog.free.id
            anchor = row.anchor if in_force == row.plan_id else rules.month_anchor(row.anchor)
            basis = _Basis(in_force, anchor, row.interval if in_force == row.plan_id else "month")
        if epoch == self._epoch:
            self._memo.put(tenant_id, (started, basis))
        return basis
