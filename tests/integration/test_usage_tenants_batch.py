"""Several tenants' records in one unit of work (what a metering flush writes): one statement
per table for all of them, and each tenant's outcome, rows and totals exactly as if its
batch had been recorded alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Table, select

from nexus_server.common.clock import FrozenClock
from nexus_server.common.ids import new_id
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database, UnitOfWork
from nexus_server.usage import ingest, store
from nexus_server.usage.rules import Record
from nexus_server.usage.tables import usage_daily, usage_records
from nexus_server.usage.terms import BuiltInTerms


async def free(uow: UnitOfWork, tenant_id: str) -> str:
    return "free"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_async(database_url), FrozenClock(datetime(2026, 12, 7, 12, tzinfo=UTC)))
    yield database
    await database.dispose()


def _items(at: datetime, *keys: tuple[str, str, int]) -> list[ingest.Item]:
    return [
        ingest.Item(i, Record(metric, quantity, key, at)) for i, (key, metric, quantity) in enumerate(keys)
    ]


async def _rows(uow: UnitOfWork, table: Table, *names: str, tenants: list[str]) -> list[tuple[Any, ...]]:
    """The tenants' rows of `table`, as tuples of the named columns, ordered by them."""
    columns = [table.c[name] for name in names]
    query = select(*columns).where(table.c.tenant_id.in_(tenants)).order_by(*columns)
    return [tuple(row) for row in await uow.session.execute(query)]


async def test_each_tenant_gets_its_own_outcome_rows_and_totals(db: Database) -> None:
    terms = BuiltInTerms(free)
    at = db.clock.now()
    a, b, c = sorted(new_id("ten") for _ in range(3))
    async with db.unit_of_work() as uow:  # b has a record already: its retry is a duplicate
        await ingest.record(uow, terms, b, _items(at, ("k1", "emails_sent", 2)))

    async with db.unit_of_work() as uow:
        outcomes = await ingest.record_tenants(
            uow,
            terms,
            {
                # Given out of order: tenants are written in id order (a lock order) anyway.
                c: _items(at, ("k1", "emails_sent", 5), ("k1", "emails_sent", 5), ("k1", "emails_sent", 6)),
                a: _items(at, ("k1", "emails_sent", 1), ("k2", "emails_sent", 1), ("k3", "api_calls", 7)),
                b: _items(at, ("k1", "emails_sent", 2), ("k1", "emails_sent", 3), ("k2", "emails_sent", 4)),
            },
        )

    assert list(outcomes) == [a, b, c]
    # The same key in three tenants is three records; repeats within one batch are settled
    # against their first, and a key already stored is a duplicate only with its own values.
    assert (outcomes[a].accepted, outcomes[a].duplicates, outcomes[a].rejections) == (3, 0, [])
    assert (outcomes[b].accepted, outcomes[b].duplicates) == (1, 1)
    assert [(r.index, r.reason) for r in outcomes[b].rejections] == [(1, "IDEMPOTENCY_KEY_REUSED")]
    assert (outcomes[c].accepted, outcomes[c].duplicates) == (1, 1)
    assert [(r.index, r.reason) for r in outcomes[c].rejections] == [(2, "IDEMPOTENCY_KEY_REUSED")]

    async with db.unit_of_work(readonly=True) as uow:
        rows = await _rows(uow, usage_records, "tenant_id", "idempotency_key", "quantity", tenants=[a, b, c])
        daily = await _rows(uow, usage_daily, "tenant_id", "metric", "quantity", tenants=[a, b, c])
        start = (await terms.terms(uow, a, at)).period_start
        totals = {t: await store.period_totals(uow.session, t, start) for t in (a, b, c)}
    assert rows == [
        (a, "k1", 1),
        (a, "k2", 1),
        (a, "k3", 7),
        (b, "k1", 2),
        (b, "k2", 4),
        (c, "k1", 5),
    ]
    assert daily == [(a, "api_calls", 7), (a, "emails_sent", 2), (b, "emails_sent", 6), (c, "emails_sent", 5)]
    assert totals == {a: {"api_calls": 7, "emails_sent": 2}, b: {"emails_sent": 6}, c: {"emails_sent": 5}}


async def test_period_totals_of_several_tenants_come_back_each_after_its_own_addition(db: Database) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    a, b = sorted(new_id("ten") for _ in range(2))
    async with db.unit_of_work() as uow:
        first = await store.add_period_totals(uow.session, {(a, "m", start): 3, (b, "m", start): 10})
        second = await store.add_period_totals(
            uow.session, {(b, "m", start): 1, (a, "m", start): 4, (a, "n", start): 2}
        )
    assert first == {(a, "m", start): 3, (b, "m", start): 10}
    assert second == {(a, "m", start): 7, (a, "n", start): 2, (b, "m", start): 11}
