"""The credit ledger's data functions: balances, transactions, reservations, purchases.
No rule here; ledger.py decides. Every writer locks the tenant's balance row first
(`lock_balance`), then whatever else it touches, so a tenant's ledger writes never deadlock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.billing.store import row_of
from nexus_server.billing.tables import (
    credit_balances,
    credit_purchases,
    credit_reservations,
    credit_transactions,
)
from nexus_server.db.dialect import insert_for


@dataclass(frozen=True)
class BalanceRow:
    tenant_id: str
    balance: int
    last_transaction_id: str | None
    low_balance_sent: bool
    update_time: datetime


@dataclass(frozen=True)
class TransactionRow:
    id: str
    tenant_id: str
    kind: str
    amount: int
    balance_after: int
    idempotency_key: str
    fingerprint: str
    description: str
    metadata: dict[str, Any] | None
    model_usage: dict[str, Any] | None
    credit_package_id: str | None
    reservation_id: str | None
    actor: str
    create_time: datetime


@dataclass(frozen=True)
class ReservationRow:
    id: str
    tenant_id: str
    amount: int
    state: str
    consumed: int
    idempotency_key: str
    expire_time: datetime
    create_time: datetime
    settle_time: datetime | None
    balance_after: int


@dataclass(frozen=True)
class PurchaseRow:
    id: str
    tenant_id: str
    provider: str
    session_id: str
    credit_package_id: str
    quantity: int
    credits: int
    amount_minor: int
    currency: str
    status: str
    create_time: datetime
    paid_time: datetime | None


async def lock_balance(session: AsyncSession, tenant_id: str, now: datetime) -> BalanceRow:
    """The tenant's balance row, made at 0 on first use, locked until the transaction ends."""
    insert = insert_for(session)
    await session.execute(
        insert(credit_balances)
        .values(
            tenant_id=tenant_id, balance=0, last_transaction_id=None, low_balance_sent=False, update_time=now
        )
        .on_conflict_do_nothing()
    )
    query = select(credit_balances).where(credit_balances.c.tenant_id == tenant_id).with_for_update()
    row: BalanceRow = row_of(BalanceRow, (await session.execute(query)).one())
    return row


async def get_balance(session: AsyncSession, tenant_id: str) -> BalanceRow | None:
    r = (
        await session.execute(select(credit_balances).where(credit_balances.c.tenant_id == tenant_id))
    ).first()
    return row_of(BalanceRow, r) if r is not None else None


async def set_balance(session: AsyncSession, tenant_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(
        update(credit_balances).where(credit_balances.c.tenant_id == tenant_id).values(**values)
    )


async def transaction_by_key(session: AsyncSession, tenant_id: str, key: str) -> TransactionRow | None:
    t = credit_transactions.c
    r = (
        await session.execute(
            select(credit_transactions).where(t.tenant_id == tenant_id, t.idempotency_key == key)
        )
    ).first()
    return row_of(TransactionRow, r) if r is not None else None


async def insert_transaction(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(credit_transactions.insert().values(**values))


async def list_transactions(
    session: AsyncSession,
    tenant_id: str,
    *,
    kind: str | None,
    start: datetime | None,
    end: datetime | None,
    before_id: str | None,
    limit: int,
) -> list[TransactionRow]:
    t = credit_transactions.c
    query = select(credit_transactions).where(t.tenant_id == tenant_id)
    if kind:
        query = query.where(t.kind == kind)
    if start is not None:
        query = query.where(t.create_time >= start)
    if end is not None:
        query = query.where(t.create_time < end)
    if before_id is not None:
        query = query.where(t.id < before_id)
    query = query.order_by(t.id.desc()).limit(limit)
    return [row_of(TransactionRow, r) for r in (await session.execute(query)).all()]


async def ledger_disagreements(session: AsyncSession) -> list[tuple[str, int, int]]:
    """(tenant, stored balance, ledger sum) wherever the two differ or a balance is below
    zero. Two grouped reads compared here: SQLite before 3.39 has no FULL OUTER JOIN."""
    t = credit_transactions.c
    sums = {
        str(tenant): int(total)
        for tenant, total in (
            await session.execute(select(t.tenant_id, func.sum(t.amount)).group_by(t.tenant_id))
        ).all()
    }
    balances = {
        str(tenant): int(balance)
        for tenant, balance in (
            await session.execute(select(credit_balances.c.tenant_id, credit_balances.c.balance))
        ).all()
    }
    return [
        (tenant, balances.get(tenant, 0), sums.get(tenant, 0))
        for tenant in sorted(set(sums) | set(balances))
        if balances.get(tenant, 0) != sums.get(tenant, 0) or balances.get(tenant, 0) < 0
    ]


async def count_balances(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(credit_balances))).scalar_one())


# --- reservations -------------------------------------------------------------------------------


async def insert_reservation(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(credit_reservations.insert().values(**values))


async def get_reservation(
    session: AsyncSession, tenant_id: str, reservation_id: str
) -> ReservationRow | None:
    t = credit_reservations.c
    r = (
        await session.execute(
            select(credit_reservations).where(t.id == reservation_id, t.tenant_id == tenant_id)
        )
    ).first()
    return row_of(ReservationRow, r) if r is not None else None


async def update_reservation(session: AsyncSession, reservation_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(
        update(credit_reservations).where(credit_reservations.c.id == reservation_id).values(**values)
    )


async def expired_holds(session: AsyncSession, now: datetime, limit: int) -> list[tuple[str, str]]:
    """(tenant, reservation) of holds past their expiry, oldest first."""
    t = credit_reservations.c
    query = (
        select(t.tenant_id, t.id)
        .where(t.state == "held", t.expire_time <= now)
        .order_by(t.expire_time)
        .limit(limit)
    )
    return [(str(a), str(b)) for a, b in (await session.execute(query)).all()]


# --- purchases ---------------------------------------------------------------------------------


async def insert_purchase(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(credit_purchases.insert().values(**values))


async def purchase_by_session(session: AsyncSession, provider: str, session_id: str) -> PurchaseRow | None:
    t = credit_purchases.c
    query = select(credit_purchases).where(t.provider == provider, t.session_id == session_id)
    r = (await session.execute(query)).first()
    return row_of(PurchaseRow, r) if r is not None else None


async def mark_purchase_paid(session: AsyncSession, purchase_id: str, now: datetime) -> None:
    await session.execute(
        update(credit_purchases)
        .where(credit_purchases.c.id == purchase_id)
        .values(status="paid", paid_time=now)
    )


async def purchases_paid_between(session: AsyncSession, start: datetime, end: datetime) -> int:
    t = credit_purchases.c
    query = select(func.coalesce(func.sum(t.amount_minor), 0)).where(
        and_(t.status == "paid", t.paid_time >= start, t.paid_time < end)
    )
    return int((await session.execute(query)).scalar_one())
