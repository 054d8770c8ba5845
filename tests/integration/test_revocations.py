"""The revocation feed: applied on commit here, on poll elsewhere, never weakened."""

from __future__ import annotations

from datetime import timedelta

from nexus_server.auth.revocations import Revocations
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database


async def test_revocation_reaches_another_replica_on_poll(database_url: str) -> None:
    writer_db, reader_db = Database(create_async(database_url)), Database(create_async(database_url))
    writer, reader = Revocations(writer_db), Revocations(reader_db)
    heard: list[tuple[str, str]] = []
    # The feed is shared with every other test in the session; listen for ours only.
    reader.on_revoke(
        lambda kind, subject: heard.append((kind, subject)) if subject == "ses_replica_test" else None
    )
    try:
        async with writer_db.unit_of_work() as uow:
            await writer.revoke(uow, "session", "ses_replica_test")
        assert writer.is_revoked("session", "ses_replica_test")
        assert not reader.is_revoked("session", "ses_replica_test")
        await reader.poll_once()
        await reader.poll_once()  # a second read of the same window changes nothing
        assert reader.is_revoked("session", "ses_replica_test")
        assert heard == [("session", "ses_replica_test")]
    finally:
        await writer_db.dispose()
        await reader_db.dispose()


async def test_rolled_back_revocation_never_applies(database_url: str) -> None:
    db = Database(create_async(database_url))
    feed = Revocations(db)
    try:
        try:
            async with db.unit_of_work() as uow:
                await feed.revoke(uow, "user", "usr_rolled_back")
                raise RuntimeError("the change failed")
        except RuntimeError:
            pass
        await feed.poll_once()
        assert not feed.is_revoked("user", "usr_rolled_back")
    finally:
        await db.dispose()


async def test_an_invalidation_signal_never_weakens_a_standing_revocation(database_url: str) -> None:
    db = Database(create_async(database_url))
    feed = Revocations(db)
    try:
        async with db.unit_of_work() as uow:
            await feed.revoke(uow, "apikey", "eco_api_forever")
        async with db.unit_of_work() as uow:
            await feed.revoke(uow, "apikey", "eco_api_forever", until=uow.clock.now())
        async with db.unit_of_work() as uow:
            await feed.revoke(uow, "apikey", "eco_api_later", until=uow.clock.now() + timedelta(hours=1))
        async with db.unit_of_work() as uow:
            await feed.revoke(uow, "apikey", "eco_api_later", until=uow.clock.now())
        assert feed.is_revoked("apikey", "eco_api_forever")
        assert feed.is_revoked("apikey", "eco_api_later")
    finally:
        await db.dispose()
