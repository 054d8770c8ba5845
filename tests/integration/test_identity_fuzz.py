"""Fuzzing every IdentityService RPC with generated messages (random, huge and unicode
strings, extreme numbers, unknown enum values, missing and unknown fields): never INTERNAL
or UNKNOWN; INVALID_ARGUMENT always names fields and leaves every stored thing as it was."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select

from nexus.common.v1 import access_pb2
from nexus_server import contract
from nexus_server.app.server import NexusServer
from nexus_server.db.schema import events
from nexus_server.identity.tables import (
    known_devices,
    login_attempts,
    one_time_tokens,
    recovery_codes,
    sessions,
    users,
)
from tests.fuzzing import check_refusal, fuzz_settings, raw_call, service_methods, wire
from tests.support import issue_key, key_metadata, make_tenant, platform_admin, reason, register_user

SERVICE = "nexus.identity.v1.IdentityService"
_STRINGS = st.one_of(
    st.text(max_size=40),
    st.text(min_size=200, max_size=9000),
    st.sampled_from(["a@b.co", "usr_0000000000000000000000", "nxr_" + "a" * 43, "nxv_x", "nxp_x", "123456"]),
    st.builds(lambda s: f"{s}@example.com", st.text(max_size=80)),
    st.builds(lambda s: f"Aa1!{s}", st.text(max_size=90)),
    st.sampled_from(["display_name", "email", "user.display_name", "", " "]),
)


_TABLES = (users, sessions, one_time_tokens, recovery_codes, login_attempts, known_devices)


@pytest.fixture(scope="module")
async def credentials(channel: grpc.aio.Channel, server: tuple[NexusServer, int]) -> dict[str, Any]:
    srv = server[0]
    owner = await register_user(channel)
    tenant = await make_tenant(srv, owner.user_id)
    admin = await platform_admin(srv, channel)
    return {
        "key": key_metadata(await issue_key(srv, tenant, ["auth:introspect"])),
        "admin": admin.metadata(),
    }


async def _snapshot(srv: NexusServer, *, counters: bool = True) -> tuple[Any, ...]:
    async with srv.db.unit_of_work(readonly=True) as uow:
        state: list[Any] = []
        for table in _TABLES if counters else [t for t in _TABLES if t is not login_attempts]:
            key = list(table.primary_key.columns)
            state.append(tuple((await uow.session.execute(select(table).order_by(*key))).all()))
        state.append(
            (
                await uow.session.execute(
                    select(func.count()).where(events.c.tenant_id == "", events.c.source == "nexus")
                )
            ).scalar_one()
        )
    return tuple(state)


async def _snapshot_of(state: tuple[Any, ...], *, counters: bool) -> tuple[Any, ...]:
    """`state` without the sign-in counters when they may rightly have moved."""
    if counters:
        return state
    index = _TABLES.index(login_attempts)
    return state[:index] + state[index + 1 :]


# A wrong password or code re-entered to confirm a change is counted as a failed sign-in
# (so a stolen access token cannot guess it): the one change such a refusal makes.
_COUNTED = {"PASSWORD_INCORRECT", "TOTP_INVALID"}


_METHODS = service_methods(SERVICE)


@pytest.mark.parametrize("method", _METHODS, ids=[m.name for m in _METHODS])
@fuzz_settings(25)
@given(data=st.data())
async def test_generated_requests_never_fail_internally(
    data: st.DataObject,
    method: descriptor.MethodDescriptor,
    channel: grpc.aio.Channel,
    server: tuple[NexusServer, int],
    credentials: dict[str, Any],
) -> None:
    rule = contract.access_rule(method)
    if rule.caller == access_pb2.CALLER_PLATFORM_ADMIN:
        metadata: tuple[tuple[str, str], ...] = credentials["admin"]
    elif rule.key_scope:
        metadata = credentials["key"]
    elif rule.caller == access_pb2.CALLER_USER:
        metadata = (await register_user(channel)).metadata()  # fresh: Logout and friends end it
    else:
        metadata = ()
    # Each example from its own address, so generated sign-in failures throttle no one else.
    metadata = (*metadata, ("x-forwarded-for", f"192.0.2.{data.draw(st.integers(1, 254))}"))
    payload = data.draw(wire(method.input_type, _STRINGS, max_repeated=8))
    call = raw_call(channel, method)
    before = await _snapshot(server[0])
    try:
        await call(payload, metadata=metadata)
        return
    except grpc.aio.AioRpcError as error:
        if check_refusal(error) != grpc.StatusCode.INVALID_ARGUMENT:
            return
        counted = reason(error) in _COUNTED
    after = await _snapshot(server[0], counters=not counted)
    assert after == (await _snapshot_of(before, counters=not counted))
