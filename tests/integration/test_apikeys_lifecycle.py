"""Key lifecycle on both databases with an injected clock: verification and its cache,
revocation across replicas, rotation grace, expiry, batched last use, events, no plaintext."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from nexus_server.apikeys import key_format, workflows
from nexus_server.apikeys.last_used import LastUsed
from nexus_server.apikeys.tables import api_keys
from nexus_server.apikeys.verifier import KeyVerifier
from nexus_server.auth.revocations import Revocations
from nexus_server.common.clock import FrozenClock
from nexus_server.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unauthenticated
from nexus_server.db.engine import create_async
from nexus_server.db.schema import events
from nexus_server.db.uow import Database
from tests.support import unique


@dataclass
class Replica:
    db: Database
    revocations: Revocations
    verifier: KeyVerifier
    last_used: LastUsed
    statements: list[str]


def _replica(url: str, clock: FrozenClock) -> Replica:
    db = Database(create_async(url), clock)
    revocations = Revocations(db)
    last_used = LastUsed(db)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    if db.hot is not None:  # PostgreSQL: the verifier's reads go off the engine; count them too
        fetch = db.hot.fetch

        async def counted(sql: str, params: Any) -> list[tuple[Any, ...]]:
            statements.append(sql)
            return await fetch(sql, params)

        db.hot.fetch = counted  # type: ignore[method-assign]
    return Replica(db, revocations, KeyVerifier(db, revocations, last_used), last_used, statements)


@pytest.fixture
async def clock() -> FrozenClock:
    return FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))


@pytest.fixture
async def replica(database_url: str, clock: FrozenClock) -> AsyncIterator[Replica]:
    r = _replica(database_url, clock)
    yield r
    await r.db.dispose()


@pytest.fixture
async def other_replica(database_url: str, clock: FrozenClock) -> AsyncIterator[Replica]:
    r = _replica(database_url, clock)
    yield r
    await r.db.dispose()


async def _issue(r: Replica, tenant_id: str = "", **kwargs: Any) -> tuple[str, str]:
    async with r.db.unit_of_work() as uow:
        row, full_key = await workflows.issue_key(
            uow,
            tenant_id=tenant_id or unique("ten_"),
            name=kwargs.pop("name", "ci"),
            scopes=kwargs.pop("scopes", ["apikeys:read"]),
            **kwargs,
        )
    return row.id, full_key


async def test_an_issued_key_verifies_as_its_tenant_with_its_scopes(replica: Replica) -> None:
    tenant = unique("ten_")
    key_id, full_key = await _issue(replica, tenant, scopes=["usage:write", "apikeys:read"])
    principal = await replica.verifier.verify_api_key(full_key)
    assert principal.key_id == key_id
    assert principal.tenant_id == tenant
    assert principal.scopes == frozenset({"apikeys:read", "usage:write"})


async def test_a_corrupted_checksum_is_refused_without_any_query(replica: Replica) -> None:
    _, full_key = await _issue(replica)
    corrupted = full_key[:-1] + ("A" if full_key[-1] != "A" else "B")
    replica.statements.clear()
    with pytest.raises(Unauthenticated):
        await replica.verifier.verify_api_key(corrupted)
    assert replica.statements == []


async def test_a_verified_key_is_served_from_cache_without_a_query(replica: Replica) -> None:
    _, full_key = await _issue(replica)
    replica.statements.clear()
    await replica.verifier.verify_api_key(full_key)
    assert any("FROM api_keys" in s for s in replica.statements)  # the miss was read, and seen
    replica.statements.clear()
    for _ in range(20):
        await replica.verifier.verify_api_key(full_key)
    assert replica.statements == []


async def test_a_wrong_secret_for_a_real_id_is_refused(replica: Replica) -> None:
    key_id, _ = await _issue(replica)
    _, other = await _issue(replica)
    forged = key_id + other[len(key_id) :]  # a real id with another key's (well-formed) secret
    forged = forged[:-6] + key_format._checksum(forged[:-6])
    with pytest.raises(Unauthenticated):
        await replica.verifier.verify_api_key(forged)


async def test_a_key_remembered_as_matched_vouches_for_that_exact_text_only(replica: Replica) -> None:
    key_id, full_key = await _issue(replica)
    for _ in range(2):  # the second is answered from the remembered match
        assert (await replica.verifier.verify_api_key(full_key)).key_id == key_id
    forged = full_key[:-7] + ("A" if full_key[-7] != "A" else "B")
    forged += key_format._checksum(forged)
    with pytest.raises(Unauthenticated):
        await replica.verifier.verify_api_key(forged)
    async with replica.db.unit_of_work() as uow:
        await workflows.revoke_key(uow, replica.revocations, (await _tenant(replica, key_id)), key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await replica.verifier.verify_api_key(full_key)


async def test_a_revoked_key_is_refused_here_at_once_and_on_another_replica_after_one_poll(
    replica: Replica, other_replica: Replica
) -> None:
    key_id, full_key = await _issue(replica)
    await other_replica.verifier.verify_api_key(full_key)  # cached over there
    async with replica.db.unit_of_work() as uow:
        row = await workflows.revoke_key(uow, replica.revocations, (await _tenant(replica, key_id)), key_id)
    assert row.revoke_time is not None
    with pytest.raises(Unauthenticated, match="revoked"):
        await replica.verifier.verify_api_key(full_key)
    await other_replica.revocations.poll_once()
    with pytest.raises(Unauthenticated, match="revoked"):
        await other_replica.verifier.verify_api_key(full_key)


async def _tenant(r: Replica, key_id: str) -> str:
    async with r.db.unit_of_work(readonly=True) as uow:
        return str(
            (
                await uow.session.execute(select(api_keys.c.tenant_id).where(api_keys.c.id == key_id))
            ).scalar_one()
        )


async def test_the_previous_secret_works_until_the_grace_period_ends(
    replica: Replica, clock: FrozenClock
) -> None:
    tenant = unique("ten_")
    key_id, old = await _issue(replica, tenant)
    await replica.verifier.verify_api_key(old)
    async with replica.db.unit_of_work() as uow:
        row, new = await workflows.rotate_key(uow, replica.revocations, tenant, key_id, timedelta(hours=1))
    assert row.previous_secret_expire_time == clock.now() + timedelta(hours=1)
    assert (await replica.verifier.verify_api_key(new)).key_id == key_id
    assert (await replica.verifier.check(old)).previous
    clock.advance(timedelta(minutes=59, seconds=59))
    assert (await replica.verifier.verify_api_key(old)).key_id == key_id
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        await replica.verifier.verify_api_key(old)
    assert (await replica.verifier.verify_api_key(new)).key_id == key_id


async def test_rotation_without_grace_refuses_the_old_secret_at_once(replica: Replica) -> None:
    tenant = unique("ten_")
    key_id, old = await _issue(replica, tenant)
    await replica.verifier.verify_api_key(old)
    async with replica.db.unit_of_work() as uow:
        _, new = await workflows.rotate_key(uow, replica.revocations, tenant, key_id, timedelta(0))
    with pytest.raises(Unauthenticated):
        await replica.verifier.verify_api_key(old)
    assert (await replica.verifier.verify_api_key(new)).key_id == key_id


async def test_a_second_rotation_ends_the_first_ones_grace(replica: Replica) -> None:
    tenant = unique("ten_")
    key_id, first = await _issue(replica, tenant)
    async with replica.db.unit_of_work() as uow:
        _, second = await workflows.rotate_key(uow, replica.revocations, tenant, key_id, timedelta(days=1))
    async with replica.db.unit_of_work() as uow:
        _, third = await workflows.rotate_key(uow, replica.revocations, tenant, key_id, timedelta(days=1))
    with pytest.raises(Unauthenticated):
        await replica.verifier.verify_api_key(first)
    assert (await replica.verifier.check(second)).previous
    assert (await replica.verifier.verify_api_key(third)).key_id == key_id


async def test_an_expired_key_is_refused_from_its_expiry_on(replica: Replica, clock: FrozenClock) -> None:
    _, full_key = await _issue(replica, expire_time=clock.now() + timedelta(minutes=5))
    await replica.verifier.verify_api_key(full_key)
    clock.advance(timedelta(minutes=5))
    with pytest.raises(Unauthenticated, match="expired"):
        await replica.verifier.verify_api_key(full_key)


async def test_expiry_publishes_apikey_expired_once(replica: Replica, clock: FrozenClock) -> None:
    tenant = unique("ten_")
    await _issue(replica, tenant, expire_time=clock.now() + timedelta(minutes=5))
    clock.advance(timedelta(minutes=6))
    for _ in range(2):
        async with replica.db.unit_of_work() as uow:
            await workflows.publish_expired(uow)
    assert await _event_types(replica, tenant) == ["apikey.created", "apikey.expired"]


async def test_lifecycle_events_are_published_once_each_without_secrets(replica: Replica) -> None:
    tenant = unique("ten_")
    key_id, full_key = await _issue(replica, tenant)
    async with replica.db.unit_of_work() as uow:
        _, rotated = await workflows.rotate_key(uow, replica.revocations, tenant, key_id, timedelta(0))
    for _ in range(2):
        async with replica.db.unit_of_work() as uow:
            await workflows.revoke_key(uow, replica.revocations, tenant, key_id)
    assert await _event_types(replica, tenant) == ["apikey.created", "apikey.rotated", "apikey.revoked"]
    async with replica.db.unit_of_work(readonly=True) as uow:
        data = [
            str(r.data)
            for r in await uow.session.execute(select(events.c.data).where(events.c.tenant_id == tenant))
        ]
    for secret in (full_key[31:], rotated[31:]):
        assert all(secret not in d for d in data)


async def _event_types(r: Replica, tenant: str) -> list[str]:
    async with r.db.unit_of_work(readonly=True) as uow:
        rows = await uow.session.execute(
            select(events.c.type).where(events.c.tenant_id == tenant).order_by(events.c.sequence)
        )
        return [row.type for row in rows]


async def test_no_plaintext_secret_is_stored(replica: Replica) -> None:
    key_id, full_key = await _issue(replica)
    async with replica.db.unit_of_work(readonly=True) as uow:
        row = (await uow.session.execute(select(api_keys).where(api_keys.c.id == key_id))).mappings().one()
    stored = " ".join(str(v) for v in row.values())
    assert full_key[31:] not in stored
    assert full_key[31:35] not in stored.replace(row["start"], "")


async def test_last_use_is_written_in_one_batch_not_per_call(replica: Replica, clock: FrozenClock) -> None:
    key_id, full_key = await _issue(replica)
    await replica.verifier.verify_api_key(full_key)
    replica.statements.clear()
    for _ in range(10):
        await replica.verifier.verify_api_key(full_key)
    assert not any("UPDATE" in s.upper() for s in replica.statements)
    await replica.last_used.flush()
    assert sum("UPDATE" in s.upper() for s in replica.statements) == 1
    async with replica.db.unit_of_work(readonly=True) as uow:
        used = (
            await uow.session.execute(select(api_keys.c.last_used_time).where(api_keys.c.id == key_id))
        ).scalar_one()
    assert used == clock.now()


async def test_an_update_narrowing_scopes_applies_to_the_cached_key(replica: Replica) -> None:
    tenant = unique("ten_")
    key_id, full_key = await _issue(replica, tenant, scopes=["apikeys:read", "usage:write"])
    await replica.verifier.verify_api_key(full_key)
    async with replica.db.unit_of_work() as uow:
        await workflows.update_key(
            uow, replica.revocations, tenant, key_id, workflows.KeyUpdate(scopes=["apikeys:read"])
        )
    assert (await replica.verifier.verify_api_key(full_key)).scopes == frozenset({"apikeys:read"})


async def test_revoked_and_expired_keys_cannot_be_updated_or_rotated(
    replica: Replica, clock: FrozenClock
) -> None:
    tenant = unique("ten_")
    revoked, _ = await _issue(replica, tenant)
    expired, _ = await _issue(replica, tenant, expire_time=clock.now() + timedelta(seconds=1))
    async with replica.db.unit_of_work() as uow:
        await workflows.revoke_key(uow, replica.revocations, tenant, revoked)
    clock.advance(timedelta(seconds=2))
    for key_id, reason in ((revoked, "API_KEY_REVOKED"), (expired, "API_KEY_EXPIRED")):
        with pytest.raises(FailedPrecondition) as raised:
            async with replica.db.unit_of_work() as uow:
                await workflows.rotate_key(uow, replica.revocations, tenant, key_id, timedelta(0))
        assert raised.value.reason == reason
        with pytest.raises(FailedPrecondition):
            async with replica.db.unit_of_work() as uow:
                await workflows.update_key(
                    uow, replica.revocations, tenant, key_id, workflows.KeyUpdate(name="x")
                )


async def test_a_key_of_another_tenant_is_not_found(replica: Replica) -> None:
    key_id, _ = await _issue(replica)
    with pytest.raises(NotFound):
        async with replica.db.unit_of_work() as uow:
            await workflows.get_key(uow, unique("ten_"), key_id)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "  "}, "api_key.name"),
        ({"name": "x" * 101}, "api_key.name"),
        ({"name": "bad\x00name"}, "api_key.name"),
        ({"scopes": []}, "api_key.scopes"),
        ({"scopes": ["root"]}, "api_key.scopes[0]"),
        ({"environment": "prod"}, "api_key.environment"),
        ({"rate_limit_per_minute": 100_001}, "api_key.rate_limit_per_minute"),
        ({"rate_limit_per_minute": -1}, "api_key.rate_limit_per_minute"),
        ({"expire_time": datetime(2029, 1, 1, tzinfo=UTC)}, "api_key.expire_time"),
    ],
)
async def test_bad_values_are_refused_with_the_field_named(
    replica: Replica, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await _issue(replica, **kwargs)
    assert [v.field for v in raised.value.violations] == [field]


async def test_lists_are_newest_first_and_page_tokens_are_bound_to_their_filters(
    replica: Replica, clock: FrozenClock
) -> None:
    tenant = unique("ten_")
    ids = []
    for _ in range(5):
        ids.append((await _issue(replica, tenant))[0])
        clock.advance(timedelta(seconds=1))
    seen: list[str] = []
    token = ""
    while True:
        async with replica.db.unit_of_work(readonly=True) as uow:
            rows, token = await workflows.list_keys(
                uow, workflows.ListQuery(tenant, page_size=2, page_token=token)
            )
        seen += [r.id for r in rows]
        if not token:
            break
        async with replica.db.unit_of_work(readonly=True) as uow:
            with pytest.raises(InvalidArgument) as raised:
                await workflows.list_keys(
                    uow, workflows.ListQuery(tenant, page_token=token, show_revoked=True)
                )
        assert raised.value.reason == "PAGE_TOKEN_INVALID"
    assert seen == list(reversed(ids))


async def test_made_up_key_ids_fill_a_bounded_cache_and_never_evict_real_keys(
    database_url: str, clock: FrozenClock
) -> None:
    # Anyone can present a well-formed key: the checksum is public. A flood of made-up ids
    # must neither grow memory without bound nor send real keys back to the database.
    r = _replica(database_url, clock)
    r.verifier = KeyVerifier(r.db, r.revocations, r.last_used, max_absent=50)
    try:
        _, real = await _issue(r)
        await r.verifier.verify_api_key(real)
        for _ in range(300):
            made_up = key_format.new_full_key(key_format.new_key_id())
            with pytest.raises(Unauthenticated):
                await r.verifier.verify_api_key(made_up)
        known, absent = r.verifier.cached_count()
        assert known == 1
        assert 0 < absent <= 50
        r.statements.clear()
        await r.verifier.verify_api_key(real)
        assert r.statements == []
    finally:
        await r.db.dispose()
