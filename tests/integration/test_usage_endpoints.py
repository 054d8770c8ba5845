"""Metering through a real server: N authenticated calls are N `api_calls` records once the
server has stopped gracefully, unauthenticated and health calls are not metered, and
GetEndpointStats reports the calls per method with their codes."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, select

from nexus.usage.v1 import usage_service_pb2 as pb
from nexus.usage.v1 import usage_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer, create_server
from nexus_server.config import Settings
from nexus_server.usage.tables import usage_daily, usage_records
from tests.support import issue_key, key_metadata, make_tenant, reason, register_user


async def _api_calls(srv: NexusServer, tenant_id: str) -> tuple[int, int]:
    async with srv.db.unit_of_work(readonly=True) as uow:
        raw = (
            await uow.session.execute(
                select(func.count()).where(
                    usage_records.c.tenant_id == tenant_id, usage_records.c.metric == "api_calls"
                )
            )
        ).scalar_one()
        rolled = (
            await uow.session.execute(
                select(func.coalesce(func.sum(usage_daily.c.quantity), 0)).where(
                    usage_daily.c.tenant_id == tenant_id, usage_daily.c.metric == "api_calls"
                )
            )
        ).scalar_one()
    return int(raw), int(rolled)


async def test_n_authenticated_calls_are_n_api_calls_records_after_a_graceful_stop(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, settings: Settings
) -> None:
    owner = await register_user(channel)
    tenant_id = await make_tenant(server[0], owner.user_id)
    key = key_metadata(await issue_key(server[0], tenant_id, ["usage:read"]))
    # A server of its own on the session's database, so that it can be stopped: whatever its
    # flushes have not written by then, the graceful stop writes.
    srv, port = await create_server(settings)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as own:
            stub = rpc.UsageServiceStub(own)
            for _ in range(40):
                await stub.CheckQuota(
                    pb.CheckQuotaRequest(tenant_id=tenant_id, metric="ai_tokens"), metadata=key
                )
            for _ in range(3):  # refused calls of an authenticated caller count too
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.CheckQuota(
                        pb.CheckQuotaRequest(tenant_id=tenant_id, metric="Bad"), metadata=key
                    )
                assert reason(refused.value) == "INVALID_REQUEST"
            with pytest.raises(grpc.aio.AioRpcError):  # no credentials: not metered
                await stub.CheckQuota(pb.CheckQuotaRequest(tenant_id=tenant_id, metric="ai_tokens"))
            await health_pb2_grpc.HealthStub(own).Check(health_pb2.HealthCheckRequest())
    finally:
        await srv.stop(grace=1)
    assert await _api_calls(server[0], tenant_id) == (43, 43)


async def test_endpoint_stats_count_the_calls_of_each_method_with_their_codes(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    owner = await register_user(channel)
    tenant_id = await make_tenant(server[0], owner.user_id)
    key = key_metadata(await issue_key(server[0], tenant_id, ["usage:read"]))
    key_id = key[0][1].removeprefix("Bearer ").split(".")[0]
    stub = rpc.UsageServiceStub(channel)
    for _ in range(5):
        await stub.CheckQuota(pb.CheckQuotaRequest(tenant_id=tenant_id, metric="ai_tokens"), metadata=key)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.CheckQuota(pb.CheckQuotaRequest(tenant_id=tenant_id, metric="Bad"), metadata=key)
    check = "/nexus.usage.v1.UsageService/CheckQuota"

    async def until_counted() -> pb.GetEndpointStatsResponse:
        while True:  # metering writes at least once a second
            stats: pb.GetEndpointStatsResponse = await stub.GetEndpointStats(
                pb.GetEndpointStatsRequest(tenant_id=tenant_id, api_key_id=key_id),
                metadata=owner.metadata(tenant_id),
            )
            rows = {e.method: e for e in stats.endpoints}
            if check in rows and rows[check].calls >= 6:
                return stats
            await asyncio.sleep(0.1)

    stats = await asyncio.wait_for(until_counted(), 10)
    (row,) = [e for e in stats.endpoints if e.method == check]
    assert (row.calls, row.errors, dict(row.calls_by_code)) == (6, 1, {"OK": 5, "INVALID_ARGUMENT": 1})
    assert row.p50_latency.ToTimedelta() <= row.p95_latency.ToTimedelta() <= row.p99_latency.ToTimedelta()
    assert row.project == ""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetEndpointStats(
            pb.GetEndpointStatsRequest(tenant_id=tenant_id, api_key_id="nope"),
            metadata=owner.metadata(tenant_id),
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
