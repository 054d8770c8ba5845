"""RunBillingCycle: for every period that has ended, bill its overage once; renew what no
provider renews; run dunning.

Each tenant is handled in its own transaction under its account lock, so one failing tenant
(Stripe down for its invoice item, say) is reported and retried by the next run while the
others go on. A period's overage is billed once because its charge row's primary key is
(tenant, period start, metric), inserted in the transaction that creates the Stripe invoice
item with the idempotency key `overage:<tenant>:<period start>:<metric>`: a run that dies
between the two leaves neither, or Stripe hands back the same item. Runs are serialised
across replicas (`only_one_run`); even without that, nothing would be billed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from nexus_server.billing import dunning, invoices, rules, store, subscriptions
from nexus_server.billing.ports import Deps
from nexus_server.billing.provider import InvoiceItemRequest, ProviderError
from nexus_server.common.errors import Aborted
from nexus_server.db.uow import Database, UnitOfWork

ADVISORY_KEY = 0x6E657875_62696C6C  # "nexubill": the cycle's PostgreSQL advisory lock
PAGE = 200
REMINDER, SUSPENDED, REACTIVATED, ENDED = "reminder_sent", "tenant_suspended", "tenant_reactivated", "ended"


@dataclass(frozen=True)
class Charge:
    tenant_id: str
    subscription_id: str
    plan_id: str
    metric: str
    period_start: datetime
    period_end: datetime
    included: int
    used: int
    unit_price: Decimal
    amount_minor: int
    item_id: str = ""

    @property
    def overage(self) -> int:
        return self.used - self.included


@dataclass(frozen=True)
class Action:
    tenant_id: str
    subscription_id: str
    kind: str
    detail: str


@dataclass
class Report:
    as_of: datetime
    dry_run: bool
    examined: int = 0
    charges: list[Charge] = field(default_factory=list)
    already_billed: int = 0
    renewed: int = 0
    actions: list[Action] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # tenant, subscription, message


_local_runs: dict[int, asyncio.Lock] = {}


@contextlib.asynccontextmanager
async def only_one_run(db: Database) -> AsyncIterator[None]:
    """ABORTED (BILLING_CYCLE_IN_PROGRESS) if a run is under way: on PostgreSQL anywhere (a
    session advisory lock on a connection held for the run), on SQLite in this process (the
    embedded store serves one process)."""
    busy = Aborted("another billing cycle run is in progress", reason="BILLING_CYCLE_IN_PROGRESS")
    if db.engine.dialect.name != "postgresql":
        lock = _local_runs.setdefault(id(db), asyncio.Lock())
        if lock.locked():
            raise busy
        async with lock:
            yield
        return
    async with db.engine.connect() as connection:
        if not await store.try_advisory_lock(connection, ADVISORY_KEY):
            raise busy
        try:
            yield
        finally:
            await store.advisory_unlock(connection, ADVISORY_KEY)


async def run(
    db: Database,
    deps: Deps,
    as_of: datetime,
    *,
    dry_run: bool = False,
    tenant_ids: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
) -> Report:
    report = Report(as_of, dry_run)
    async with only_one_run(db):
        after = ""
        while True:
            async with db.unit_of_work(readonly=True) as uow:
                page = await store.current_subscriptions(uow.session, tenant_ids, after=after, limit=PAGE)
            if not page:
                return report
            for row in page:
                try:
                    async with db.unit_of_work() as uow:
                        await _tenant(uow, deps, row.tenant_id, report)
                        if dry_run:
                            await uow.session.rollback()
                except ProviderError as error:
                    report.failures.append((row.tenant_id, row.id, f"payment provider: {error}"[:1000]))
                except Exception as error:
                    report.failures.append((row.tenant_id, row.id, f"{type(error).__name__}: {error}"[:1000]))
                report.examined += 1
                if progress is not None:
                    progress(1)
            after = page[-1].tenant_id


async def _tenant(uow: UnitOfWork, deps: Deps, tenant_id: str, report: Report) -> None:
    await subscriptions.account(uow, deps, tenant_id, lock=True)
    billed_here = len(report.charges)
    for _ in range(120):  # catching up at most ten years of months in one run
        await _bill_ended_periods(uow, deps, tenant_id, report)
        row = await subscriptions.current(uow, deps, tenant_id)
        if row.provider_subscription_id or row.period_end > report.as_of or row.status == rules.CANCELED:
            break
        await _renew(uow, deps, row, report)
    await _count_billed_before(uow, tenant_id, report, billed_here)
    row = await subscriptions.current(uow, deps, tenant_id)
    dry = report.dry_run
    if await dunning.remind_if_due(uow, deps, row, report.as_of, dry_run=dry):
        report.actions.append(
            Action(tenant_id, row.id, REMINDER, f"payment overdue since {row.past_due_time:%Y-%m-%d}")
        )
    if await dunning.suspend_if_expired(uow, deps, row, report.as_of, dry_run=dry):
        report.actions.append(
            Action(tenant_id, row.id, SUSPENDED, f"grace period ended {row.grace_end_time:%Y-%m-%d}")
        )
    elif await dunning.reactivate_if_paid(uow, deps, row, report.as_of, dry_run=dry):
        report.actions.append(Action(tenant_id, row.id, REACTIVATED, "no invoice left unpaid"))


async def _count_billed_before(uow: UnitOfWork, tenant_id: str, report: Report, charges_before: int) -> None:
    """When this run billed the tenant nothing, count what an earlier run billed for its
    latest ended period: a repeated run then shows it found those charges, not that none
    were due."""
    if any(c.tenant_id == tenant_id for c in report.charges[charges_before:]):
        return
    latest = await store.latest_ended_period(uow.session, tenant_id, report.as_of)
    if latest is not None and latest.closed:
        report.already_billed += await store.overage_count(uow.session, tenant_id, latest.period_start)


async def _bill_ended_periods(uow: UnitOfWork, deps: Deps, tenant_id: str, report: Report) -> None:
    for period in await store.ended_open_periods(uow.session, tenant_id, report.as_of):
        plan = deps.catalog.plan(period.plan_id)
        subscription = await store.get_subscription(uow.session, period.subscription_id)
        for quota in plan.quotas if plan is not None else ():
            if quota.unlimited or quota.overage_unit_price is None:
                continue
            used = await deps.used_between(
                uow, tenant_id, quota.metric, period.period_start, period.period_end
            )
            if used <= quota.included:
                continue
            charge = Charge(
                tenant_id,
                period.subscription_id,
                period.plan_id,
                quota.metric,
                period.period_start,
                period.period_end,
                quota.included,
                used,
                quota.overage_unit_price,
                rules.overage_minor(used - quota.included, quota.overage_unit_price),
            )
            billed = await _bill(uow, deps, charge, subscription, report.dry_run)
            if billed is None:
                report.already_billed += 1
            else:
                report.charges.append(billed)
        # Closed on a dry run too: its transaction is rolled back, and a period must not be
        # looked at twice within one run.
        await store.close_period(uow.session, period.subscription_id, period.period_start)


async def _bill(
    uow: UnitOfWork, deps: Deps, charge: Charge, subscription: store.SubscriptionRow | None, dry_run: bool
) -> Charge | None:
    """The charge as billed, or None if an earlier run billed it."""
    values = {
        "tenant_id": charge.tenant_id,
        "period_start": charge.period_start,
        "metric": charge.metric,
        "subscription_id": charge.subscription_id,
        "plan_id": charge.plan_id,
        "period_end": charge.period_end,
        "included": charge.included,
        "used": charge.used,
        "unit_price": str(charge.unit_price),
        "amount_minor": charge.amount_minor,
        "provider_item_id": None,
        "invoice_id": None,
        "create_time": uow.clock.now(),
    }
    if not await store.insert_overage(uow.session, values):
        return None
    if dry_run:
        return charge
    acct = await store.get_account(uow.session, charge.tenant_id)
    provider_sub = subscription.provider_subscription_id if subscription is not None else None
    if deps.provider is None or not provider_sub or acct is None or not acct.customer_id:
        return charge  # the next local invoice carries it
    item_id = await deps.provider.add_invoice_item(
        InvoiceItemRequest(
            customer_id=acct.customer_id,
            subscription_id=provider_sub,
            amount_minor=charge.amount_minor,
            currency=deps.catalog.currency,
            description=f"{charge.metric}: {charge.overage:,} over the {charge.included:,} included",
            period_start=charge.period_start,
            period_end=charge.period_end,
            idempotency_key=f"overage:{charge.tenant_id}:{charge.period_start:%Y%m%d}:{charge.metric}",
            metadata={"nexus_kind": "overage", "metric": charge.metric, "tenant_id": charge.tenant_id},
        )
    )
    await store.set_overage_item(
        uow.session, charge.tenant_id, charge.period_start, charge.metric, {"provider_item_id": item_id}
    )
    return Charge(**{**charge.__dict__, "item_id": item_id})


async def _renew(uow: UnitOfWork, deps: Deps, row: store.SubscriptionRow, report: Report) -> None:
    """Move a subscription no provider bills into its next period (or end it)."""
    state = subscriptions.state_of(row)
    if row.cancel_at_period_end:
        state = subscriptions.with_(state, status=rules.CANCELED, end_time=row.period_end)
        await subscriptions.apply(uow, deps, row, state)
        report.actions.append(
            Action(row.tenant_id, row.id, ENDED, f"canceled at period end {row.period_end:%Y-%m-%d}")
        )
        return
    plan = deps.catalog.plan(row.scheduled_plan_id or row.plan_id) or deps.catalog.free
    start, end = rules.period_at(row.anchor, plan.interval, row.period_end)
    status = row.status
    if status == rules.TRIALING and row.trial_end_time is not None and row.trial_end_time <= start:
        status = rules.ACTIVE
    state = subscriptions.with_(
        state,
        plan_id=plan.id,
        seats=row.scheduled_seats or row.seats,
        status=status,
        period_start=start,
        period_end=end,
        interval=plan.interval,
        scheduled_plan_id=None,
        scheduled_seats=None,
    )
    fresh, _ = await subscriptions.apply(uow, deps, row, state)
    report.renewed += 1
    if plan.is_free or report.dry_run:
        return
    lines = await invoices.period_lines(uow, deps, plan, fresh.seats, fresh.tenant_id, start, end)
    if fresh.status == rules.TRIALING:
        lines = [
            {**item, "amount_minor": 0, "description": item["description"] + " (trial)"} for item in lines
        ]
    overage = await store.uninvoiced_overage(uow.session, fresh.tenant_id)
    for charge in overage:
        lines.append(
            invoices.line(
                invoices.OVERAGE,
                f"{charge.metric}: {charge.used - charge.included:,} over the {charge.included:,} included "
                f"({charge.period_start:%d %b} – {charge.period_end:%d %b %Y})",
                charge.used - charge.included,
                Decimal(charge.unit_price),
                charge.period_start,
                charge.period_end,
                plan_id=charge.plan_id,
                metric=charge.metric,
                amount_minor=charge.amount_minor,
            )
        )
    issued = await invoices.issue_local(uow, deps, fresh, lines, start, end, key=f"{start:%Y%m%d}")
    if issued is not None:
        for charge in overage:
            await store.set_overage_item(
                uow.session, charge.tenant_id, charge.period_start, charge.metric, {"invoice_id": issued.id}
            )
