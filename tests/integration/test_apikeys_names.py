"""A key's name through gRPC hides nothing: bidirectional controls and zero-width characters
are refused on create and update, as in tenant names."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from nexus.apikey.v1 import api_key_pb2
from nexus.apikey.v1 import apikey_service_pb2 as pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.common.ids import new_id
from tests.support import field_violations, issue_key, key_metadata, make_tenant

ApiKey = api_key_pb2.ApiKey
# An override that makes "backend‮txt.exe" read as "backendexe.txt", and invisible ones.
HIDDEN = ["\u202e", "\u2067", "\u200b", "\u200f", "\ufeff"]


@pytest.fixture
async def md(server: tuple[NexusServer, int]) -> tuple[tuple[str, str], ...]:
    tenant = await make_tenant(server[0], new_id("usr"))
    return key_metadata(await issue_key(server[0], tenant, ["apikeys:read", "apikeys:write"]))


@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
async def test_create_refuses_a_name_with_hidden_characters(
    channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...], hidden: str
) -> None:
    key = ApiKey(name=f"backend{hidden}txt.exe", scopes=["apikeys:read"], environment=ApiKey.ENVIRONMENT_LIVE)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rpc.ApiKeyServiceStub(channel).CreateApiKey(pb.CreateApiKeyRequest(api_key=key), metadata=md)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["api_key.name"]


@pytest.mark.parametrize("hidden", HIDDEN, ids=lambda c: f"U+{ord(c):04X}")
async def test_update_refuses_a_name_with_hidden_characters(
    channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...], hidden: str
) -> None:
    stub = rpc.ApiKeyServiceStub(channel)
    key = ApiKey(name="backend", scopes=["apikeys:read"], environment=ApiKey.ENVIRONMENT_LIVE)
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key=key), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateApiKey(
            pb.UpdateApiKeyRequest(
                api_key=ApiKey(id=created.api_key.id, name=f"{hidden}backend"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=md,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == ["api_key.name"]
    got = await stub.GetApiKey(pb.GetApiKeyRequest(id=created.api_key.id), metadata=md)
    assert got.name == "backend"


async def test_a_name_in_any_script_is_kept(
    channel: grpc.aio.Channel, md: tuple[tuple[str, str], ...]
) -> None:
    key = ApiKey(name="Ünïcode — 東京 ✓ مرحبا", scopes=["apikeys:read"], environment=ApiKey.ENVIRONMENT_LIVE)
    created = await rpc.ApiKeyServiceStub(channel).CreateApiKey(
        pb.CreateApiKeyRequest(api_key=key), metadata=md
    )
    assert created.api_key.name == "Ünïcode — 東京 ✓ مرحبا"
