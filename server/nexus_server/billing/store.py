"""Billing's data functions: each takes the unit of work's session and does one thing to the
tables of tables.py. No rule lives here; workflows decide, these read and write."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from nexus_server.billing.tables import (
    billing_accounts,
    billing_invoices,
    billing_overage_charges,
    billing_periods,
    billing_provider_events,
    billing_requests,
    billing_subscriptions,
    billing_tenant_add_ons,
)
from nexus_server.db.dialect import insert_for


@dataclass(frozen=True)
class AccountRow:
    tenant_id: str
    subscription_id: str
    customer_id: str | None
    invoice_count: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class SubscriptionRow:
    id: str
    tenant_id: str
    plan_id: str
    status: str
    seats: int
    period_start: datetime
    period_end: datetime
    anchor: datetime
    interval: str
    cancel_at_period_end: bool
    cancel_time: datetime | None
    end_time: datetime | None
    trial_end_time: datetime | None
    grace_end_time: datetime | None
    past_due_time: datetime | None
    reminders_sent: int
    scheduled_plan_id: str | None
    scheduled_seats: int | None
    provider_subscription_id: str | None
    provider_status: str | None
    cancel_reason: str | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class InvoiceRow:
    id: str
    tenant_id: str
    subscription_id: str | None
    number: str | None
    status: str
    currency: str
    subtotal_minor: int
    total_minor: int
    amount_due_minor: int
    amount_paid_minor: int
    amount_remaining_minor: int
    lines: list[dict[str, Any]]
    period_start: datetime
    period_end: datetime
    due_time: datetime | None
    paid_time: datetime | None
    finalize_time: datetime | None
    attempt_count: int
    next_attempt_time: datetime | None
    hosted_url: str | None
    pdf_url: str | None
    provider_invoice_id: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class PeriodRow:
    subscription_id: str
    period_start: datetime
    period_end: datetime
    tenant_id: str
    plan_id: str
    closed: bool


@dataclass(frozen=True)
class OverageRow:
    tenant_id: str
    period_start: datetime
    metric: str
    subscription_id: str
    plan_id: str
    period_end: datetime
    included: int
    used: int
    unit_price: str
    amount_minor: int
    provider_item_id: str | None
    invoice_id: str | None
    create_time: datetime


@dataclass(frozen=True)
class AddOnRow:
    tenant_id: str
    add_on_id: str
    enabled: bool
    price_minor: int | None
    update_time: datetime


async def _inserted(session: AsyncSession, statement: Any) -> bool:
    """Whether an INSERT … ON CONFLICT DO NOTHING wrote its row. By RETURNING, not rowcount:
    psycopg's async cursor reports -1 for INSERTs through SQLAlchemy."""
    return (await session.execute(statement)).first() is not None


def row_of(cls: Any, r: Any) -> Any:
    """A result row as the frozen dataclass `cls` (its fields by name)."""
    return cls(**{f.name: getattr(r, f.name) for f in fields(cls)})


# --- accounts and subscriptions ---------------------------------------------------------------


async def get_account(session: AsyncSession, tenant_id: str, *, lock: bool = False) -> AccountRow | None:
    query = select(billing_accounts).where(billing_accounts.c.tenant_id == tenant_id)
    if lock:
        query = query.with_for_update()
    r = (await session.execute(query)).first()
    return row_of(AccountRow, r) if r is not None else None


async def insert_account(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """False if the tenant already has an account (a concurrent first touch made it)."""
    insert = insert_for(session)
    statement = insert(billing_accounts).values(**values).on_conflict_do_nothing()
    return await _inserted(session, statement.returning(billing_accounts.c.tenant_id))


async def update_account(session: AsyncSession, tenant_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(
        update(billing_accounts).where(billing_accounts.c.tenant_id == tenant_id).values(**values)
    )


async def account_by_customer(session: AsyncSession, customer_id: str) -> AccountRow | None:
    r = (
        await session.execute(select(billing_accounts).where(billing_accounts.c.customer_id == customer_id))
    ).first()
    return row_of(AccountRow, r) if r is not None else None


async def insert_subscription(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(billing_subscriptions.insert().values(**values))


async def get_subscription(session: AsyncSession, subscription_id: str) -> SubscriptionRow | None:
    r = (
        await session.execute(
            select(billing_subscriptions).where(billing_subscriptions.c.id == subscription_id)
        )
    ).first()
    return row_of(SubscriptionRow, r) if r is not None else None


async def subscription_by_provider_id(session: AsyncSession, provider_id: str) -> SubscriptionRow | None:
    r = (
        await session.execute(
            select(billing_subscriptions).where(
                billing_subscriptions.c.provider_subscription_id == provider_id
            )
        )
    ).first()
    return row_of(SubscriptionRow, r) if r is not None else None


async def update_subscription(session: AsyncSession, subscription_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(
        update(billing_subscriptions).where(billing_subscriptions.c.id == subscription_id).values(**values)
    )


async def current_subscriptions(
    session: AsyncSession, tenant_ids: Sequence[str] = (), *, after: str = "", limit: int = 500
) -> list[SubscriptionRow]:
    """Current subscriptions in tenant order, a page at a time (the cycle walks them all)."""
    query = (
        select(billing_subscriptions)
        .join(billing_accounts, billing_accounts.c.subscription_id == billing_subscriptions.c.id)
        .where(billing_accounts.c.tenant_id > after)
        .order_by(billing_accounts.c.tenant_id)
        .limit(limit)
    )
    if tenant_ids:
        query = query.where(billing_accounts.c.tenant_id.in_(list(tenant_ids)))
    return [row_of(SubscriptionRow, r) for r in (await session.execute(query)).all()]


# --- periods and overage --------------------------------------------------------------------


async def open_period(session: AsyncSession, values: Mapping[str, Any]) -> None:
    insert = insert_for(session)
    await session.execute(insert(billing_periods).values(**values, closed=False).on_conflict_do_nothing())


async def ended_open_periods(session: AsyncSession, tenant_id: str, as_of: datetime) -> list[PeriodRow]:
    query = (
        select(billing_periods)
        .where(
            billing_periods.c.tenant_id == tenant_id,
            billing_periods.c.closed.is_(False),
            billing_periods.c.period_end <= as_of,
        )
        .order_by(billing_periods.c.period_start)
    )
    return [row_of(PeriodRow, r) for r in (await session.execute(query)).all()]


async def latest_ended_period(session: AsyncSession, tenant_id: str, as_of: datetime) -> PeriodRow | None:
    query = (
        select(billing_periods)
        .where(billing_periods.c.tenant_id == tenant_id, billing_periods.c.period_end <= as_of)
        .order_by(billing_periods.c.period_end.desc())
        .limit(1)
    )
    r = (await session.execute(query)).first()
    return row_of(PeriodRow, r) if r is not None else None


async def overage_count(session: AsyncSession, tenant_id: str, period_start: datetime) -> int:
    t = billing_overage_charges.c
    query = select(func.count()).where(t.tenant_id == tenant_id, t.period_start == period_start)
    return int((await session.execute(query)).scalar_one())


async def close_period(session: AsyncSession, subscription_id: str, period_start: datetime) -> None:
    await session.execute(
        update(billing_periods)
        .where(
            billing_periods.c.subscription_id == subscription_id,
            billing_periods.c.period_start == period_start,
        )
        .values(closed=True)
    )


async def insert_overage(session: AsyncSession, values: Mapping[str, Any]) -> bool:
    """False if this tenant, period and metric was billed already."""
    insert = insert_for(session)
    statement = insert(billing_overage_charges).values(**values).on_conflict_do_nothing()
    return await _inserted(session, statement.returning(billing_overage_charges.c.metric))


async def set_overage_item(
    session: AsyncSession, tenant_id: str, period_start: datetime, metric: str, values: Mapping[str, Any]
) -> None:
    await session.execute(
        update(billing_overage_charges)
        .where(
            billing_overage_charges.c.tenant_id == tenant_id,
            billing_overage_charges.c.period_start == period_start,
            billing_overage_charges.c.metric == metric,
        )
        .values(**values)
    )


async def uninvoiced_overage(session: AsyncSession, tenant_id: str) -> list[OverageRow]:
    query = (
        select(billing_overage_charges)
        .where(
            billing_overage_charges.c.tenant_id == tenant_id,
            billing_overage_charges.c.invoice_id.is_(None),
            billing_overage_charges.c.provider_item_id.is_(None),
        )
        .order_by(billing_overage_charges.c.period_start, billing_overage_charges.c.metric)
    )
    return [row_of(OverageRow, r) for r in (await session.execute(query)).all()]


async def overage_of(session: AsyncSession, tenant_id: str) -> list[OverageRow]:
    query = select(billing_overage_charges).where(billing_overage_charges.c.tenant_id == tenant_id)
    return [row_of(OverageRow, r) for r in (await session.execute(query)).all()]


# --- invoices ---------------------------------------------------------------------------------


async def upsert_invoice(session: AsyncSession, values: Mapping[str, Any]) -> None:
    """By the provider's invoice id: a mirror overwrites what the provider says now."""
    insert = insert_for(session)
    keep = {"id", "tenant_id", "create_time", "provider_invoice_id"}
    statement = insert(billing_invoices).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[billing_invoices.c.provider_invoice_id],
        set_={k: statement.excluded[k] for k in values if k not in keep},
    )
    await session.execute(statement)


async def invoice_by_provider_id(session: AsyncSession, provider_id: str) -> InvoiceRow | None:
    r = (
        await session.execute(
            select(billing_invoices).where(billing_invoices.c.provider_invoice_id == provider_id)
        )
    ).first()
    return row_of(InvoiceRow, r) if r is not None else None


async def list_invoices(
    session: AsyncSession,
    tenant_id: str,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[InvoiceRow]:
    t = billing_invoices.c
    query = select(billing_invoices).where(t.tenant_id == tenant_id)
    query = query.where(t.status == status) if status else query.where(t.status != "draft")
    if after is not None:
        query = query.where(or_(t.create_time < after[0], and_(t.create_time == after[0], t.id < after[1])))
    query = query.order_by(t.create_time.desc(), t.id.desc()).limit(limit)
    return [row_of(InvoiceRow, r) for r in (await session.execute(query)).all()]


async def unpaid_invoices(session: AsyncSession, tenant_id: str) -> int:
    t = billing_invoices.c
    query = select(func.count()).where(t.tenant_id == tenant_id, t.status.in_(("open", "uncollectible")))
    return int((await session.execute(query)).scalar_one())


async def finalized_between(session: AsyncSession, start: datetime, end: datetime) -> list[InvoiceRow]:
    t = billing_invoices.c
    query = select(billing_invoices).where(t.finalize_time >= start, t.finalize_time < end)
    return [row_of(InvoiceRow, r) for r in (await session.execute(query)).all()]


# --- provider events and idempotent requests --------------------------------------------------


async def claim_event(session: AsyncSession, event_id: str, event_type: str, now: datetime) -> bool:
    """Record the event as being applied; False if it was applied before. The row commits
    with the event's effects, so a crash mid-apply leaves it unclaimed for the retry."""
    insert = insert_for(session)
    statement = (
        insert(billing_provider_events)
        .values(event_id=event_id, type=event_type, outcome="applied", apply_time=now)
        .on_conflict_do_nothing()
    )
    return await _inserted(session, statement.returning(billing_provider_events.c.event_id))


async def set_event_outcome(session: AsyncSession, event_id: str, outcome: str) -> None:
    await session.execute(
        update(billing_provider_events)
        .where(billing_provider_events.c.event_id == event_id)
        .values(outcome=outcome)
    )


async def event_outcome(session: AsyncSession, event_id: str) -> str | None:
    query = select(billing_provider_events.c.outcome).where(billing_provider_events.c.event_id == event_id)
    return (await session.execute(query)).scalar_one_or_none()


async def get_request(
    session: AsyncSession, tenant_id: str, rpc: str, key: str, since: datetime
) -> tuple[str, dict[str, Any]] | None:
    t = billing_requests.c
    query = select(t.fingerprint, t.response).where(
        t.tenant_id == tenant_id, t.rpc == rpc, t.idempotency_key == key, t.create_time >= since
    )
    r = (await session.execute(query)).first()
    return (r.fingerprint, r.response) if r is not None else None


async def put_request(
    session: AsyncSession, tenant_id: str, rpc: str, key: str, fingerprint: str, response: Any, now: datetime
) -> None:
    """Remember a response; an expired entry under the same key is replaced."""
    insert = insert_for(session)
    statement = insert(billing_requests).values(
        tenant_id=tenant_id,
        rpc=rpc,
        idempotency_key=key,
        fingerprint=fingerprint,
        response=response,
        create_time=now,
    )
    statement = statement.on_conflict_do_update(
        index_elements=[
            billing_requests.c.tenant_id,
            billing_requests.c.rpc,
            billing_requests.c.idempotency_key,
        ],
        set_={"fingerprint": fingerprint, "response": response, "create_time": now},
    )
    await session.execute(statement)


# --- add-ons ----------------------------------------------------------------------------------


async def add_ons_of(session: AsyncSession, tenant_id: str) -> list[AddOnRow]:
    query = (
        select(billing_tenant_add_ons)
        .where(billing_tenant_add_ons.c.tenant_id == tenant_id)
        .order_by(billing_tenant_add_ons.c.add_on_id)
    )
    return [row_of(AddOnRow, r) for r in (await session.execute(query)).all()]


async def enabled_add_ons(session: AsyncSession) -> list[AddOnRow]:
    query = select(billing_tenant_add_ons).where(billing_tenant_add_ons.c.enabled.is_(True))
    return [row_of(AddOnRow, r) for r in (await session.execute(query)).all()]


async def put_add_on(session: AsyncSession, values: Mapping[str, Any]) -> None:
    insert = insert_for(session)
    statement = insert(billing_tenant_add_ons).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[billing_tenant_add_ons.c.tenant_id, billing_tenant_add_ons.c.add_on_id],
        set_={k: statement.excluded[k] for k in values if k not in ("tenant_id", "add_on_id")},
    )
    await session.execute(statement)


# --- revenue --------------------------------------------------------------------------------


async def all_current_subscriptions(session: AsyncSession) -> list[SubscriptionRow]:
    query = select(billing_subscriptions).join(
        billing_accounts, billing_accounts.c.subscription_id == billing_subscriptions.c.id
    )
    return [row_of(SubscriptionRow, r) for r in (await session.execute(query)).all()]


async def current_of(session: AsyncSession, tenant_id: str) -> SubscriptionRow | None:
    """The tenant's current subscription in one read (usage's terms ask on every quota read)."""
    query = (
        select(billing_subscriptions)
        .join(billing_accounts, billing_accounts.c.subscription_id == billing_subscriptions.c.id)
        .where(billing_accounts.c.tenant_id == tenant_id)
    )
    r = (await session.execute(query)).first()
    return row_of(SubscriptionRow, r) if r is not None else None


# --- the cycle's lock (PostgreSQL) --------------------------------------------------------------


async def try_advisory_lock(connection: AsyncConnection, key: int) -> bool:
    """A session-level advisory lock, held by `connection` until released or closed (so a
    replica that dies mid-run frees it with its connection)."""
    got = (await connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
    await connection.commit()
    return bool(got)


async def advisory_unlock(connection: AsyncConnection, key: int) -> None:
    await connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    await connection.commit()
