"""The event outbox: appended in the same transaction as the change, gap-free per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from nexus_server.db.engine import create_async
from nexus_server.db.schema import events
from nexus_server.db.uow import Database


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_async(database_url))
    yield database
    await database.dispose()


async def test_concurrent_appends_get_consecutive_sequences(db: Database) -> None:
    tenant = "ten_concurrent_appends"

    async def append(n: int) -> int:
        async with db.unit_of_work() as uow:
            event = await uow.append_event("test.appended", {"n": n}, tenant_id=tenant)
            return event.sequence

    sequences = await asyncio.gather(*(append(n) for n in range(40)))
    assert sorted(sequences) == list(range(1, 41))
    async with db.unit_of_work(readonly=True) as uow:
        assert await uow.head_sequence(tenant) == 40


async def test_rolled_back_change_leaves_no_event_and_no_gap(db: Database) -> None:
    tenant = "ten_rollback"
    with pytest.raises(RuntimeError):
        async with db.unit_of_work() as uow:
            await uow.append_event("test.phantom", {}, tenant_id=tenant)
            raise RuntimeError("the change failed")
    async with db.unit_of_work() as uow:
        event = await uow.append_event("test.real", {}, tenant_id=tenant)
    assert event.sequence == 1
    async with db.unit_of_work(readonly=True) as uow:
        count = (
            await uow.session.execute(
                select(func.count()).select_from(events).where(events.c.tenant_id == tenant)
            )
        ).scalar_one()
    assert count == 1


async def test_listeners_hear_committed_events_only(db: Database) -> None:
    heard: list[str] = []
    db.event_listeners.append(lambda batch: heard.extend(e.type for e in batch))
    async with db.unit_of_work() as uow:
        await uow.append_event("test.one", {}, tenant_id="ten_listen")
        await uow.append_event("test.two", {}, tenant_id="ten_listen")
    with pytest.raises(ValueError):
        async with db.unit_of_work() as uow:
            await uow.append_event("test.never", {}, tenant_id="ten_listen")
            raise ValueError
    assert heard == ["test.one", "test.two"]


async def test_tenants_have_independent_sequences(db: Database) -> None:
    async with db.unit_of_work() as uow:
        a = await uow.append_event("test.a", {}, tenant_id="ten_indep_a")
        b = await uow.append_event("test.b", {}, tenant_id="ten_indep_b")
    assert (a.sequence, b.sequence) == (1, 1)
