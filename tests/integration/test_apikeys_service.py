"""ApiKeyService through gRPC: lifecycle, scopes per RPC, tenant isolation, VerifyApiKey answers."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.rpc import error_details_pb2
from sqlalchemy import event

from nexus.apikey.v1 import api_key_pb2
from nexus.apikey.v1 import apikey_service_pb2 as pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.common.ids import new_id
from tests.support import error_info, field_violations, issue_key, key_metadata, make_tenant, status_detail

ApiKey = api_key_pb2.ApiKey
Reason = pb.VerifyApiKeyResponse


@pytest.fixture
async def tenant(server: tuple[NexusServer, int]) -> str:
    return await make_tenant(server[0], new_id("usr"))


@pytest.fixture
async def admin_key(server: tuple[NexusServer, int], tenant: str) -> str:
    # A key gives only scopes it holds, so it holds the ones these tests give out.
    scopes = ["apikeys:read", "apikeys:write", "auth:introspect", "usage:read", "usage:write"]
    return await issue_key(server[0], tenant, scopes)


def _stub(channel: grpc.aio.Channel) -> rpc.ApiKeyServiceStub:
    return rpc.ApiKeyServiceStub(channel)


async def _create(channel: grpc.aio.Channel, key: str, **fields: Any) -> pb.CreateApiKeyResponse:
    fields.setdefault("name", "backend")
    fields.setdefault("scopes", ["apikeys:read"])
    fields.setdefault("environment", ApiKey.ENVIRONMENT_LIVE)
    response: pb.CreateApiKeyResponse = await _stub(channel).CreateApiKey(
        pb.CreateApiKeyRequest(api_key=ApiKey(**fields)), metadata=key_metadata(key)
    )
    return response


async def test_create_returns_the_full_key_once_and_get_never_shows_it(
    channel: grpc.aio.Channel, admin_key: str, tenant: str
) -> None:
    created = await _create(channel, admin_key, scopes=["usage:write", "apikeys:read", "usage:write"])
    record = created.api_key
    assert len(created.key) == 69 and created.key.startswith(record.id + ".")
    assert record.tenant_id == tenant
    assert list(record.scopes) == ["apikeys:read", "usage:write"]
    assert record.rate_limit_per_minute == 100
    assert record.state == ApiKey.STATE_ACTIVE
    assert record.start == created.key[:35]
    got = await _stub(channel).GetApiKey(pb.GetApiKeyRequest(id=record.id), metadata=key_metadata(admin_key))
    assert created.key[31:] not in got.SerializeToString().decode("latin-1")
    assert got.id == record.id and got.start == record.start


async def test_the_new_key_authenticates_with_either_header(
    channel: grpc.aio.Channel, admin_key: str
) -> None:
    created = await _create(channel, admin_key)
    stub = _stub(channel)
    request = pb.GetApiKeyRequest(id=created.api_key.id)
    assert (await stub.GetApiKey(request, metadata=key_metadata(created.key))).id == created.api_key.id
    assert (await stub.GetApiKey(request, metadata=(("x-api-key", created.key),))).id == created.api_key.id


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("CreateApiKey", pb.CreateApiKeyRequest()),
        ("UpdateApiKey", pb.UpdateApiKeyRequest()),
        ("RotateApiKey", pb.RotateApiKeyRequest()),
        ("RevokeApiKey", pb.RevokeApiKeyRequest()),
        ("VerifyApiKey", pb.VerifyApiKeyRequest()),
    ],
)
async def test_a_read_only_key_may_not_call_writing_rpcs(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], tenant: str, method: str, request_: Any
) -> None:
    reader = await issue_key(server[0], tenant, ["apikeys:read"])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(_stub(channel), method)(request_, metadata=key_metadata(reader))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(raised.value).reason == "MISSING_SCOPE"


@pytest.mark.parametrize("method", ["ListApiKeys", "GetApiKey"])
async def test_a_key_without_read_scope_may_not_read(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], tenant: str, method: str
) -> None:
    other = await issue_key(server[0], tenant, ["usage:write"])
    request_ = pb.ListApiKeysRequest() if method == "ListApiKeys" else pb.GetApiKeyRequest(id="x")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(_stub(channel), method)(request_, metadata=key_metadata(other))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_star_key_may_call_everything(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], tenant: str
) -> None:
    star = await issue_key(server[0], tenant, ["*"])
    created = await _create(channel, star)
    answer = await _stub(channel).VerifyApiKey(
        pb.VerifyApiKeyRequest(key=created.key), metadata=key_metadata(star)
    )
    assert answer.valid


async def test_a_corrupted_key_is_unauthenticated_without_reading_keys(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], admin_key: str
) -> None:
    corrupted = admin_key[:-1] + ("A" if admin_key[-1] != "A" else "B")
    reads: list[str] = []

    def spy(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        # The expiry sweeper reads api_keys on its own schedule (FOR UPDATE SKIP LOCKED); only
        # a read on this call's path would mean the corrupted key reached the store.
        if "api_keys" in statement and "SKIP LOCKED" not in statement:
            reads.append(statement)

    engine = server[0].db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", spy)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _stub(channel).ListApiKeys(pb.ListApiKeysRequest(), metadata=key_metadata(corrupted))
    finally:
        event.remove(engine, "before_cursor_execute", spy)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(raised.value).reason == "CREDENTIALS_INVALID"
    assert reads == []


async def test_another_tenants_key_looks_exactly_like_a_missing_one(
    channel: grpc.aio.Channel, server: tuple[NexusServer, int], admin_key: str
) -> None:
    elsewhere = await make_tenant(server[0], new_id("usr"))
    foreign_admin = await issue_key(server[0], elsewhere, ["*"])
    foreign = await _create(channel, foreign_admin)
    missing_id = "eco_api_" + "0" * 22
    stub, md = _stub(channel), key_metadata(admin_key)
    for key_id in (foreign.api_key.id, missing_id):
        for call in (
            stub.GetApiKey(pb.GetApiKeyRequest(id=key_id), metadata=md),
            stub.RevokeApiKey(pb.RevokeApiKeyRequest(id=key_id), metadata=md),
            stub.RotateApiKey(pb.RotateApiKeyRequest(id=key_id), metadata=md),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    answer = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=foreign.key), metadata=md)
    assert answer == pb.VerifyApiKeyResponse(valid=False, reason=Reason.REASON_NOT_FOUND)
    # The foreign key still works for its own tenant: nothing was revoked or rotated.
    mine = await stub.VerifyApiKey(
        pb.VerifyApiKeyRequest(key=foreign.key), metadata=key_metadata(foreign_admin)
    )
    assert mine.valid


async def test_verify_reports_each_reason(channel: grpc.aio.Channel, admin_key: str) -> None:
    stub, md = _stub(channel), key_metadata(admin_key)
    created = await _create(channel, admin_key, scopes=["usage:write"], rate_limit_per_minute=2)

    async def verify(**fields: Any) -> pb.VerifyApiKeyResponse:
        response: pb.VerifyApiKeyResponse = await stub.VerifyApiKey(
            pb.VerifyApiKeyRequest(**fields), metadata=md
        )
        return response

    assert (await verify(key="eco_api_nonsense")).reason == Reason.REASON_MALFORMED
    scope = await verify(key=created.key, required_scopes=["usage:write", "billing:read"])
    assert scope.reason == Reason.REASON_INSUFFICIENT_SCOPE
    assert list(scope.missing_scopes) == ["billing:read"]
    assert scope.key_id == created.api_key.id and not scope.HasField("rate_limit")
    valid = await verify(key=created.key, required_scopes=["usage:write"])
    assert valid.valid and valid.reason == Reason.REASON_VALID
    assert (valid.rate_limit.limit, valid.rate_limit.remaining) == (2, 1)
    peek = await verify(key=created.key, rate_limit_cost=0)
    assert peek.valid and peek.rate_limit.remaining == 1
    limited = await verify(key=created.key, rate_limit_cost=2)
    assert limited.reason == Reason.REASON_RATE_LIMITED and not limited.valid
    assert limited.rate_limit.retry_after.ToTimedelta().total_seconds() > 0
    await stub.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id), metadata=md)
    revoked = await verify(key=created.key)
    assert revoked.reason == Reason.REASON_REVOKED and revoked.key_id == created.api_key.id


async def test_rotation_with_grace_keeps_the_old_secret_as_previous(
    channel: grpc.aio.Channel, admin_key: str
) -> None:
    stub, md = _stub(channel), key_metadata(admin_key)
    created = await _create(channel, admin_key)
    rotated = await stub.RotateApiKey(
        pb.RotateApiKeyRequest(id=created.api_key.id, grace_period=duration_pb2.Duration(seconds=3600)),
        metadata=md,
    )
    assert rotated.key != created.key and rotated.api_key.id == created.api_key.id
    assert rotated.api_key.HasField("previous_secret_expire_time") and rotated.api_key.HasField("rotate_time")
    old = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.key), metadata=md)
    assert old.valid and old.previous_secret and old.HasField("previous_secret_expire_time")
    new = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=rotated.key), metadata=md)
    assert new.valid and not new.previous_secret


async def test_a_revoked_key_is_refused_on_its_next_call(channel: grpc.aio.Channel, admin_key: str) -> None:
    stub = _stub(channel)
    created = await _create(channel, admin_key)
    await stub.GetApiKey(pb.GetApiKeyRequest(id=created.api_key.id), metadata=key_metadata(created.key))
    revoked = await stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(id=created.api_key.id), metadata=key_metadata(admin_key)
    )
    assert revoked.state == ApiKey.STATE_REVOKED and revoked.HasField("revoke_time")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetApiKey(pb.GetApiKeyRequest(id=created.api_key.id), metadata=key_metadata(created.key))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_update_changes_the_masked_fields_only(channel: grpc.aio.Channel, admin_key: str) -> None:
    stub, md = _stub(channel), key_metadata(admin_key)
    created = await _create(channel, admin_key, name="old", rate_limit_per_minute=50)
    updated = await stub.UpdateApiKey(
        pb.UpdateApiKeyRequest(
            api_key=ApiKey(id=created.api_key.id, name="new", rate_limit_per_minute=7),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        ),
        metadata=md,
    )
    assert (updated.name, updated.rate_limit_per_minute) == ("new", 50)


async def test_update_refuses_the_environment_in_the_mask(channel: grpc.aio.Channel, admin_key: str) -> None:
    created = await _create(channel, admin_key)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _stub(channel).UpdateApiKey(
            pb.UpdateApiKeyRequest(
                api_key=ApiKey(id=created.api_key.id, environment=ApiKey.ENVIRONMENT_TEST),
                update_mask=field_mask_pb2.FieldMask(paths=["environment"]),
            ),
            metadata=key_metadata(admin_key),
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(raised.value).reason == "UPDATE_MASK_INVALID"


async def test_updating_a_revoked_key_is_a_failed_precondition(
    channel: grpc.aio.Channel, admin_key: str
) -> None:
    stub, md = _stub(channel), key_metadata(admin_key)
    created = await _create(channel, admin_key)
    await stub.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.UpdateApiKey(
            pb.UpdateApiKeyRequest(api_key=ApiKey(id=created.api_key.id, name="x")), metadata=md
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "API_KEY_REVOKED"
    assert status_detail(raised.value, error_details_pb2.PreconditionFailure).violations[0].type == "STATE"


async def test_lists_leave_revoked_keys_out_unless_asked(channel: grpc.aio.Channel, admin_key: str) -> None:
    stub, md = _stub(channel), key_metadata(admin_key)
    created = await _create(channel, admin_key)
    await stub.RevokeApiKey(pb.RevokeApiKeyRequest(id=created.api_key.id), metadata=md)
    default = await stub.ListApiKeys(pb.ListApiKeysRequest(page_size=1000), metadata=md)
    assert created.api_key.id not in {k.id for k in default.api_keys}
    shown = await stub.ListApiKeys(pb.ListApiKeysRequest(page_size=1000, show_revoked=True), metadata=md)
    assert created.api_key.id in {k.id for k in shown.api_keys}
    only = await stub.ListApiKeys(pb.ListApiKeysRequest(state=ApiKey.STATE_REVOKED), metadata=md)
    assert {k.state for k in only.api_keys} == {ApiKey.STATE_REVOKED}


async def test_bad_input_names_its_fields(channel: grpc.aio.Channel, admin_key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _create(
            channel, admin_key, name="", scopes=["nope"], environment=ApiKey.ENVIRONMENT_UNSPECIFIED
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = set(field_violations(raised.value))
    assert fields == {"api_key.name", "api_key.scopes[0]", "api_key.environment"}


async def test_verify_answers_with_the_record_as_it_is_now(channel: grpc.aio.Channel, admin_key: str) -> None:
    """A record's part of the answer is kept between calls; a change to the record shows at once."""
    stub, md = _stub(channel), key_metadata(admin_key)
    created = await _create(channel, admin_key, name="before", scopes=["usage:read"])
    for _ in range(2):
        first = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.key), metadata=md)
        assert (first.name, list(first.scopes)) == ("before", ["usage:read"])
    await stub.UpdateApiKey(
        pb.UpdateApiKeyRequest(
            api_key=ApiKey(id=created.api_key.id, name="after", scopes=["usage:read", "usage:write"]),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "scopes"]),
        ),
        metadata=md,
    )
    after = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.key), metadata=md)
    assert (after.name, list(after.scopes)) == ("after", ["usage:read", "usage:write"])
    assert after.valid and after.key_id == created.api_key.id


async def test_a_key_verifying_itself_at_no_cost_sees_the_charge_of_its_own_call(
    channel: grpc.aio.Channel, admin_key: str
) -> None:
    stub = _stub(channel)
    created = await _create(channel, admin_key, scopes=["auth:introspect"], rate_limit_per_minute=5)
    md = key_metadata(created.key)
    for remaining in (4, 3):  # each call is charged once, by the rate-limit layer
        own = await stub.VerifyApiKey(pb.VerifyApiKeyRequest(key=created.key, rate_limit_cost=0), metadata=md)
        assert own.valid and (own.rate_limit.limit, own.rate_limit.remaining) == (5, remaining)
