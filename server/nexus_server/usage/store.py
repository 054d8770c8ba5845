"""SQL for usage records and their rollups. Set-based: one statement per batch, never a row
at a time, since ingest is the hot path of this capability."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.common.pacing import Pacer
from nexus_server.db.dialect import insert_for, is_postgres, one_of
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
    session: AsyncSession, records: Sequence[tuple[str, Record]], now: datetime, pacer: Pacer
) -> set[tuple[str, str]]:
    """Insert the (tenant, record) pairs whose key their tenant has not used; return the
    (tenant, key) pairs inserted.

    One statement of fixed shape per batch, whatever its tenants, so nothing is compiled per
    call: a multi-row VALUES of 1,000 records costs SQLAlchemy and psycopg about 0.3 ms of CPU
    per record to build, more than the database takes to store it."""
    if not records:
        return set()
    ordered = sorted(records, key=lambda tr: (tr[0], tr[1].idempotency_key))
    if is_postgres(session):
        return await _insert_recordset(session, ordered, now, pacer)
    return await _insert_locked(session, ordered, now)


# Rows go in (tenant, key) order, so concurrent batches that share keys wait on each other in
# one order and cannot deadlock. A key already committed, or being committed by a concurrent
# batch, is skipped: the caller reads it back once that batch has finished.
_INSERT_RECORDSET = text(
    """
    INSERT INTO usage_records
        (tenant_id, idempotency_key, metric, quantity, "time", properties, accept_time)
    SELECT r.tenant, r.key, r.metric, r.quantity, r.at, r.properties, :now
    FROM json_to_recordset(CAST(:rows AS json))
        AS r(tenant text, key text, metric text, quantity bigint, at timestamptz, properties json)
    ORDER BY r.tenant, r.key
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING tenant_id, idempotency_key
    """
)


async def _insert_recordset(
    session: AsyncSession, ordered: Sequence[tuple[str, Record]], now: datetime, pacer: Pacer
) -> set[tuple[str, str]]:
    """PostgreSQL: the batch as one JSON parameter, whatever its size. json.dumps runs in
    C; array parameters would be escaped element by element in Python."""
    rows = await pacer.json_array(ordered, _recordset_row)
    result = await session.execute(_INSERT_RECORDSET, {"now": now, "rows": rows})
    return {(tenant_id, key) for tenant_id, key in result}


def _recordset_row(pair: tuple[str, Record]) -> dict[str, Any]:
    tenant_id, r = pair
    return {
        "tenant": tenant_id,
        "key": r.idempotency_key,
        "metric": r.metric,
        "quantity": r.quantity,
        "at": r.time.isoformat(),
        "properties": r.properties,
    }


async def _insert_locked(
    session: AsyncSession, ordered: Sequence[tuple[str, Record]], now: datetime
) -> set[tuple[str, str]]:
    """SQLite: a write transaction holds the database's one write lock from its start
    (BEGIN IMMEDIATE, db/engine.py), so no key can be committed between reading which keys
    are taken and inserting the rest. The rest go to the driver's executemany as plain
    tuples, bound by the columns' own processors, fetched once: SQLAlchemy's per-row
    parameter handling would cost more than SQLite's insert (metering writes a row a call)."""
    pairs = [(tenant_id, r.idempotency_key) for tenant_id, r in ordered]
    columns = (usage_records.c.tenant_id, usage_records.c.idempotency_key)
    taken: set[tuple[str, str]] = set()
    for part in _chunks(pairs, _CHUNK // 2):  # two bound parameters a pair
        query = select(*columns).where(tuple_(*columns).in_(part))
        taken.update((t, k) for t, k in await session.execute(query))
    new = [(tenant_id, r) for tenant_id, r in ordered if (tenant_id, r.idempotency_key) not in taken]
    if new:
        dialect = session.get_bind().dialect
        at = _processor(usage_records.c.time, dialect)
        props = _processor(usage_records.c.properties, dialect)
        accepted = at(now)
        rows = [
            (tenant_id, r.idempotency_key, r.metric, r.quantity, at(r.time), props(r.properties), accepted)
            for tenant_id, r in new
        ]
        connection = await session.connection()
        await connection.exec_driver_sql(_INSERT_PLAIN, rows)
    return {(tenant_id, r.idempotency_key) for tenant_id, r in new}


_INSERT_PLAIN = (
    "INSERT INTO usage_records"
    ' (tenant_id, idempotency_key, metric, quantity, "time", properties, accept_time)'
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _processor(column: Any, dialect: Any) -> Callable[[Any], Any]:
    """The column type's bind processor on `dialect` (what SQLAlchemy applies per value)."""
    process = column.type.bind_processor(dialect)
    return process if process is not None else (lambda value: value)


async def stored_keys(
    session: AsyncSession, tenant_id: str, keys: Sequence[str]
) -> dict[str, tuple[str, int]]:
    """key -> (metric, quantity) of the tenant's records stored under `keys`."""
    found: dict[str, tuple[str, int]] = {}
    for part in _chunks(sorted(keys)):
        rows = await session.execute(
            select(usage_records.c.idempotency_key, usage_records.c.metric, usage_records.c.quantity).where(
                usage_records.c.tenant_id == tenant_id, one_of(session, usage_records.c.idempotency_key, part)
            )
        )
        found.update({key: (metric, quantity) for key, metric, quantity in rows})
    return found


# (tenant, metric, day or period start): the key of a rollup row.
RollupKey = tuple[str, str, datetime]


async def add_daily(session: AsyncSession, sums: dict[RollupKey, int]) -> None:
    """Add to the (tenant, metric, day) rollups, in key order (a lock order, as above)."""
    if not sums:
        return
    rows = [
        {"tenant_id": tenant_id, "metric": metric, "day": day, "quantity": quantity}
        for (tenant_id, metric, day), quantity in sorted(sums.items())
    ]
    statement = insert_for(session)(usage_daily)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "metric", "day"],
        set_={"quantity": usage_daily.c.quantity + statement.excluded.quantity},
    )
    await session.execute(statement, rows)  # executemany: one cached statement


# PostgreSQL: every (tenant, metric, period) of a batch in one upsert, in key order.
_ADD_PERIOD_TOTALS = text(
    """
    INSERT INTO usage_period_totals (tenant_id, metric, period_start, quantity)
    SELECT r.tenant, r.metric, r.start, r.quantity
    FROM json_to_recordset(CAST(:rows AS json))
        AS r(tenant text, metric text, start timestamptz, quantity bigint)
    ORDER BY r.tenant, r.metric, r.start
    ON CONFLICT (tenant_id, metric, period_start)
        DO UPDATE SET quantity = usage_period_totals.quantity + excluded.quantity
    RETURNING tenant_id, metric, period_start, quantity
    """
)


async def add_period_totals(session: AsyncSession, sums: dict[RollupKey, int]) -> dict[RollupKey, int]:
    """Add to the (tenant, metric, period start) totals; return each total after the addition."""
    ordered = sorted(sums.items())
    if not ordered:
        return {}
    if is_postgres(session):
        rows = json.dumps(
            [
                {"tenant": tenant_id, "metric": metric, "start": start.isoformat(), "quantity": quantity}
                for (tenant_id, metric, start), quantity in ordered
            ],
            separators=(",", ":"),
        )
        # The database hands period_start back in its own time zone: match on the instant.
        wanted = {
            (tenant_id, metric, start.timestamp()): (tenant_id, metric, start)
            for (tenant_id, metric, start), _ in ordered
        }
        result = await session.execute(_ADD_PERIOD_TOTALS, {"rows": rows})
        return {
            wanted[(tenant_id, metric, start.timestamp())]: int(total)
            for tenant_id, metric, start, total in result
        }
    after: dict[RollupKey, int] = {}
    for (tenant_id, metric, start), quantity in ordered:  # SQLite: a local call each, no round trip
        statement = insert_for(session)(usage_period_totals).values(
            tenant_id=tenant_id, metric=metric, period_start=start, quantity=quantity
        )
        statement = statement.on_conflict_do_update(
            index_elements=["tenant_id", "metric", "period_start"],
            set_={"quantity": usage_period_totals.c.quantity + statement.excluded.quantity},
        ).returning(usage_period_totals.c.quantity)
        after[(tenant_id, metric, start)] = int((await session.execute(statement)).scalar_one())
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
