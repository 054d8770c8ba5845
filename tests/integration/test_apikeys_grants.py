"""What a caller may give a key through gRPC: an API key only scopes it holds (on create,
update and rotate alike), a tenant admin any scope."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from nexus.apikey.v1 import api_key_pb2
from nexus.apikey.v1 import apikey_service_pb2 as pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.common.ids import new_id
from tests.support import error_info, issue_key, key_metadata, make_tenant, register_user, set_roles

ApiKey = api_key_pb2.ApiKey
WRITER_SCOPES = ["apikeys:read", "apikeys:write", "usage:read"]


@pytest.fixture
async def tenant(server: tuple[NexusServer, int]) -> str:
    return await make_tenant(server[0], new_id("usr"))


@pytest.fixture
async def writer(server: tuple[NexusServer, int], tenant: str) -> str:
    """A key that may manage keys, holding one scope besides: not `*`."""
    return await issue_key(server[0], tenant, WRITER_SCOPES)


def _stub(channel: grpc.aio.Channel) -> rpc.ApiKeyServiceStub:
    return rpc.ApiKeyServiceStub(channel)


def _new_key(scopes: list[str], name: str = "made") -> ApiKey:
    return ApiKey(name=name, scopes=scopes, environment=ApiKey.ENVIRONMENT_LIVE)


async def _key_ids(channel: grpc.aio.Channel, md: Any) -> set[str]:
    page = await _stub(channel).ListApiKeys(pb.ListApiKeysRequest(page_size=1000), metadata=md)
    return {k.id for k in page.api_keys}


def _assert_not_grantable(error: grpc.aio.AioRpcError, scopes: str) -> None:
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert info.reason == "SCOPE_NOT_GRANTABLE"
    assert info.metadata["scopes"] == scopes
    assert scopes.replace(",", ", ") in (error.details() or "")


async def test_a_key_with_apikeys_write_may_not_create_a_star_key(
    channel: grpc.aio.Channel, writer: str
) -> None:
    md = key_metadata(writer)
    before = await _key_ids(channel, md)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _stub(channel).CreateApiKey(pb.CreateApiKeyRequest(api_key=_new_key(["*"])), metadata=md)
    _assert_not_grantable(raised.value, "*")
    assert await _key_ids(channel, md) == before


async def test_a_key_may_not_create_a_key_with_a_scope_it_lacks(
    channel: grpc.aio.Channel, writer: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _stub(channel).CreateApiKey(
            pb.CreateApiKeyRequest(api_key=_new_key(["usage:read", "billing:write", "tenants:write"])),
            metadata=key_metadata(writer),
        )
    _assert_not_grantable(raised.value, "billing:write,tenants:write")


async def test_a_key_may_create_a_key_with_a_subset_of_its_scopes(
    channel: grpc.aio.Channel, writer: str
) -> None:
    created = await _stub(channel).CreateApiKey(
        pb.CreateApiKeyRequest(api_key=_new_key(["usage:read", "apikeys:read"])),
        metadata=key_metadata(writer),
    )
    assert list(created.api_key.scopes) == ["apikeys:read", "usage:read"]
    same = await _stub(channel).CreateApiKey(
        pb.CreateApiKeyRequest(api_key=_new_key(WRITER_SCOPES)), metadata=key_metadata(writer)
    )
    assert list(same.api_key.scopes) == WRITER_SCOPES


async def test_a_key_may_not_add_a_scope_to_itself(channel: grpc.aio.Channel, writer: str) -> None:
    stub, md = _stub(channel), key_metadata(writer)
    own_id = writer.split(".", 1)[0]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateApiKey(
            pb.UpdateApiKeyRequest(
                api_key=ApiKey(id=own_id, scopes=[*WRITER_SCOPES, "billing:write"]),
                update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
            ),
            metadata=md,
        )
    _assert_not_grantable(raised.value, "billing:write")
    got = await stub.GetApiKey(pb.GetApiKeyRequest(id=own_id), metadata=md)
    assert list(got.scopes) == WRITER_SCOPES


async def test_a_key_may_not_widen_another_key_past_its_own_scopes(
    channel: grpc.aio.Channel, writer: str
) -> None:
    stub, md = _stub(channel), key_metadata(writer)
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key=_new_key(["usage:read"])), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateApiKey(
            pb.UpdateApiKeyRequest(
                api_key=ApiKey(id=created.api_key.id, scopes=["*"]),
                update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
            ),
            metadata=md,
        )
    _assert_not_grantable(raised.value, "*")
    narrowed = await stub.UpdateApiKey(
        pb.UpdateApiKeyRequest(
            api_key=ApiKey(id=created.api_key.id, scopes=["apikeys:read", "usage:read"]),
            update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
        ),
        metadata=md,
    )
    assert list(narrowed.scopes) == ["apikeys:read", "usage:read"]


async def test_a_key_may_not_rotate_a_wider_key_to_learn_its_secret(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], tenant: str, writer: str
) -> None:
    stub, md = _stub(channel), key_metadata(writer)
    star = await issue_key(server[0], tenant, ["*"])
    star_id = star.split(".", 1)[0]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.RotateApiKey(pb.RotateApiKeyRequest(id=star_id), metadata=md)
    _assert_not_grantable(raised.value, "*")
    # The refused rotation changed nothing: the star key's secret still works.
    got = await stub.GetApiKey(pb.GetApiKeyRequest(id=star_id), metadata=key_metadata(star))
    assert not got.HasField("rotate_time")


async def test_a_key_may_rotate_a_key_whose_scopes_it_holds(channel: grpc.aio.Channel, writer: str) -> None:
    stub, md = _stub(channel), key_metadata(writer)
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key=_new_key(["usage:read"])), metadata=md)
    rotated = await stub.RotateApiKey(pb.RotateApiKeyRequest(id=created.api_key.id), metadata=md)
    assert rotated.key != created.key and rotated.api_key.HasField("rotate_time")
    own = await stub.RotateApiKey(pb.RotateApiKeyRequest(id=writer.split(".", 1)[0]), metadata=md)
    assert own.api_key.id == writer.split(".", 1)[0]


async def test_a_star_key_may_grant_any_scope(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], tenant: str
) -> None:
    md = key_metadata(await issue_key(server[0], tenant, ["*"]))
    created = await _stub(channel).CreateApiKey(
        pb.CreateApiKeyRequest(api_key=_new_key(["*", "billing:write"])), metadata=md
    )
    assert list(created.api_key.scopes) == ["*", "billing:write"]


async def test_a_tenant_admin_may_grant_any_scope(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], tenant: str
) -> None:
    admin = await register_user(channel)
    await set_roles(server[0], tenant, admin.user_id, ["admin"])
    stub, md = _stub(channel), admin.metadata(tenant)
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key=_new_key(["*"])), metadata=md)
    assert list(created.api_key.scopes) == ["*"]
    narrow = await stub.CreateApiKey(pb.CreateApiKeyRequest(api_key=_new_key(["usage:read"])), metadata=md)
    widened = await stub.UpdateApiKey(
        pb.UpdateApiKeyRequest(
            api_key=ApiKey(id=narrow.api_key.id, scopes=["billing:write", "tenants:write"]),
            update_mask=field_mask_pb2.FieldMask(paths=["scopes"]),
        ),
        metadata=md,
    )
    assert list(widened.scopes) == ["billing:write", "tenants:write"]
    rotated = await stub.RotateApiKey(pb.RotateApiKeyRequest(id=created.api_key.id), metadata=md)
    assert rotated.api_key.scopes == ["*"]
