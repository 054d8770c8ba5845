"""The rate-limit layer through gRPC: fields on every response, rich refusals, limits charged
together, overrides as data, and the Redis backend (shared counters, and Redis down)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from nexus.apikey.v1 import apikey_service_pb2 as pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer, create_server
from nexus_server.common.ids import new_id
from nexus_server.config import Settings
from nexus_server.ratelimit.overrides import set_override
from tests.conftest import REDIS_URL
from tests.support import issue_key, key_metadata, make_tenant, register_user, status_detail


async def _list(
    channel: grpc.aio.Channel, key: str, *, extra: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.UnaryUnaryCall[Any, Any]:
    call = rpc.ApiKeyServiceStub(channel).ListApiKeys(
        pb.ListApiKeysRequest(page_size=1), metadata=(*key_metadata(key), *extra)
    )
    await call
    return call


async def _refused(channel: grpc.aio.Channel, key: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _list(channel, key)
    return raised.value


async def test_every_response_carries_the_ratelimit_fields(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    tenant = await make_tenant(server[0], new_id("usr"))
    key = await issue_key(server[0], tenant, ["apikeys:read"], rate_limit_per_minute=50)
    call = await _list(channel, key)
    # Native gRPC: in trailers (no extra write per call).
    fields = dict(await call.trailing_metadata())
    assert fields["ratelimit-policy"] == '"apikey";q=50;w=60, "tenant";q=12000;w=60'
    assert fields["ratelimit"].startswith('"apikey";r=49;t=')


async def test_transcoded_http_calls_get_the_ratelimit_fields_as_headers(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    # Envoy's transcoder drops custom trailers of unary calls, so requests it made (it
    # marks them with x-envoy-original-path) get the fields as initial metadata.
    tenant = await make_tenant(server[0], new_id("usr"))
    key = await issue_key(server[0], tenant, ["apikeys:read"], rate_limit_per_minute=50)
    call = await _list(channel, key, extra=(("x-envoy-original-path", "/v1/api-keys?page_size=1"),))
    headers = dict(await call.initial_metadata())
    assert headers["ratelimit-policy"] == '"apikey";q=50;w=60, "tenant";q=12000;w=60'
    assert headers["ratelimit"].startswith('"apikey";r=49;t=')


async def test_a_spent_key_is_refused_with_retry_info_quota_failure_and_error_info(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    tenant = await make_tenant(server[0], new_id("usr"))
    key = await issue_key(server[0], tenant, ["apikeys:read"], rate_limit_per_minute=3)
    for _ in range(3):
        await _list(channel, key)
    error = await _refused(channel, key)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_detail(error, error_details_pb2.ErrorInfo).reason == "RATE_LIMITED"
    assert status_detail(error, error_details_pb2.RetryInfo).retry_delay.ToTimedelta().total_seconds() > 0
    violation = status_detail(error, error_details_pb2.QuotaFailure).violations[0]
    assert violation.subject.startswith("apikey:eco_api_") and "3 calls per minute" in violation.description
    trailing = dict(error.trailing_metadata() or ())
    assert trailing["ratelimit"].startswith('"apikey";r=0;')


async def test_a_call_refused_by_one_limit_burns_nothing_in_the_others(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    srv = server[0]
    tenant = await make_tenant(srv, new_id("usr"))
    async with srv.db.unit_of_work() as uow:
        await set_override(uow, srv.ctx.revocations, "tenant", tenant, 5)
    small = await issue_key(srv, tenant, ["apikeys:read"], rate_limit_per_minute=3)
    large = await issue_key(srv, tenant, ["apikeys:read"], rate_limit_per_minute=1000)
    for _ in range(3):
        await _list(channel, small)
    for _ in range(4):  # refused by the key's own limit: the tenant is not charged
        assert (await _refused(channel, small)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for _ in range(2):  # 5 - 3: the tenant's allowance left for the other key
        await _list(channel, large)
    error = await _refused(channel, large)
    assert status_detail(error, error_details_pb2.QuotaFailure).violations[0].subject == f"tenant:{tenant}"


async def test_a_tenant_override_applies_without_restart(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    srv = server[0]
    tenant = await make_tenant(srv, new_id("usr"))
    key = await issue_key(srv, tenant, ["apikeys:read"])
    await _list(channel, key)
    async with srv.db.unit_of_work() as uow:
        await set_override(uow, srv.ctx.revocations, "tenant", tenant, 2)
    call = await _list(channel, key)
    assert '"tenant";q=2;w=60' in dict(await call.trailing_metadata())["ratelimit-policy"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def _server(settings: Settings) -> AsyncIterator[tuple[NexusServer, grpc.aio.Channel]]:
    srv, port = await create_server(settings)
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield srv, channel
    finally:
        await srv.stop(grace=1)


@pytest.mark.parametrize("mode", ["local", "open", "closed"])
async def test_when_redis_is_down_the_configured_mode_decides(settings: Settings, mode: str) -> None:
    down = replace(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0", ratelimit_on_redis_down=mode)
    async with _server(down) as (srv, channel):
        tenant = await make_tenant(srv, new_id("usr"))
        key = await issue_key(srv, tenant, ["apikeys:read"], rate_limit_per_minute=2)
        outcomes = []
        for _ in range(3):
            try:
                await _list(channel, key)
                outcomes.append("ok")
            except grpc.aio.AioRpcError as error:
                outcomes.append(error.code().name)
    expected = {
        "local": ["ok", "ok", "RESOURCE_EXHAUSTED"],
        "open": ["ok", "ok", "ok"],
        "closed": ["RESOURCE_EXHAUSTED"] * 3,
    }
    assert outcomes == expected[mode]


@pytest.mark.skipif(not REDIS_URL, reason="NEXUS_TEST_REDIS_URL is not set")
async def test_two_servers_sharing_redis_share_one_limit(settings: Settings) -> None:
    shared = replace(settings, redis_url=REDIS_URL, ratelimit_on_redis_down="closed")
    async with _server(shared) as (a, channel_a), _server(shared) as (_, channel_b):
        tenant = await make_tenant(a, new_id("usr"))
        key = await issue_key(a, tenant, ["apikeys:read"], rate_limit_per_minute=4)
        for channel in (channel_a, channel_b, channel_a, channel_b):
            await _list(channel, key)
        for channel in (channel_a, channel_b):
            assert (await _refused(channel, key)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_stranger_naming_a_tenant_cannot_spend_its_allowance(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int]
) -> None:
    # RPCs any signed-in person may call take x-tenant-id without a membership check; what
    # they charge must be the person's own limit only, or anyone could drain a tenant's.
    from nexus.identity.v1 import identity_service_pb2 as ipb
    from nexus.identity.v1 import identity_service_pb2_grpc as irpc

    srv = server[0]
    victim = await make_tenant(srv, new_id("usr"))
    async with srv.db.unit_of_work() as uow:
        await set_override(uow, srv.ctx.revocations, "tenant", victim, 3)
    key = await issue_key(srv, victim, ["apikeys:read"])
    stranger = await register_user(channel)
    identity = irpc.IdentityServiceStub(channel)
    for _ in range(5):
        call = identity.GetCurrentUser(ipb.GetCurrentUserRequest(), metadata=stranger.metadata(victim))
        await call
        assert '"tenant"' not in dict(await call.trailing_metadata())["ratelimit-policy"]
    for _ in range(3):  # the tenant's whole allowance is still its own
        await _list(channel, key)
