"""The log's promise under concurrency: a reader never passes a sequence whose event has
not committed, because a tenant's appends commit in sequence order (db/uow.py)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.events import store
from tests.support import unique


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_async(database_url))
    yield database
    await database.dispose()


async def test_readers_only_ever_see_a_gap_free_prefix_while_appends_race(db: Database) -> None:
    tenant = unique("ten_race")
    total = 400
    done = asyncio.Event()
    seen: list[int] = []
    problems: list[str] = []

    async def append(n: int) -> None:
        async with db.unit_of_work() as uow:
            await uow.append_event("race.appended", {"n": n}, tenant_id=tenant)
            # Hold the transaction open a little after taking a sequence, so later
            # appenders are ready to commit before earlier ones if they could.
            await asyncio.sleep(random.random() * 0.003)

    async def appenders() -> None:
        await asyncio.gather(*(append(n) for n in range(total)))
        done.set()

    async def reader() -> None:
        cursor = 0
        while not done.is_set() or cursor < total:
            async with db.unit_of_work(readonly=True) as uow:
                rows = await store.read(uow.session, tenant, after=cursor, upto=None, flt=None, limit=1000)
                head = await store.head(uow.session, tenant)
            sequences = [r.sequence for r in rows]
            if sequences != list(range(cursor + 1, cursor + 1 + len(sequences))):
                problems.append(f"after {cursor} read {sequences[:5]}…")
            if sequences and head < sequences[-1]:
                problems.append(f"head {head} behind visible {sequences[-1]}")
            seen.extend(sequences)
            cursor = sequences[-1] if sequences else cursor
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(appenders(), reader(), reader()), 120)
    assert problems == []
    assert sorted(set(seen)) == list(range(1, total + 1))
