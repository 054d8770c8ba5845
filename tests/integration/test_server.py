"""The running skeleton: health, reflection, the chain's error mapping, request ids, graceful stop."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import generate_latest

from nexus.common.v1 import access_pb2
from nexus_server import contract
from nexus_server.app.server import NexusServer, create_server
from nexus_server.common.unimplemented import is_unimplemented
from nexus_server.config import Settings
from tests.support import error_info


async def test_health_reports_serving_overall_and_per_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ["", *contract.SERVICES]:
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING, name


async def test_reflection_lists_six_services_health_and_reflection(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    listed = set()
    async for response in responses:
        listed = {s.name for s in response.list_services_response.service}
        break
    assert set(contract.SERVICES) <= listed
    assert {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= listed


def _unary(channel: grpc.aio.Channel, method: Any) -> tuple[Any, Any]:
    request_cls = message_factory.GetMessageClass(method.input_type)
    call = channel.unary_unary(
        contract.method_path(method),
        request_serializer=request_cls.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )
    return call, request_cls


def _methods(caller: int, *, built: set[str], servicers: dict[str, object] | None = None) -> list[Any]:
    """The unary RPCs for `caller` that no servicer implements: of services not built, and,
    given `servicers`, those a built servicer marks UNIMPLEMENTED."""

    def unbuilt(service: str, name: str) -> bool:
        if service not in built:
            return True
        servicer = (servicers or {}).get(service)
        return servicer is not None and is_unimplemented(getattr(servicer, name, None))

    return [
        m
        for s in contract.services()
        for m in s.methods
        if unbuilt(s.full_name, m.name)
        and not m.client_streaming
        and not m.server_streaming
        and contract.access_rule(m).caller == caller
    ]


async def test_unbuilt_rpc_answers_unimplemented_naming_it(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv, _ = server
    candidates = _methods(
        access_pb2.CALLER_PUBLIC, built=srv.built_services, servicers=srv.capabilities.servicers
    )
    if not candidates:
        pytest.skip("every service is built; no public RPC is left unimplemented")
    method = candidates[0]
    call, request_cls = _unary(channel, method)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(request_cls(), metadata=(("x-request-id", "req-from-client-1"),))
    error = raised.value
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert method.name in (error.details() or "")
    info = error_info(error)
    assert (info.reason, info.domain) == ("NOT_IMPLEMENTED", "nexus.dev")
    assert info.metadata["request_id"] == "req-from-client-1"
    trailing = dict(error.trailing_metadata() or ())
    assert trailing.get("x-request-id") == "req-from-client-1"


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "CREDENTIALS_MISSING"),
        ((("authorization", "Bearer not-a-token"),), "CREDENTIALS_INVALID"),
        ((("x-api-key", "eco_api_garbage.nope"),), "CREDENTIALS_INVALID"),
    ],
)
async def test_every_non_public_rpc_refuses_missing_or_bad_credentials(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    refused = []
    for s in contract.services():
        for method in s.methods:
            if method.client_streaming or contract.access_rule(method).caller == access_pb2.CALLER_PUBLIC:
                continue
            request_cls = message_factory.GetMessageClass(method.input_type)
            path = contract.method_path(method)
            if method.server_streaming:
                stream = channel.unary_stream(path, request_serializer=request_cls.SerializeToString)
                call = stream(request_cls(), metadata=metadata)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    async for _ in call:
                        pass
            else:
                unary = channel.unary_unary(path, request_serializer=request_cls.SerializeToString)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await unary(request_cls(), metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, path
            assert error_info(raised.value).reason == reason, path
            refused.append(path)
    assert len(refused) > 50


async def test_request_id_is_made_when_absent_and_echoed(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    call = stub.Check(health_pb2.HealthCheckRequest())
    await call
    trailing = dict(await call.trailing_metadata())
    assert trailing["x-request-id"].startswith("req_")
    again = stub.Check(health_pb2.HealthCheckRequest())
    await again
    assert dict(await again.trailing_metadata())["x-request-id"] != trailing["x-request-id"]


async def test_metrics_count_calls_by_method_and_code(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    srv, _ = server
    stub = health_pb2_grpc.HealthStub(channel)
    await stub.Check(health_pb2.HealthCheckRequest())
    text = generate_latest(srv.registry).decode()
    assert (
        'nexus_grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health"}'
        in text
    )
    assert "nexus_grpc_server_handling_seconds_bucket" in text


async def test_graceful_stop_ends_open_streams_with_unavailable(settings: Settings) -> None:
    srv, port = await create_server(replace(settings, port=0))
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        first = await stream.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.create_task(srv.stop(grace=5))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while True:
                message = await asyncio.wait_for(stream.read(), 10)
                if message is grpc.aio.EOF:
                    break
        await stopping
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(raised.value).reason == "SERVER_STOPPING"


async def test_graceful_stop_lets_in_flight_unary_calls_finish(settings: Settings) -> None:
    srv, port = await create_server(replace(settings, port=0))
    entered = asyncio.Event()

    async def slow(request: empty_pb2.Empty, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        entered.set()
        await asyncio.sleep(0.5)
        return empty_pb2.Empty()

    handler = grpc.unary_unary_rpc_method_handler(
        slow,
        request_deserializer=empty_pb2.Empty.FromString,
        response_serializer=empty_pb2.Empty.SerializeToString,
    )
    srv.grpc_server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Slow", {"Call": handler}),)
    )
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            "/test.Slow/Call",
            request_serializer=empty_pb2.Empty.SerializeToString,
            response_deserializer=empty_pb2.Empty.FromString,
        )
        in_flight = [asyncio.ensure_future(call(empty_pb2.Empty())) for _ in range(5)]
        await asyncio.wait_for(entered.wait(), 5)
        await asyncio.sleep(0.05)
        stopping = asyncio.create_task(srv.stop(grace=5))
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        await stopping
    assert all(isinstance(r, empty_pb2.Empty) for r in results), results
