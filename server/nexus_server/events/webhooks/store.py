"""Persistence of webhook endpoints, deliveries and attempts (tables.py says what each holds).

Two reads take row locks: fan-out (`endpoints_behind`) and the sender's claim
(`claim_endpoints`). On PostgreSQL both lock with FOR UPDATE SKIP LOCKED, so replicas split
the endpoints between them instead of queueing on each other; on the embedded SQLite
default one process holds the database's write lock for the whole transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from nexus_server.db.schema import event_streams
from nexus_server.events.webhooks.rules import OPEN, Status
from nexus_server.events.webhooks.tables import (
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_redeliveries,
)


@dataclass(frozen=True)
class EndpointRow:
    id: str
    tenant_id: str
    url: str
    types: list[str]
    sources: list[str]
    description: str
    enabled: bool
    disabled_reason: str
    secret: bytes
    previous_secret: bytes | None
    previous_secret_expire_time: datetime | None
    cursor: int
    hold_until: datetime | None
    failing_since: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    tenant_id: str
    endpoint_id: str
    event_id: str
    event_sequence: int
    event_type: str
    status: str
    attempt_count: int
    response_status_code: int
    last_error: str
    last_attempt_time: datetime | None
    next_attempt_time: datetime | None
    create_time: datetime
    redelivery: bool


@dataclass(frozen=True)
class AttemptRow:
    delivery_id: str
    attempt: int
    endpoint_id: str
    attempt_time: datetime
    response_status_code: int
    latency_ms: int
    response_excerpt: str
    error: str
    next_retry_time: datetime | None


def _endpoint(row: Any) -> EndpointRow:
    return EndpointRow(**{c.name: getattr(row, c.name) for c in webhook_endpoints.c})


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(**{c.name: getattr(row, c.name) for c in webhook_deliveries.c})


def _locking(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# --- endpoints ------------------------------------------------------------------------------


async def insert_endpoint(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(webhook_endpoints).values(values))


async def get_endpoint(
    session: AsyncSession, tenant_id: str, endpoint_id: str, *, for_update: bool = False
) -> EndpointRow | None:
    query = select(webhook_endpoints).where(
        webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.tenant_id == tenant_id
    )
    if for_update and _locking(session):
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return None if row is None else _endpoint(row)


async def count_endpoints(session: AsyncSession, tenant_id: str) -> int:
    found = await session.execute(
        select(func.count()).select_from(webhook_endpoints).where(webhook_endpoints.c.tenant_id == tenant_id)
    )
    return int(found.scalar_one())


async def list_endpoints(
    session: AsyncSession, tenant_id: str, after: str | None, limit: int
) -> list[EndpointRow]:
    query = select(webhook_endpoints).where(webhook_endpoints.c.tenant_id == tenant_id)
    if after is not None:
        query = query.where(webhook_endpoints.c.id > after)
    rows = await session.execute(query.order_by(webhook_endpoints.c.id).limit(limit))
    return [_endpoint(r) for r in rows]


async def update_endpoint(session: AsyncSession, endpoint_id: str, values: dict[str, Any]) -> None:
    await session.execute(
        update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(values)
    )


async def delete_endpoint(session: AsyncSession, endpoint_id: str) -> None:
    for table, column in (
        (webhook_attempts, webhook_attempts.c.endpoint_id),
        (webhook_deliveries, webhook_deliveries.c.endpoint_id),
        (webhook_redeliveries, webhook_redeliveries.c.endpoint_id),
        (webhook_endpoints, webhook_endpoints.c.id),
    ):
        await session.execute(delete(table).where(column == endpoint_id))


async def all_sealed_secrets(session: AsyncSession) -> list[tuple[str, bytes, bytes | None]]:
    rows = await session.execute(
        select(webhook_endpoints.c.id, webhook_endpoints.c.secret, webhook_endpoints.c.previous_secret)
    )
    return [(r.id, r.secret, r.previous_secret) for r in rows]


# --- fan-out --------------------------------------------------------------------------------


async def any_enabled(session: AsyncSession) -> bool:
    """Whether any tenant has an enabled endpoint (the only kind fanned out or sent to)."""
    query = select(webhook_endpoints.c.id).where(webhook_endpoints.c.enabled).limit(1)
    return (await session.execute(query)).first() is not None


async def endpoints_behind(session: AsyncSession, limit: int) -> list[EndpointRow]:
    """Enabled endpoints whose cursor is behind their tenant's head, locked for fan-out
    (skipping those another replica is fanning out)."""
    query = (
        select(webhook_endpoints)
        .join(event_streams, event_streams.c.tenant_id == webhook_endpoints.c.tenant_id)
        .where(webhook_endpoints.c.enabled, webhook_endpoints.c.cursor < event_streams.c.head_sequence)
        .order_by(webhook_endpoints.c.tenant_id, webhook_endpoints.c.id)
        .limit(limit)
    )
    if _locking(session):
        query = query.with_for_update(of=webhook_endpoints, skip_locked=True)
    return [_endpoint(r) for r in await session.execute(query)]


async def insert_deliveries(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 500):
        await session.execute(insert(webhook_deliveries), list(rows[start : start + 500]))


async def set_cursor(session: AsyncSession, endpoint_id: str, cursor: int) -> None:
    await session.execute(
        update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(cursor=cursor)
    )


# --- the sender's claim ---------------------------------------------------------------------


def _due(now: datetime) -> Any:
    return exists().where(
        webhook_deliveries.c.endpoint_id == webhook_endpoints.c.id,
        webhook_deliveries.c.status.in_([s.value for s in OPEN]),
        webhook_deliveries.c.next_attempt_time <= now,
    )


async def claim_endpoints(
    session: AsyncSession, owner: str, now: datetime, until: datetime, limit: int, skip: Iterable[str]
) -> list[EndpointRow]:
    """Lease up to `limit` enabled endpoints that have a due delivery, are not held, and
    whose lease (if any) has run out; `skip` are those this replica is already sending to."""
    query = (
        select(webhook_endpoints)
        .where(
            webhook_endpoints.c.enabled,
            or_(webhook_endpoints.c.hold_until.is_(None), webhook_endpoints.c.hold_until <= now),
            or_(webhook_endpoints.c.lease_until.is_(None), webhook_endpoints.c.lease_until < now),
            _due(now),
        )
        .order_by(webhook_endpoints.c.lease_until.nulls_first(), webhook_endpoints.c.id)
        .limit(limit)
    )
    skipped = sorted(skip)
    if skipped:
        query = query.where(webhook_endpoints.c.id.not_in(skipped))
    if _locking(session):
        query = query.with_for_update(skip_locked=True)
    rows = [_endpoint(r) for r in await session.execute(query)]
    if rows:
        await session.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.id.in_([r.id for r in rows]))
            .values(lease_owner=owner, lease_until=until)
        )
    return rows


async def due_deliveries(
    session: AsyncSession, endpoint_id: str, now: datetime, limit: int
) -> list[DeliveryRow]:
    rows = await session.execute(
        select(webhook_deliveries)
        .where(
            webhook_deliveries.c.endpoint_id == endpoint_id,
            webhook_deliveries.c.status.in_([s.value for s in OPEN]),
            webhook_deliveries.c.next_attempt_time <= now,
        )
        .order_by(webhook_deliveries.c.event_sequence, webhook_deliveries.c.id)
        .limit(limit)
    )
    return [_delivery(r) for r in rows]


async def renew_lease(
    session: AsyncSession, endpoint_id: str, owner: str, until: datetime | None, values: dict[str, Any]
) -> bool:
    """Write `values` and the new lease (None releases it) if this replica still holds the
    endpoint's lease and the endpoint is enabled; False when not (it was deleted, disabled
    by a person, or re-leased by another replica after this one stalled)."""
    result = await session.execute(
        update(webhook_endpoints)
        .where(
            webhook_endpoints.c.id == endpoint_id,
            webhook_endpoints.c.lease_owner == owner,
            webhook_endpoints.c.enabled,
        )
        .values({**values, "lease_until": until, "lease_owner": owner if until is not None else None})
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


_RECORDED = (
    "status",
    "attempt_count",
    "response_status_code",
    "last_error",
    "last_attempt_time",
    "next_attempt_time",
)
# One statement run for many rows (executemany): a group of attempts is two round trips.
_RECORD = (
    update(webhook_deliveries)
    .where(webhook_deliveries.c.id == bindparam("b_id"))
    .values({name: bindparam(f"b_{name}") for name in _RECORDED})
)


async def record_attempts(
    session: AsyncSession, deliveries: Sequence[dict[str, Any]], attempts: Sequence[dict[str, Any]]
) -> None:
    """Write each delivery's new state (its `id` and the _RECORDED columns) and its attempt."""
    if not deliveries:
        return
    await session.execute(_RECORD, [{f"b_{k}": v for k, v in d.items()} for d in deliveries])
    await session.execute(insert(webhook_attempts), list(attempts))


# --- listing and redelivery -----------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    endpoint_id: str,
    *,
    status: str | None,
    event_id: str,
    before: str | None,
    limit: int,
) -> list[DeliveryRow]:
    query = select(webhook_deliveries).where(webhook_deliveries.c.endpoint_id == endpoint_id)
    if status:
        query = query.where(webhook_deliveries.c.status == status)
    if event_id:
        query = query.where(webhook_deliveries.c.event_id == event_id)
    if before is not None:
        query = query.where(webhook_deliveries.c.id < before)
    rows = await session.execute(query.order_by(webhook_deliveries.c.id.desc()).limit(limit))
    return [_delivery(r) for r in rows]


async def attempts_of(session: AsyncSession, delivery_ids: Sequence[str]) -> dict[str, list[AttemptRow]]:
    found: dict[str, list[AttemptRow]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return found
    rows = await session.execute(
        select(webhook_attempts)
        .where(webhook_attempts.c.delivery_id.in_(list(delivery_ids)))
        .order_by(webhook_attempts.c.delivery_id, webhook_attempts.c.attempt)
    )
    for r in rows:
        found[r.delivery_id].append(AttemptRow(**{c.name: getattr(r, c.name) for c in webhook_attempts.c}))
    return found


async def redelivery(session: AsyncSession, endpoint_id: str, key: str) -> Any:
    return (
        await session.execute(
            select(webhook_redeliveries).where(
                webhook_redeliveries.c.endpoint_id == endpoint_id,
                webhook_redeliveries.c.idempotency_key == key,
            )
        )
    ).first()


async def insert_redelivery(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(insert(webhook_redeliveries).values(values))


async def delete_finished_before(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` finished deliveries created before `before`, with their attempts."""
    ids = [
        r[0]
        for r in await session.execute(
            select(webhook_deliveries.c.id)
            .where(
                webhook_deliveries.c.status.in_([Status.SUCCEEDED.value, Status.FAILED.value]),
                webhook_deliveries.c.create_time < before,
            )
            .limit(limit)
        )
    ]
    if ids:
        await session.execute(delete(webhook_attempts).where(webhook_attempts.c.delivery_id.in_(ids)))
        await session.execute(delete(webhook_deliveries).where(webhook_deliveries.c.id.in_(ids)))
    return len(ids)


async def replace_sealed(
    session: AsyncSession, endpoint_id: str, column: str, old: bytes, new: bytes
) -> None:
    target = webhook_endpoints.c[column]
    await session.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id, target == old)
        .values({column: new})
    )
