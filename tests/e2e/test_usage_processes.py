"""Real `nexus serve` processes: kill -9 a server while RecordUsage and StreamUsage send,
restart it and re-send everything: every acknowledged record is stored once and the rollups
equal the raw records (SQLite and PostgreSQL). And two replicas on one PostgreSQL: a record
accepted by one is counted by CheckQuota on the other at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from nexus.usage.v1 import usage_record_pb2
from nexus.usage.v1 import usage_service_pb2 as pb
from nexus.usage.v1 import usage_service_pb2_grpc as rpc
from nexus_server.db.engine import create_async
from nexus_server.db.uow import Database
from tests.e2e.test_events_processes import Deployment, one_server, two_replicas
from tests.support import key_metadata, stored_usage, usage_tenant

__all__ = ["one_server", "two_replicas"]  # fixtures, shared with the events processes test

BATCH = 100


async def _tenant_key(url: str) -> tuple[str, Any]:
    tenant_id, key = await usage_tenant(url)
    return tenant_id, key_metadata(key)


async def _stored(url: str, tenant_id: str) -> tuple[list[str], int, int]:
    db = Database(create_async(url))
    try:
        stored = await stored_usage(db, tenant_id)
    finally:
        await db.dispose()
    return stored.keys, stored.quantity, stored.rolled_up


async def _until(done: Callable[[], bool], tasks: list[asyncio.Task[None]]) -> None:
    async def wait() -> None:
        while not done():
            assert not any(t.done() for t in tasks), tasks
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), 60)


def _batch(prefix: str, n: int) -> list[usage_record_pb2.UsageRecord]:
    return [
        usage_record_pb2.UsageRecord(
            metric="emails_sent", quantity=i % 5 + 1, idempotency_key=f"{prefix}-{n}-{i}"
        )
        for i in range(BATCH)
    ]


async def test_kill_9_during_record_and_stream_then_resend_stores_every_acknowledged_record_once(
    one_server: Deployment,
) -> None:
    server = one_server.servers[0]
    tenant_id, metadata = await _tenant_key(one_server.url)
    acknowledged: set[str] = set()
    sent: list[list[usage_record_pb2.UsageRecord]] = []
    stop = asyncio.Event()

    async def record_forever() -> None:
        n = 0
        while not stop.is_set():
            async with grpc.aio.insecure_channel(server.address) as channel:
                stub = rpc.UsageServiceStub(channel)
                try:
                    while not stop.is_set():
                        batch = _batch("r", n)
                        sent.append(batch)
                        n += 1
                        await stub.RecordUsage(
                            pb.RecordUsageRequest(records=batch), metadata=metadata, timeout=10
                        )
                        acknowledged.update(r.idempotency_key for r in batch)
                except grpc.aio.AioRpcError:
                    pass  # the server died mid-call: that batch was never acknowledged
            await asyncio.sleep(0.2)

    async def stream_forever() -> None:
        n = 0
        while not stop.is_set():
            batches = [_batch("s", n + i) for i in range(5)]
            n += 5
            sent.extend(batches)

            async def messages(
                batches: list[list[usage_record_pb2.UsageRecord]] = batches,
            ) -> AsyncIterator[Any]:
                for batch in batches:
                    yield pb.StreamUsageRequest(records=batch)
                    await asyncio.sleep(0.01)

            async with grpc.aio.insecure_channel(server.address) as channel:
                try:
                    answer = await rpc.UsageServiceStub(channel).StreamUsage(
                        messages(), metadata=metadata, timeout=10
                    )
                    for batch in batches[: answer.messages_committed]:
                        acknowledged.update(r.idempotency_key for r in batch)
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(record_forever()), asyncio.create_task(stream_forever())]
    try:
        await _until(lambda: len(acknowledged) >= 3000, tasks)
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        before = len(acknowledged)
        await _until(lambda: len(acknowledged) >= before + 2000, tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Re-send everything that was ever sent: what was stored counts as duplicates.
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = rpc.UsageServiceStub(channel)
        for batch in sent:
            answer = await stub.RecordUsage(
                pb.RecordUsageRequest(records=batch), metadata=metadata, timeout=30
            )
            assert answer.rejected == 0
    keys, raw, rolled = await _stored(one_server.url, tenant_id)
    assert len(keys) == len(set(keys))
    assert acknowledged <= set(keys)
    assert set(keys) == {r.idempotency_key for batch in sent for r in batch}
    assert raw == rolled == sum(r.quantity for batch in sent for r in batch)


async def test_a_record_accepted_by_one_replica_is_counted_by_check_quota_on_the_other(
    two_replicas: Deployment,
) -> None:
    a, b = two_replicas.servers
    tenant_id, metadata = await _tenant_key(two_replicas.url)
    async with grpc.aio.insecure_channel(a.address) as on_a, grpc.aio.insecure_channel(b.address) as on_b:
        writer, checker = rpc.UsageServiceStub(on_a), rpc.UsageServiceStub(on_b)
        for n in range(1, 6):
            record = usage_record_pb2.UsageRecord(metric="ai_tokens", quantity=1000, idempotency_key=f"x{n}")
            await writer.RecordUsage(pb.RecordUsageRequest(records=[record]), metadata=metadata)
            check = await checker.CheckQuota(
                pb.CheckQuotaRequest(tenant_id=tenant_id, metric="ai_tokens"), metadata=metadata
            )
            assert check.used == 1000 * n
