"""SQL for usage records and their rollups. Set-based: one statement per batch, never a row
at a time, since ingest is the hot path of this capability."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.db.dialect import insert_for
from nexus_server.usage.rules import Record
from nexus_server.usage.tables import (
    usage_daily,
    usage_period_totals,
    usage_quota_alerts,
    usage_records,
)

# Bound parameters per statement stay well under SQLite's 32,766 and PostgreSQL's 65,535.
_CHUNK = 1000


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def insert_new(
    session: AsyncSession, tenant_id: str, records: Sequence[Record], now: datetime
) -> set[str]:
    """Insert the records whose key the tenant has not used; return the keys inserted.

    Rows go in key order, so concurrent batches that share keys wait on each other in one
    order and cannot deadlock. A key already committed, or being committed by a concurrent
    batch, is skipped (the caller reads it back after that batch has finished)."""
    inserted: set[str] = set()
    ordered = sorted(records, key=lambda r: r.idempotency_key)
    for part in _chunks(ordered):
        rows = [
            {
                "tenant_id": tenant_id,
                "idempotency_key": r.idempotency_key,
                "metric": r.metric,
                "quantity": r.quantity,
                "time": r.time,
                "properties": r.properties,
                "accept_time": now,
            }
            for r in part
        ]
        statement = (
            insert_for(session)(usage_records)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
            .returning(usage_records.c.idempotency_key)
        )
        inserted.update((await session.execute(statement)).scalars())
    return inserted


async def stored_keys(
    session: AsyncSession, tenant_id: str, keys: Sequence[str]
) -> dict[str, tuple[str, int]]:
    """key -> (metric, quantity) of the tenant's records stored under `keys`."""
    found: dict[str, tuple[str, int]] = {}
    for part in _chunks(sorted(keys)):
        rows = await session.execute(
            select(usage_records.c.idempotency_key, usage_records.c.metric, usage_records.c.quantity).where(
                usage_records.c.tenant_id == tenant_id, usage_records.c.idempotency_key.in_(part)
            )
        )
        found.update({key: (metric, quantity) for key, metric, quantity in rows})
    return found


async def add_daily(session: AsyncSession, tenant_id: str, sums: dict[tuple[str, datetime], int]) -> None:
    """Add to the (metric, day) rollups, in key order (a lock order, as above)."""
    if not sums:
        return
    rows = [
        {"tenant_id": tenant_id, "metric": metric, "day": day, "quantity": quantity}
        for (metric, day), quantity in sorted(sums.items())
    ]
    statement = insert_for(session)(usage_daily).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "metric", "day"],
        set_={"quantity": usage_daily.c.quantity + statement.excluded.quantity},
    )
    await session.execute(statement)


async def add_period_totals(
    session: AsyncSession, tenant_id: str, sums: dict[tuple[str, datetime], int]
) -> dict[tuple[str, datetime], int]:
    """Add to the (metric, period start) totals; return each total after the addition."""
    after: dict[tuple[str, datetime], int] = {}
    for (metric, start), quantity in sorted(sums.items()):
        statement = insert_for(session)(usage_period_totals).values(
            tenant_id=tenant_id, metric=metric, period_start=start, quantity=quantity
        )
        statement = statement.on_conflict_do_update(
            index_elements=["tenant_id", "metric", "period_start"],
            set_={"quantity": usage_period_totals.c.quantity + statement.excluded.quantity},
        ).returning(usage_period_totals.c.quantity)
        after[(metric, start)] = int((await session.execute(statement)).scalar_one())
    return after


async def claim_alert(
    session: AsyncSession, tenant_id: str, metric: str, period_start: datetime, level: str, now: datetime
) -> bool:
    """Note that the alert is sent; False if it already was (it is then not sent again)."""
    statement = (
        insert_for(session)(usage_quota_alerts)
        .values(tenant_id=tenant_id, metric=metric, period_start=period_start, level=level, create_time=now)
        .on_conflict_do_nothing()
        .returning(usage_quota_alerts.c.level)
    )
    return (await session.execute(statement)).scalar_one_or_none() is not None


async def period_totals(session: AsyncSession, tenant_id: str, period_start: datetime) -> dict[str, int]:
    rows = await session.execute(
        select(usage_period_totals.c.metric, usage_period_totals.c.quantity).where(
            usage_period_totals.c.tenant_id == tenant_id, usage_period_totals.c.period_start == period_start
        )
    )
    return {metric: int(quantity) for metric, quantity in rows}


async def daily(
    session: AsyncSession, tenant_id: str, start: datetime, end: datetime, metric: str = ""
) -> list[tuple[str, datetime, int]]:
    where = [usage_daily.c.tenant_id == tenant_id, usage_daily.c.day >= start, usage_daily.c.day < end]
    if metric:
        where.append(usage_daily.c.metric == metric)
    rows = await session.execute(
        select(usage_daily.c.metric, usage_daily.c.day, usage_daily.c.quantity)
        .where(and_(*where))
        .order_by(usage_daily.c.metric, usage_daily.c.day)
    )
    return [(m, d, int(q)) for m, d, q in rows]


@dataclass(frozen=True)
class TenantMetricTotal:
    tenant_id: str
    metric: str
    quantity: int


async def totals_by_tenant(session: AsyncSession, start: datetime, end: datetime) -> list[TenantMetricTotal]:
    """Every tenant's total of every metric over whole days [start, end)."""
    rows = await session.execute(
        select(usage_daily.c.tenant_id, usage_daily.c.metric, func.sum(usage_daily.c.quantity))
        .where(usage_daily.c.day >= start, usage_daily.c.day < end)
        .group_by(usage_daily.c.tenant_id, usage_daily.c.metric)
    )
    return [TenantMetricTotal(t, m, int(q)) for t, m, q in rows]


async def prune_records(session: AsyncSession, accepted_before: datetime, limit: int) -> int:
    """Delete up to `limit` of the oldest records accepted before the cutoff (their rollups
    stay). Bounded, so each sweep is a short transaction; idempotent, so replicas that
    sweep at once only share the work."""
    oldest = (
        select(usage_records.c.tenant_id, usage_records.c.idempotency_key)
        .where(usage_records.c.accept_time < accepted_before)
        .order_by(usage_records.c.accept_time)
        .limit(limit)
    )
    keys = [(t, k) for t, k in await session.execute(oldest)]
    if not keys:
        return 0
    await session.execute(
        delete(usage_records).where(
            tuple_(usage_records.c.tenant_id, usage_records.c.idempotency_key).in_(keys)
        )
    )
    return len(keys)


async def exceeded_since(session: AsyncSession, metric: str, since: datetime) -> list[str]:
    """Tenants whose `metric` quota was used up in a period starting at or after `since`."""
    rows = await session.execute(
        select(usage_quota_alerts.c.tenant_id)
        .where(
            usage_quota_alerts.c.metric == metric,
            usage_quota_alerts.c.level == "exceeded",
            usage_quota_alerts.c.period_start >= since,
        )
        .distinct()
    )
    return [tenant_id for (tenant_id,) in rows]
