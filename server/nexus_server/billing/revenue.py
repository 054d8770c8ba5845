"""GetRevenueMetrics: recurring revenue from current subscriptions, and the overage billed
in a window, computed on request (platform admins ask rarely; there is nothing to keep in
step). Tenants that billing never touched are free-plan subscribers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from nexus_server.billing import ledger_store, rules, store
from nexus_server.billing.ports import Deps
from nexus_server.db.uow import UnitOfWork

COUNTED = (rules.TRIALING, rules.ACTIVE, rules.PAST_DUE)
RECURRING = (rules.ACTIVE, rules.PAST_DUE)


@dataclass(frozen=True)
class PlanRevenue:
    plan_id: str
    subscribers: int
    past_due: int
    mrr_minor: int


@dataclass(frozen=True)
class Revenue:
    computed: datetime
    mrr_minor: int
    paying: int
    plans: list[PlanRevenue]
    start: datetime
    end: datetime
    overage_minor: int
    add_on_mrr_minor: int = 0
    credit_minor: int = 0  # credit packages paid in the window


async def metrics(uow: UnitOfWork, deps: Deps, start: datetime, end: datetime) -> Revenue:
    subscriptions = await store.all_current_subscriptions(uow.session)
    known = {s.tenant_id for s in subscriptions}
    untouched = [t for t in await deps.tenants.live_tenant_ids(uow) if t not in known]
    counts: dict[str, list[int]] = {p.id: [0, 0, 0] for p in deps.catalog.plans}  # subscribers, past due, mrr
    paying = add_on_mrr = 0
    add_on_rows: dict[str, list[store.AddOnRow]] = {}
    for row in await store.enabled_add_ons(uow.session):
        add_on_rows.setdefault(row.tenant_id, []).append(row)
    for s in subscriptions:
        plan = deps.catalog.plan(s.plan_id)
        if plan is None or s.status not in COUNTED:
            continue
        entry = counts[plan.id]
        entry[0] += 1
        entry[1] += s.status == rules.PAST_DUE
        if s.status in RECURRING and plan.price_minor > 0:
            extras = sum(
                (r.price_minor if r.price_minor is not None else offered.price_minor)
                for r in add_on_rows.get(s.tenant_id, [])
                if r.enabled and (offered := deps.catalog.add_on(r.add_on_id)) is not None
            )
            entry[2] += plan.monthly_minor(s.seats) + extras
            add_on_mrr += extras
            paying += 1
    counts[deps.catalog.free.id][0] += len(untouched)
    overage = sum(
        int(line["amount_minor"])
        for invoice in await store.finalized_between(uow.session, start, end)
        if invoice.status != "void"
        for line in invoice.lines
        if line.get("kind") == "overage"
    )
    plans = [PlanRevenue(p.id, *counts[p.id]) for p in deps.catalog.plans]
    mrr = sum(p.mrr_minor for p in plans)
    credits = await ledger_store.purchases_paid_between(uow.session, start, end)
    return Revenue(uow.clock.now(), mrr, paying, plans, start, end, overage, add_on_mrr, credits)
