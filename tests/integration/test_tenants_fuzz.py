"""Fuzz: every TenantService RPC driven with generated messages (random and huge strings,
unicode, out-of-range numbers and enums, missing and unknown fields) never answers INTERNAL
or UNKNOWN, and a rejected request changes no stored state."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from nexus_server import contract
from nexus_server.app.server import NexusServer
from nexus_server.db.schema import events
from nexus_server.tenants import tables
from tests.fuzzing import assert_not_internal, messages, raw_call, service_methods
from tests.integration.tenants_support import team
from tests.support import User, issue_key, key_metadata, platform_admin

# An unknown field (number 9999, varint) appended to the wire bytes.
_UNKNOWN_FIELD = b"\xf8\xe0\x04\x2a"


def _strings(tenant_id: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=80),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:@ ", max_size=80),
        st.sampled_from(
            [
                "",
                tenant_id,
                "owner",
                "admin",
                "rol_" + "0" * 22,
                "usr_" + "A" * 22,
                "nexus-sales",
                "tenants.read",
            ]
        ),
        st.integers(1000, 70_000).map(lambda n: "x" * n),
    )


async def _snapshot(server: NexusServer, tenant_id: str) -> tuple[Any, ...]:
    """Everything a tenant's RPCs may write, as rows."""
    async with server.db.unit_of_work(readonly=True) as uow:
        found: list[Any] = []
        for table in (
            tables.memberships,
            tables.roles,
            tables.groups,
            tables.project_grants,
            tables.invitations,
        ):
            rows = await uow.session.execute(select(table).where(table.c.tenant_id == tenant_id))
            found.append(sorted(map(repr, rows)))
        tenant = await uow.session.execute(select(tables.tenants).where(tables.tenants.c.id == tenant_id))
        found.append(list(map(repr, tenant)))
        found.append(
            (await uow.session.execute(select(func.count()).select_from(tables.tenants))).scalar_one()
        )
        found.append(
            (await uow.session.execute(select(func.count()).select_from(tables.group_members))).scalar_one()
        )
        count = select(func.count()).where(events.c.tenant_id == tenant_id)
        found.append((await uow.session.execute(count)).scalar_one())
    return tuple(found)


_worlds: dict[tuple[str, str], tuple[str, Any]] = {}


async def _world(
    server: NexusServer, channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> tuple[str, Any]:
    """A tenant of its own per RPC, and the credential that passes the RPC's caller rule."""
    key = (server.settings.database_url, method.name)
    if key not in _worlds:
        t = await team(server, channel)
        rule = contract.access_rule(method)
        metadata: Any
        if rule.key_scope and not rule.caller:
            metadata = key_metadata(await issue_key(server, t.tenant_id, ["*"]))
        elif rule.caller == 6:  # CALLER_PLATFORM_ADMIN
            admin: User = await platform_admin(server, channel)
            metadata = admin.metadata()
        else:
            metadata = t.owner.metadata(t.tenant_id)
        _worlds[key] = (t.tenant_id, metadata)
    return _worlds[key]


@pytest.mark.parametrize("method", service_methods("nexus.tenant.v1.TenantService"), ids=lambda m: m.name)
async def test_generated_requests_never_fail_internally_nor_change_state_when_rejected(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, method: descriptor.MethodDescriptor
) -> None:
    tenant_id, metadata = await _world(server[0], channel, method)
    call = raw_call(channel, method)

    # Hypothesis draws the messages (it cannot drive an async test); each is then sent.
    drawn: list[tuple[Any, bool]] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(request=messages(method.input_type, _strings(tenant_id)), unknown=st.booleans())
    def draw(request: Any, unknown: bool) -> None:
        drawn.append((request, unknown))

    draw()
    for request, unknown in drawn:
        wire = request.SerializeToString() + (_UNKNOWN_FIELD if unknown else b"")
        before = await _snapshot(server[0], tenant_id)
        try:
            await call(wire, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            shown = f"{method.name}({request!r:.300})"
            assert_not_internal(error, f"{shown} → ")
            assert await _snapshot(server[0], tenant_id) == before, f"rejected {shown} changed state"
