"""The webhook sender against a real receiver, on a database of its own, driven by a frozen
clock: the retry schedule, holds that keep an endpoint's events in order, 410 and the 5-day
rule disabling an endpoint, leases between two replicas, and the SSRF guard at delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from nexus_server.common.clock import FrozenClock
from nexus_server.common.sealing import Sealer
from nexus_server.db.engine import create_async
from nexus_server.db.migrate import upgrade
from nexus_server.db.schema import events
from nexus_server.db.uow import Database
from nexus_server.events.webhooks import rules, workflows
from nexus_server.events.webhooks.rules import EndpointFields, Status
from nexus_server.events.webhooks.sender import Sender
from nexus_server.events.webhooks.store import DeliveryRow
from nexus_server.events.webhooks.tables import webhook_deliveries, webhook_endpoints
from nexus_server.events.webhooks.worker import Deliverer
from tests.conftest import POSTGRES_URL, _drop_postgres_database, _fresh_postgres_database
from tests.support import unique
from tests.webhook_receiver import Answer, Received, Receiver

START = datetime(2030, 3, 1, tzinfo=UTC)
SEALER = Sealer("webhook-delivery-tests-key", "webhook-secrets")


@dataclass
class World:
    db: Database
    clock: FrozenClock
    mailed: list[tuple[str, str]]

    def deliverer(self, *, resolver: object = None, lease: timedelta = timedelta(seconds=60)) -> Deliverer:
        async def admins(uow: object, tenant_id: str) -> list[str]:
            return [f"admin@{tenant_id}.example"]

        async def mail(uow: object, recipient: str, subject: str, body: str) -> None:
            self.mailed.append((recipient, subject))

        sender = Sender(timeout=timedelta(seconds=2), allow_private=True, resolver=resolver)  # type: ignore[arg-type]
        return Deliverer(
            self.db, self.clock, SEALER, sender, lease=lease, concurrency=16, mail=mail, admins=admins
        )


@pytest.fixture
def own_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own: the session's server must not send these tests' deliveries."""
    if database_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'webhooks.db'}"
        upgrade(url)
        yield url
        return
    url, name = _fresh_postgres_database(POSTGRES_URL)
    upgrade(url)
    yield url
    _drop_postgres_database(POSTGRES_URL, name)


@pytest.fixture
async def world(own_url: str) -> AsyncIterator[World]:
    clock = FrozenClock(START)
    db = Database(create_async(own_url), clock)
    yield World(db, clock, [])
    await db.dispose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


async def _endpoint(
    world: World, url: str, *, tenant_id: str = "", types: tuple[str, ...] = ()
) -> tuple[str, str, str]:
    """(tenant id, endpoint id, secret) of a new endpoint."""
    tenant_id = tenant_id or unique("ten")
    async with world.db.unit_of_work() as uow:
        shown = await workflows.create(uow, SEALER, tenant_id, EndpointFields(url, types, (), "", True))
    return tenant_id, shown.endpoint.id, shown.secret


async def _publish(world: World, tenant_id: str, count: int = 1, type: str = "deal.won") -> list[str]:
    ids = []
    async with world.db.unit_of_work() as uow:
        for n in range(count):
            ids.append((await uow.append_event(type, {"n": n}, tenant_id=tenant_id, source="crm")).id)
    return ids


async def _deliveries(world: World, tenant_id: str, endpoint_id: str) -> list[DeliveryRow]:
    async with world.db.unit_of_work(readonly=True) as uow:
        page = await workflows.list_deliveries(uow, tenant_id, endpoint_id, None, "", 1000, "")
    return [d for d, _ in page.deliveries]


async def _endpoint_row(world: World, endpoint_id: str) -> dict[str, object]:
    async with world.db.unit_of_work(readonly=True) as uow:
        row = (
            await uow.session.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))
        ).one()
    return dict(row._mapping)


async def test_an_event_arrives_signed_so_standardwebhooks_verifies_it(
    world: World, receiver: Receiver
) -> None:
    tenant_id, _, secret = await _endpoint(world, receiver.url())
    [event_id] = await _publish(world, tenant_id)
    deliverer = world.deliverer()
    await deliverer.run_until_idle()
    [request] = receiver.requests()
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["id"] == event_id and payload["type"] == "deal.won" and payload["data"] == {"n": 0}
    assert request.headers["webhook-id"] == event_id
    await deliverer.close()


async def test_a_500_is_retried_on_the_schedule_then_fails(world: World) -> None:
    with Receiver(lambda _: Answer(500, body=b"boom")) as receiver:
        tenant_id, endpoint_id, _ = await _endpoint(world, receiver.url())
        await _publish(world, tenant_id)
        deliverer = world.deliverer()
        await deliverer.run_until_idle()
        assert len(receiver.requests()) == 1
        for attempt, wait in enumerate(rules.SCHEDULE, start=2):
            world.clock.advance(wait * 0.89)  # before the earliest jittered time: nothing
            await deliverer.run_until_idle()
            assert len(receiver.requests()) == attempt - 1
            world.clock.advance(wait * 0.22)  # past the latest
            await deliverer.run_until_idle()
            assert len(receiver.requests()) == attempt
        [delivery] = await _deliveries(world, tenant_id, endpoint_id)
        assert delivery.status == Status.FAILED and delivery.attempt_count == rules.MAX_ATTEMPTS
        assert delivery.response_status_code == 500 and delivery.last_error == "HTTP 500: boom"
        world.clock.advance(timedelta(days=2))
        await deliverer.run_until_idle()
        assert len(receiver.requests()) == rules.MAX_ATTEMPTS  # no attempt after the last
        await deliverer.close()


async def test_a_receiver_down_then_up_gets_every_event_in_order(world: World, receiver: Receiver) -> None:
    tenant_id, endpoint_id, _ = await _endpoint(world, receiver.url())
    deliverer = world.deliverer()
    first = await _publish(world, tenant_id, 3)
    await deliverer.run_until_idle()
    receiver.go_down()
    later = await _publish(world, tenant_id, 5)
    await deliverer.run_until_idle()
    for wait in rules.SCHEDULE[:3]:  # down through three retries
        world.clock.advance(wait * 1.2)
        await deliverer.run_until_idle()
    held = await _endpoint_row(world, endpoint_id)
    assert held["hold_until"] is not None  # the endpoint waits, the later events behind it
    receiver.come_up()
    world.clock.advance(rules.SCHEDULE[3] * 1.2)
    await deliverer.run_until_idle()
    assert receiver.event_ids() == first + later
    statuses = {d.status for d in await _deliveries(world, tenant_id, endpoint_id)}
    assert statuses == {Status.SUCCEEDED}
    await deliverer.close()


async def test_a_refused_event_is_retried_alone_while_the_rest_go_on(world: World) -> None:
    def answer(request: Received) -> Answer:
        return Answer(422) if request.event["data"]["n"] == 0 else Answer(200)

    with Receiver(answer) as receiver:
        tenant_id, endpoint_id, _ = await _endpoint(world, receiver.url())
        ids = await _publish(world, tenant_id, 3)
        deliverer = world.deliverer()
        await deliverer.run_until_idle()
        assert receiver.event_ids() == ids
        by_event = {d.event_id: d for d in await _deliveries(world, tenant_id, endpoint_id)}
        assert by_event[ids[0]].status == Status.RETRYING
        assert by_event[ids[1]].status == by_event[ids[2]].status == Status.SUCCEEDED
        await deliverer.close()


async def test_a_410_disables_the_endpoint_says_so_and_mails_the_admins(world: World) -> None:
    with Receiver(lambda _: Answer(410)) as receiver:
        tenant_id, endpoint_id, _ = await _endpoint(world, receiver.url())
        await _publish(world, tenant_id, 2)
        deliverer = world.deliverer()
        await deliverer.run_until_idle()
        assert len(receiver.requests()) == 1  # the rest are not tried once it is gone
        row = await _endpoint_row(world, endpoint_id)
        assert row["enabled"] is False and row["disabled_reason"] == "gone"
        async with world.db.unit_of_work(readonly=True) as uow:
            told = (
                await uow.session.execute(
                    select(events.c.data).where(
                        events.c.tenant_id == tenant_id, events.c.type == "webhook_endpoint.disabled"
                    )
                )
            ).scalar_one()
        assert told == {"webhook_endpoint_id": endpoint_id, "reason": "gone"}
        assert world.mailed == [(f"admin@{tenant_id}.example", "Your webhook endpoint was disabled")]
        world.clock.advance(timedelta(days=1))
        await deliverer.run_until_idle()
        assert len(receiver.requests()) == 1  # disabled: nothing more
        await deliverer.close()


async def test_an_endpoint_failing_for_five_days_is_disabled(world: World) -> None:
    with Receiver(lambda _: Answer(503)) as receiver:
        tenant_id, endpoint_id, _ = await _endpoint(world, receiver.url())
        deliverer = world.deliverer()
        await _publish(world, tenant_id)
        for _ in range(40):
            await deliverer.run_until_idle()
            if not (await _endpoint_row(world, endpoint_id))["enabled"]:
                break
            world.clock.advance(timedelta(hours=6))
            await _publish(world, tenant_id)
        row = await _endpoint_row(world, endpoint_id)
        assert row["enabled"] is False and row["disabled_reason"] == "failing"
        failing_since = row["failing_since"]
        assert isinstance(failing_since, datetime)
        assert world.clock.now() - failing_since >= rules.DISABLE_AFTER
        assert world.clock.now() - failing_since < rules.DISABLE_AFTER + timedelta(days=1)
        assert len(world.mailed) == 1
        await deliverer.close()


async def test_two_replicas_send_each_event_once(world: World, receiver: Receiver, own_url: str) -> None:
    other_db = Database(create_async(own_url), world.clock)
    try:
        other = World(other_db, world.clock, [])
        endpoints = [await _endpoint(world, receiver.url(f"/{n}")) for n in range(6)]
        for tenant_id, _, _ in endpoints:
            await _publish(world, tenant_id, 20)
        one, two = world.deliverer(), other.deliverer()
        await asyncio.gather(one.run_until_idle(), two.run_until_idle())
        await asyncio.gather(one.run_until_idle(), two.run_until_idle())
        ids = receiver.event_ids()
        assert len(ids) == len(set(ids)) == 120
        await one.close()
        await two.close()
    finally:
        await other_db.dispose()


async def test_a_replica_that_stops_mid_delivery_leaves_it_to_another(world: World) -> None:
    stalled = asyncio.Event()

    def answer(request: Received) -> Answer:
        return Answer(204, delay=0.0 if stalled.is_set() else 1.5)

    with Receiver(answer) as receiver:
        tenant_id, endpoint_id, _ = await _endpoint(world, receiver.url())
        [event_id] = await _publish(world, tenant_id)
        dying = world.deliverer()
        await dying.fan_out()
        await dying.claim()
        await receiver.wait_for(1)
        await dying.close()  # killed mid-attempt: nothing recorded, the lease still held
        stalled.set()
        other = world.deliverer()
        await other.run_until_idle()
        assert len(receiver.requests()) == 1  # the lease still holds
        world.clock.advance(timedelta(seconds=61))
        await other.run_until_idle()
        assert receiver.event_ids() == [event_id, event_id]  # at least once, same webhook-id
        [delivery] = await _deliveries(world, tenant_id, endpoint_id)
        assert delivery.status == Status.SUCCEEDED and delivery.attempt_count == 1
        await other.close()


async def test_a_name_that_resolves_to_a_private_address_is_refused_at_delivery(
    world: World, receiver: Receiver
) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    tenant_id, endpoint_id, _ = await _endpoint(world, f"https://hooks.example.com:{receiver.port}/x")
    await _publish(world, tenant_id)
    sender = Sender(timeout=timedelta(seconds=2), allow_private=False, resolver=rebinding)
    deliverer = Deliverer(world.db, world.clock, SEALER, sender, lease=timedelta(seconds=60), concurrency=4)
    await deliverer.run_until_idle()
    [delivery] = await _deliveries(world, tenant_id, endpoint_id)
    assert delivery.status == Status.RETRYING and delivery.response_status_code == 0
    assert "private" in delivery.last_error
    assert receiver.requests() == []
    await deliverer.close()


async def test_filters_choose_what_an_endpoint_receives(world: World, receiver: Receiver) -> None:
    tenant_id, _, _ = await _endpoint(world, receiver.url(), types=("deal.*",))
    wanted = await _publish(world, tenant_id, 2, "deal.won")
    await _publish(world, tenant_id, 2, "contact.created")
    deliverer = world.deliverer()
    await deliverer.run_until_idle()
    assert receiver.event_ids() == wanted
    await deliverer.close()


async def test_a_slow_endpoint_never_delays_another(world: World) -> None:
    def answer(request: Received) -> Answer:
        return Answer(204, delay=0.4 if request.path == "/slow" else 0.0)

    with Receiver(answer) as receiver:
        slow_tenant, _, _ = await _endpoint(world, receiver.url("/slow"))
        fast_tenant, _, _ = await _endpoint(world, receiver.url("/fast"))
        await _publish(world, slow_tenant, 4)
        await _publish(world, fast_tenant, 10)
        deliverer = world.deliverer()
        await deliverer.run_until_idle()
        arrivals = receiver.requests()
        fast = [r.at for r in arrivals if r.path == "/fast"]
        slow = [r.at for r in arrivals if r.path == "/slow"]
        assert len(fast) == 10 and len(slow) == 4
        assert max(fast) < slow[1]  # all ten fast ones while the slow one was on its first two
        await deliverer.close()


async def test_an_endpoint_made_while_another_lags_gets_only_later_events(
    world: World, receiver: Receiver
) -> None:
    tenant_id, lagging, _ = await _endpoint(world, receiver.url("/old"))
    await _publish(world, tenant_id, 1_200)  # more than one fan-out step reads
    _, fresh, _ = await _endpoint(world, receiver.url("/new"), tenant_id=tenant_id)
    later = await _publish(world, tenant_id, 2)
    deliverer = world.deliverer()
    await deliverer.fan_out()
    made_fresh = sorted(await _deliveries(world, tenant_id, fresh), key=lambda d: d.event_sequence)
    assert [d.event_id for d in made_fresh] == later  # ids made in one millisecond do not sort
    async with world.db.unit_of_work(readonly=True) as uow:
        made = await uow.session.execute(
            select(func.count())
            .select_from(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == lagging)
        )
    assert made.scalar_one() == 1_202
    await deliverer.close()


async def test_secrets_are_resealed_after_the_secret_key_rotates(world: World) -> None:
    from cryptography.exceptions import InvalidTag

    from nexus_server.events.webhooks import secrets

    old, new = "the-old-secret-key-0123456789", "the-new-secret-key-0123456789"
    before = Sealer(old, secrets.PURPOSE)
    async with world.db.unit_of_work() as uow:
        shown = await workflows.create(
            uow, before, unique("ten"), EndpointFields("https://example.com/h", (), (), "", True)
        )
    rotating = Sealer(new, secrets.PURPOSE, previous=old)
    assert await secrets.reseal_all(world.db, rotating) == 1
    stored = (await _endpoint_row(world, shown.endpoint.id))["secret"]
    assert isinstance(stored, bytes)
    assert Sealer(new, secrets.PURPOSE).open(stored).decode() == shown.secret  # the new key alone opens it
    with pytest.raises(InvalidTag):
        before.open(stored)
    assert await secrets.reseal_all(world.db, rotating) == 0  # nothing left to do
