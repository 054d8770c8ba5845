"""The retention sweep: raw records past the retention period go, in slices; the rollups
they were counted in stay; endpoint hours past what GetEndpointStats can ask for go."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from nexus_server.common.clock import FrozenClock
from nexus_server.common.ids import new_id
from nexus_server.common.pacing import Pacer
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.usage import endpoint_store, ingest, retention
from nexus_server.usage.rules import Record
from nexus_server.usage.tables import usage_daily, usage_endpoint_hourly, usage_records
from nexus_server.usage.terms import BuiltInTerms


async def free(uow: UnitOfWork, tenant_id: str) -> str:
    return "free"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_async(database_url), FrozenClock(datetime.now(UTC)))
    yield database
    await database.dispose()


async def _count(db: Database, tenant_id: str) -> tuple[int, int, int]:
    async with db.unit_of_work(readonly=True) as uow:
        raw = await uow.session.scalar(select(func.count()).where(usage_records.c.tenant_id == tenant_id))
        rolled = await uow.session.scalar(
            select(func.coalesce(func.sum(usage_daily.c.quantity), 0)).where(
                usage_daily.c.tenant_id == tenant_id
            )
        )
        hours = await uow.session.scalar(
            select(func.count()).where(usage_endpoint_hourly.c.tenant_id == tenant_id)
        )
    return int(raw or 0), int(rolled or 0), int(hours or 0)


async def test_old_records_and_hours_are_pruned_and_rollups_stay(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "SLICE", 7)  # several slices, as a large backlog would take
    clock = db.clock
    assert isinstance(clock, FrozenClock)
    now = clock.now()
    tenant = new_id("ten")
    terms = BuiltInTerms(free)

    async def accept(prefix: str, count: int) -> None:
        at = clock.now()
        items = [ingest.Item(i, Record("emails_sent", 2, f"{prefix}-{i}", at)) for i in range(count)]
        async with db.unit_of_work() as uow:
            assert (await ingest.record(uow, terms, tenant, items)).accepted == count

    clock.advance(-timedelta(days=40))
    await accept("old", 20)
    clock.advance(timedelta(days=40))
    await accept("new", 5)
    async with db.unit_of_work() as uow:
        old_hour = (now - timedelta(days=92)).replace(minute=0, second=0, microsecond=0)
        hour = now.replace(minute=0, second=0, microsecond=0)
        await endpoint_store.add_hourly(
            uow.session,
            {(tenant, old_hour, "/m", "", "OK", 3): 4, (tenant, hour, "/m", "", "OK", 3): 1},
            Pacer(),
        )
    assert await _count(db, tenant) == (25, 50, 2)
    removed = await retention.Sweep(db, timedelta(days=35)).step()
    assert removed >= 20
    assert await _count(db, tenant) == (5, 50, 1)
    async with db.unit_of_work() as uow:  # the kept keys still make retries duplicates
        again = await ingest.record(
            uow, terms, tenant, [ingest.Item(0, Record("emails_sent", 2, "new-0", now))]
        )
    assert (again.accepted, again.duplicates) == (0, 1)
