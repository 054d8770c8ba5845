"""The engines: database errors never carry bound values, SQLite syncs every commit, and
`one_of` reads the same rows on both backends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError

from nexus_server.db.dialect import one_of
from nexus_server.db.engine import create_async, create_sync
from nexus_server.db.uow import Database
from nexus_server.identity.tables import mail_outbox
from tests.support import unique

SECRET = "bound-value-that-must-not-be-logged@example.com"


async def test_an_integrity_error_does_not_show_the_bound_values(database_url: str) -> None:
    db = Database(create_async(database_url))
    row_id = unique("mail_")[:40]
    values = {"id": row_id, "recipient": SECRET, "message": b"x", "attempts": 0}
    try:
        async with db.unit_of_work() as uow:
            now = uow.clock.now() + timedelta(days=365)  # never due for the session's mailer
            await uow.session.execute(
                insert(mail_outbox).values(create_time=now, next_attempt_time=now, **values)
            )
        with pytest.raises(IntegrityError) as raised:
            async with db.unit_of_work() as uow:
                now = uow.clock.now() + timedelta(days=365)  # never due for the session's mailer
                await uow.session.execute(
                    insert(mail_outbox).values(create_time=now, next_attempt_time=now, **values)
                )
        # (PostgreSQL's own DETAIL names the duplicate key; the other bound values appear nowhere.)
        assert SECRET not in str(raised.value)
        assert "parameters hidden" in str(raised.value)
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(mail_outbox.delete().where(mail_outbox.c.id == row_id))
        await db.dispose()


def test_the_blocking_engine_hides_them_too(database_url: str) -> None:
    engine = create_sync(database_url)
    try:
        with pytest.raises(Exception) as raised, engine.connect() as conn:
            conn.execute(text("SELECT * FROM no_such_table WHERE x = :x"), {"x": SECRET})
        assert SECRET not in str(raised.value)
    finally:
        engine.dispose()


async def test_sqlite_syncs_every_commit(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("a SQLite setting")
    db = Database(create_async(database_url))
    try:
        async with db.unit_of_work(readonly=True) as uow:
            level = (await uow.session.execute(text("PRAGMA synchronous"))).scalar_one()
        assert level == 2  # FULL (NORMAL is 1)
    finally:
        await db.dispose()


async def test_one_of_reads_the_rows_an_in_list_would(database_url: str) -> None:
    db = Database(create_async(database_url))
    ids = [unique("mail_")[:40] for _ in range(300)]
    try:
        async with db.unit_of_work() as uow:
            now = uow.clock.now() + timedelta(days=365)  # never due for the session's mailer
            rows = [{"id": i, "recipient": "x@example.com", "message": b"x", "attempts": 0} for i in ids]
            await uow.session.execute(
                insert(mail_outbox).values(create_time=now, next_attempt_time=now), rows
            )
        wanted = [*ids[::3], "mail_missing"]
        async with db.unit_of_work(readonly=True) as uow:
            query = select(mail_outbox.c.id).where(one_of(uow.session, mail_outbox.c.id, wanted))
            found = set((await uow.session.execute(query)).scalars())
            compiled = str(query.compile(uow.session.get_bind()))
            none = select(mail_outbox.c.id).where(one_of(uow.session, mail_outbox.c.id, []))
            assert list((await uow.session.execute(none)).scalars()) == []
        assert found == set(ids[::3])
        # PostgreSQL gets one array parameter, not one per value.
        assert ("ANY" in compiled) == database_url.startswith("postgresql")
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(mail_outbox.delete().where(mail_outbox.c.id.in_(ids)))
        await db.dispose()
