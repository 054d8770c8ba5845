"""The API-key store's batch paths: the verifier's read off the unit of work (PostgreSQL's
hot reader) gives the rows the unit of work does, in UTC, and survives its connection being
cut; last-used times are written in one statement and never move back (both backends)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from nexus_server.apikeys import store
from nexus_server.apikeys.store import ApiKeyRow
from nexus_server.apikeys.tables import api_keys
from nexus_server.common.pacing import Pacer
from nexus_server.db.engine import create_async
from nexus_server.db.hot import HotReader
from nexus_server.db.uow import Database
from tests.support import unique


def _key(now: datetime) -> ApiKeyRow:
    return ApiKeyRow(
        id=unique("eco_api_hot")[:40],
        tenant_id=unique("ten_")[:40],
        name="hot",
        scopes=("apikeys:read", "usage:write"),
        environment="test",
        rate_limit_per_minute=120,
        start="eco_test_abcd",
        secret_hash="a" * 64,
        previous_secret_hash="b" * 64,
        previous_secret_expire_time=now + timedelta(hours=1),
        created_by="usr_x",
        create_time=now,
        update_time=now,
        expire_time=None,
        last_used_time=None,
        revoke_time=None,
        rotate_time=None,
    )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_async(database_url))
    yield database
    await database.dispose()


@pytest.fixture
async def keys(db: Database) -> AsyncIterator[list[ApiKeyRow]]:
    """Three stored keys (created now, to the second), deleted afterwards."""
    rows = [_key(datetime.now(UTC).replace(microsecond=0)) for _ in range(3)]
    async with db.unit_of_work() as uow:
        for row in rows:
            await store.insert_key(uow.session, row)
    yield rows
    async with db.unit_of_work() as uow:
        await uow.session.execute(api_keys.delete().where(api_keys.c.id.in_([k.id for k in rows])))


def _hot(db: Database) -> HotReader:
    if db.hot is None:
        pytest.skip("SQLite reads through the unit of work")
    return db.hot


async def test_the_hot_read_gives_what_the_unit_of_work_reads(db: Database, keys: list[ApiKeyRow]) -> None:
    wanted = [*(k.id for k in keys), "eco_api_none"]
    hot = await store.read_keys(_hot(db), wanted, Pacer())
    async with db.unit_of_work(readonly=True) as uow:
        through_uow = await store.get_keys(uow.session, wanted)
    assert hot == through_uow == {k.id: k for k in keys}
    assert all(k.create_time.utcoffset() == timedelta(0) for k in hot.values())
    assert await store.read_keys(_hot(db), [], Pacer()) == {}


async def test_a_cut_connection_costs_no_read(db: Database, keys: list[ApiKeyRow]) -> None:
    hot, key = _hot(db), keys[0]
    assert await store.read_keys(hot, [key.id], Pacer()) == {key.id: key}
    (backend,) = await hot.fetch("SELECT pg_backend_pid()", {})
    async with db.unit_of_work() as uow:  # as a PostgreSQL restart would
        await uow.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend[0]})
    assert await store.read_keys(hot, [key.id], Pacer()) == {key.id: key}
    (again,) = await hot.fetch("SELECT pg_backend_pid()", {})
    assert again != backend


async def test_a_cancelled_read_leaves_no_statement_behind(db: Database, keys: list[ApiKeyRow]) -> None:
    hot = _hot(db)
    (backend,) = await hot.fetch("SELECT pg_backend_pid()", {})
    slow = asyncio.ensure_future(hot.fetch("SELECT pg_sleep(30)", {}))
    await asyncio.sleep(0.2)  # the statement is running on the server
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # The connection it was on is closed (mid-statement, its protocol state is unknown); the
    # next read opens another and is not queued behind the sleep.
    assert await asyncio.wait_for(store.read_keys(hot, [keys[0].id], Pacer()), 5) == {keys[0].id: keys[0]}
    (again,) = await hot.fetch("SELECT pg_backend_pid()", {})
    assert again != backend


async def test_last_used_times_are_written_in_one_statement_and_never_go_back(
    db: Database, keys: list[ApiKeyRow]
) -> None:
    now = keys[0].create_time
    later, earlier = now + timedelta(minutes=5), now - timedelta(minutes=5)
    async with db.unit_of_work() as uow:
        await store.write_last_used(uow.session, [(keys[0].id, later), (keys[1].id, later)], Pacer())
    async with db.unit_of_work() as uow:  # an older note (another replica's) loses
        uses = [(keys[0].id, earlier), (keys[2].id, earlier), ("eco_api_none", later)]
        await store.write_last_used(uow.session, uses, Pacer())
    async with db.unit_of_work(readonly=True) as uow:
        found = await store.get_keys(uow.session, [k.id for k in keys])
    assert [found[k.id].last_used_time for k in keys] == [later, later, earlier]
