"""Webhooks from real `nexus serve` processes: kill -9 the server while it is delivering,
restart it, and every event still arrives, in order (SQLite and PostgreSQL); two server
processes on one PostgreSQL deliver each event once per endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus_server.apikeys.workflows import issue_key
from nexus_server.common.ids import new_id
from nexus_server.config import Settings
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from nexus_server.events.webhooks import secrets, workflows
from nexus_server.events.webhooks.rules import EndpointFields
from nexus_server.events.webhooks.tables import webhook_deliveries
from nexus_server.tenants.workflows import create_tenant
from tests.conftest import POSTGRES_URL, _drop_postgres_database, _fresh_postgres_database
from tests.e2e.conftest import SECRET_KEY
from tests.e2e.test_events_processes import Deployment, _deploy
from tests.support import key_metadata, unique
from tests.webhook_receiver import Answer, Receiver

pytestmark = pytest.mark.e2e
WEBHOOKS = {
    "NEXUS_WEBHOOKS_ALLOW_PRIVATE_URLS": "true",
    "NEXUS_WEBHOOKS_TIMEOUT_SECONDS": "2",
    "NEXUS_WEBHOOKS_LEASE_SECONDS": "3",  # a killed server's endpoints are taken over soon
    "NEXUS_WEBHOOKS_POLL_MILLISECONDS": "100",
}


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'nexus.db'}"
        return
    if not POSTGRES_URL:
        pytest.skip("NEXUS_TEST_POSTGRES_URL is not set")
    url, name = _fresh_postgres_database(POSTGRES_URL)
    yield url
    _drop_postgres_database(POSTGRES_URL, name)


async def _tenant_with_endpoints(url: str, urls: list[str]) -> Any:
    """The publishing key (as call metadata) of a new tenant whose endpoints receive at `urls`."""
    db = Database(create_async(url))
    sealer = secrets.sealer(replace(Settings(), secret_key=SECRET_KEY))
    try:
        async with db.unit_of_work() as uow:
            tenant = await create_tenant(
                uow, owner_user_id=new_id("usr"), slug=unique("wh"), display_name="Hooks"
            )
            _, publisher = await issue_key(uow, tenant_id=tenant.id, name="pub", scopes=["events:publish"])
            for target in urls:
                await workflows.create(uow, sealer, tenant.id, EndpointFields(target, (), (), "", True))
    finally:
        await db.dispose()
    return key_metadata(publisher)


async def _publish(address: str, publisher: Any, count: int) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = rpc.EventsServiceStub(channel)
        return [
            (
                await stub.PublishEvent(
                    pb.PublishEventRequest(type="deal.won", source="crm"), metadata=publisher
                )
            ).id
            for _ in range(count)
        ]


async def _statuses(url: str) -> list[str]:
    db = Database(create_async(url))
    try:
        async with db.unit_of_work(readonly=True) as uow:
            return list((await uow.session.execute(select(webhook_deliveries.c.status))).scalars())
    finally:
        await db.dispose()


def _first_arrivals(ids: list[str]) -> list[str]:
    return list(dict.fromkeys(ids))


async def test_kill_9_mid_delivery_loses_no_event(
    database: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with Receiver(lambda _: Answer(204, delay=0.05)) as receiver:
        deployment: Deployment = _deploy(database, tmp_path_factory, 1, **WEBHOOKS)
        server = deployment.servers[0]
        try:
            publisher = await _tenant_with_endpoints(database, [receiver.url()])
            sent = await _publish(server.address, publisher, 40)
            await receiver.wait_for(5)
            server.kill()  # mid-delivery: some attempts made, not all recorded
            arrived_before = len(receiver.requests())
            assert arrived_before < 40
            server.start()
            sent += await _publish(server.address, publisher, 10)
            for _ in range(600):
                if set(receiver.event_ids()) >= set(sent):
                    break
                await asyncio.sleep(0.05)
            assert _first_arrivals(receiver.event_ids()) == sent  # every event, in order
            for _ in range(100):
                if set(await _statuses(database)) == {"succeeded"}:
                    break
                await asyncio.sleep(0.05)
            assert set(await _statuses(database)) == {"succeeded"}
        finally:
            server.stop()


async def test_two_processes_deliver_each_event_once_per_endpoint(
    tmp_path_factory: pytest.TempPathFactory, postgres: str
) -> None:
    url = postgres
    deployment = Deployment(url)
    try:
        with Receiver() as receiver:
            deployment = _deploy(url, tmp_path_factory, 2, **WEBHOOKS)
            one, two = deployment.servers
            publisher = await _tenant_with_endpoints(url, [receiver.url(f"/{n}") for n in range(4)])
            sent: list[str] = []
            for _ in range(5):
                sent += await _publish(one.address, publisher, 6)
                sent += await _publish(two.address, publisher, 6)
            await receiver.wait_for(4 * len(sent), within=60)
            await asyncio.sleep(1.0)  # anything sent twice would arrive by now
            pairs = [(r.path, r.headers["webhook-id"]) for r in receiver.requests()]
            assert len(pairs) == len(set(pairs)) == 4 * len(sent)
            for n in range(4):
                assert [e for p, e in pairs if p == f"/{n}"] == sent  # and in order per endpoint
    finally:
        for server in deployment.servers:
            server.stop()
