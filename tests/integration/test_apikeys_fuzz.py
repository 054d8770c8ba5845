"""Fuzzing every ApiKeyService RPC with generated messages (random and huge strings, unicode,
extreme numbers, unknown enum values, missing and unknown fields): never INTERNAL or
UNKNOWN, INVALID_ARGUMENT always names fields, and a rejected request changes nothing."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from nexus_server.apikeys.rules import SCOPES
from nexus_server.apikeys.tables import api_keys
from nexus_server.app.server import NexusServer
from nexus_server.common.ids import new_id
from nexus_server.db.schema import events, revocations
from nexus_server.ratelimit.overrides import set_override
from tests.fuzzing import check_refusal, fuzz_settings, raw_call, service_methods, wire
from tests.support import issue_key, key_metadata, make_tenant

SERVICE = "nexus.apikey.v1.ApiKeyService"
_STRINGS = st.one_of(
    st.text(max_size=40),
    st.text(min_size=500, max_size=3000),
    st.sampled_from(sorted(SCOPES)),
    st.sampled_from(["eco_api_" + "0" * 22, "eco_api_" + "Z" * 22, "*", "name", "scopes", "environment"]),
    st.builds(lambda s: "eco_api_" + s, st.text(alphabet="0123456789abcXYZ.", max_size=70)),
)


@pytest.fixture(scope="module")
async def fuzz_env(server: tuple[NexusServer, int]) -> tuple[str, str]:
    srv = server[0]
    tenant = await make_tenant(srv, new_id("usr"))
    async with srv.db.unit_of_work() as uow:
        await set_override(uow, srv.ctx.revocations, "tenant", tenant, 1_000_000)
    key = await issue_key(srv, tenant, ["*"])
    return tenant, key


async def _snapshot(srv: NexusServer, tenant: str) -> tuple[Any, ...]:
    columns = [c for c in api_keys.c if c.name != "last_used_time"]  # written in the background
    async with srv.db.unit_of_work(readonly=True) as uow:
        rows = (
            await uow.session.execute(
                select(*columns).where(api_keys.c.tenant_id == tenant).order_by(api_keys.c.id)
            )
        ).all()
        # Only what this service can write: other capabilities' background tasks may append
        # their own events and revocations meanwhile.
        n_events = (
            await uow.session.execute(select(func.count()).where(events.c.tenant_id == tenant))
        ).scalar_one()
        n_revocations = (
            await uow.session.execute(
                select(func.count()).where(revocations.c.kind.in_(["apikey", "ratelimit"]))
            )
        ).scalar_one()
    return tuple(rows), n_events, n_revocations


_METHODS = service_methods(SERVICE)
_REFUSALS = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)


@pytest.mark.parametrize("method", _METHODS, ids=[m.name for m in _METHODS])
@fuzz_settings(40)
@given(data=st.data())
async def test_generated_requests_never_fail_internally(
    data: st.DataObject,
    method: descriptor.MethodDescriptor,
    channel: grpc.aio.Channel,
    server: tuple[NexusServer, int],
    fuzz_env: tuple[str, str],
) -> None:
    tenant, key = fuzz_env
    payload = data.draw(wire(method.input_type, _STRINGS))
    call = raw_call(channel, method)
    before = await _snapshot(server[0], tenant)
    try:
        await call(payload, metadata=key_metadata(key))
        return
    except grpc.aio.AioRpcError as error:
        check_refusal(error, _REFUSALS)
    assert await _snapshot(server[0], tenant) == before
