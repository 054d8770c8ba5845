"""Reads of the event log, and the one append that must not duplicate an idempotency key.

Appends go through `UnitOfWork.append_event` (db/uow.py), which assigns each tenant's
gap-free sequence. Every read here is bounded by a sequence range or a LIMIT, and uses the
(tenant_id, sequence), (tenant_id, type, sequence) or (tenant_id, create_time) indexes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, not_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.db.dialect import one_of
from nexus_server.db.schema import event_streams, events
from nexus_server.db.uow import StoredEvent, UnitOfWork
from nexus_server.events.filters import Filter
from nexus_server.events.visibility import NEXUS_SOURCE

_COLUMNS = (
    events.c.id,
    events.c.tenant_id,
    events.c.sequence,
    events.c.type,
    events.c.source,
    events.c.subject,
    events.c.time,
    events.c.data,
    events.c.idempotency_key,
    events.c.create_time,
    events.c.publisher_api_key_id,
)


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        id=row.id,
        tenant_id=row.tenant_id,
        sequence=int(row.sequence),
        type=row.type,
        source=row.source,
        subject=row.subject,
        time=row.time,
        data=row.data,
        idempotency_key=row.idempotency_key,
        create_time=row.create_time,
        publisher_api_key_id=row.publisher_api_key_id or "",
    )


def filter_clause(flt: Filter) -> ColumnElement[bool] | None:
    """The SQL form of `flt` (None when it matches everything)."""
    clauses: list[ColumnElement[bool]] = []
    if not flt.any_type:
        types: list[ColumnElement[bool]] = []
        if flt.exact:
            types.append(events.c.type.in_(sorted(flt.exact)))
        # autoescape: `_` is a LIKE wildcard and is legal in types.
        types += [events.c.type.startswith(prefix, autoescape=True) for prefix in flt.prefixes]
        clauses.append(or_(*types))
    if flt.sources:
        clauses.append(events.c.source.in_(sorted(flt.sources)))
    if flt.hidden:
        # What the reader may not see (visibility.py): Nexus's events of those families.
        hidden = [events.c.type.startswith(prefix, autoescape=True) for prefix in flt.hidden]
        clauses.append(not_(and_(events.c.source == NEXUS_SOURCE, or_(*hidden))))
    return and_(*clauses) if clauses else None


async def head(session: AsyncSession, tenant_id: str, *, for_update: bool = False) -> int:
    """The tenant's head: the highest committed sequence (every lower one is committed too).
    `for_update` locks the head row (PostgreSQL) to commit: the tenant's appends, and other
    writers that take it, wait."""
    query = select(event_streams.c.head_sequence).where(event_streams.c.tenant_id == tenant_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = await session.execute(query)
    return int(row.scalar_one_or_none() or 0)


async def heads(session: AsyncSession, tenant_ids: Iterable[str]) -> dict[str, int]:
    ids = sorted(set(tenant_ids))
    found: dict[str, int] = {}
    for start in range(0, len(ids), 500):
        rows = await session.execute(
            select(event_streams.c.tenant_id, event_streams.c.head_sequence).where(
                one_of(session, event_streams.c.tenant_id, ids[start : start + 500])
            )
        )
        found.update({r.tenant_id: int(r.head_sequence) for r in rows})
    return found


async def read(
    session: AsyncSession,
    tenant_id: str,
    *,
    after: int,
    upto: int | None,
    flt: Filter | None,
    limit: int,
) -> list[StoredEvent]:
    """Events with `after` < sequence <= `upto` matching `flt`, ascending, at most `limit`."""
    query = select(*_COLUMNS).where(events.c.tenant_id == tenant_id, events.c.sequence > after)
    if upto is not None:
        query = query.where(events.c.sequence <= upto)
    clause = filter_clause(flt) if flt is not None else None
    if clause is not None:
        query = query.where(clause)
    rows = await session.execute(query.order_by(events.c.sequence).limit(limit))
    return [_event(r) for r in rows]


async def first_sequence_since(
    session: AsyncSession, tenant_id: str, *, after: int, since: datetime
) -> int | None:
    """The lowest sequence above `after` appended at or after `since`, if any."""
    row = await session.execute(
        select(func.min(events.c.sequence)).where(
            events.c.tenant_id == tenant_id, events.c.sequence > after, events.c.create_time >= since
        )
    )
    value = row.scalar_one_or_none()
    return None if value is None else int(value)


async def by_id(session: AsyncSession, tenant_id: str, event_id: str) -> StoredEvent | None:
    row = (
        await session.execute(
            select(*_COLUMNS).where(events.c.id == event_id, events.c.tenant_id == tenant_id)
        )
    ).first()
    return None if row is None else _event(row)


async def by_idempotency_key(session: AsyncSession, tenant_id: str, key: str) -> StoredEvent | None:
    row = (
        await session.execute(
            select(*_COLUMNS).where(events.c.tenant_id == tenant_id, events.c.idempotency_key == key)
        )
    ).first()
    return None if row is None else _event(row)


async def append_unless_key_taken(
    uow: UnitOfWork, append: Callable[[], Awaitable[StoredEvent]]
) -> StoredEvent | None:
    """Run `append` in a savepoint; None if a concurrent transaction committed the same
    idempotency key first (the savepoint also undoes the head bump, so no gap is left)."""
    try:
        async with uow.session.begin_nested():
            return await append()
    except IntegrityError:
        return None


def page_query(
    tenant_id: str,
    *,
    flt: Filter,
    subject: str,
    start_time: datetime | None,
    end_time: datetime | None,
    min_sequence: int,
    max_sequence: int,
    descending: bool,
    after: int | None,
    limit: int,
) -> Select[Any]:
    """ListEvents' query: every filter, keyset paging on sequence from `after` (exclusive)."""
    query = select(*_COLUMNS).where(events.c.tenant_id == tenant_id)
    clause = filter_clause(flt)
    if clause is not None:
        query = query.where(clause)
    if subject:
        query = query.where(events.c.subject == subject)
    if start_time is not None:
        query = query.where(events.c.create_time >= start_time)
    if end_time is not None:
        query = query.where(events.c.create_time < end_time)
    if min_sequence:
        query = query.where(events.c.sequence >= min_sequence)
    if max_sequence:
        query = query.where(events.c.sequence <= max_sequence)
    if after is not None:
        query = query.where(events.c.sequence < after if descending else events.c.sequence > after)
    order = events.c.sequence.desc() if descending else events.c.sequence
    return query.order_by(order).limit(limit)


async def page(session: AsyncSession, query: Select[Any]) -> Sequence[StoredEvent]:
    return [_event(r) for r in await session.execute(query)]


async def by_sequences(
    session: AsyncSession, tenant_id: str, sequences: Iterable[int]
) -> dict[int, StoredEvent]:
    """The tenant's events with these sequences (webhook deliveries name their event so)."""
    wanted = sorted(set(sequences))
    found: dict[int, StoredEvent] = {}
    for start in range(0, len(wanted), 500):
        rows = await session.execute(
            select(*_COLUMNS).where(
                events.c.tenant_id == tenant_id,
                one_of(session, events.c.sequence, wanted[start : start + 500]),
            )
        )
        found.update({int(r.sequence): _event(r) for r in rows})
    return found
