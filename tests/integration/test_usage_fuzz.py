"""Fuzz: every UsageService RPC driven with generated messages (random and huge strings,
unicode, extreme numbers and timestamps, missing and unknown fields) never answers INTERNAL
or UNKNOWN; a refused request stores nothing, and an accepted batch grows the stored records
and rollups by exactly what it says it accepted (a rejected record changes nothing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.usage.v1 import usage_service_pb2 as pb
from nexus_server import contract
from nexus_server.app.server import NexusServer
from tests.fuzzing import UNKNOWN_FIELD, assert_not_internal, messages, raw_call, service_methods
from tests.support import (
    User,
    issue_key,
    key_metadata,
    make_tenant,
    platform_admin,
    register_user,
    stored_usage,
)


def _strings(tenant_id: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=80),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=70),
        st.sampled_from(
            ["", tenant_id, "api_calls", "nexus.x", "ai_tokens", "emails_sent", "eco_api_" + "A" * 22]
        ),
        st.integers(130, 70_000).map(lambda n: "x" * n),
    )


async def _stored(server: NexusServer, tenant_id: str) -> tuple[int, int]:
    stored = await stored_usage(server.db, tenant_id)
    return len(stored.keys), stored.rolled_up


_worlds: dict[tuple[str, str], tuple[str, Any]] = {}


async def _world(
    server: NexusServer, channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> tuple[str, Any]:
    key = (server.settings.database_url, method.name)
    if key not in _worlds:
        owner = await register_user(channel)
        tenant_id = await make_tenant(server, owner.user_id)
        rule = contract.access_rule(method)
        metadata: Any
        if rule.key_scope and not rule.caller:
            metadata = key_metadata(await issue_key(server, tenant_id, ["usage:write", "usage:read"]))
        elif rule.caller == 6:  # CALLER_PLATFORM_ADMIN
            admin: User = await platform_admin(server, channel)
            metadata = admin.metadata()
        else:
            metadata = owner.metadata(tenant_id)
        _worlds[key] = (tenant_id, metadata)
    return _worlds[key]


def _accepted(method: descriptor.MethodDescriptor, answer: bytes) -> int:
    if method.name == "RecordUsage":
        return pb.RecordUsageResponse.FromString(answer).accepted
    if method.name == "StreamUsage":
        return int(pb.StreamUsageResponse.FromString(answer).accepted)
    return 0


@pytest.mark.parametrize("method", service_methods("nexus.usage.v1.UsageService"), ids=lambda m: m.name)
async def test_generated_requests_never_fail_internally_and_store_only_what_was_accepted(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> None:
    tenant_id, metadata = await _world(server[0], channel, method)
    drawn: list[tuple[Any, bool]] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=messages(method.input_type, _strings(tenant_id), max_repeated=8), unknown=st.booleans())
    def draw(request: Any, unknown: bool) -> None:
        drawn.append((request, unknown))

    draw()
    for request, unknown in drawn:
        wire = request.SerializeToString() + (UNKNOWN_FIELD if unknown else b"")
        before = await _stored(server[0], tenant_id)
        try:
            if method.client_streaming:
                answer = await _stream(channel, method, [wire, wire], metadata)
            else:
                answer = await raw_call(channel, method)(wire, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            assert_not_internal(error, f"{method.name}({request!r:.300}) → ")
            if not method.client_streaming:  # a stream keeps the messages before the bad one
                assert await _stored(server[0], tenant_id) == before
            continue
        records, _ = await _stored(server[0], tenant_id)
        assert records - before[0] == _accepted(method, answer)


async def _stream(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, wires: list[bytes], metadata: Any
) -> bytes:
    call = channel.stream_unary(
        contract.method_path(method), request_serializer=None, response_deserializer=None
    )

    async def requests() -> AsyncIterator[bytes]:
        for wire in wires:
            yield wire

    answer: bytes = await call(requests(), metadata=metadata)
    return answer
