"""Suspension holds on every replica within 1 s: a second server process on the same
database refuses the suspended tenant's tokens and keys, then admits them again once the
tenant is reactivated. CheckPermission's cached answers on that process follow role
changes, grant revocations and suspension within 1 s too."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from nexus.tenant.v1 import member_pb2, project_pb2
from nexus.tenant.v1 import tenant_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import platform_admin, refusal, team, tenants
from tests.support import issue_key, key_metadata

Probe = Callable[[], Coroutine[Any, Any, tuple[grpc.StatusCode, str]]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def replica(server: tuple[NexusServer, int], tmp_path: Any) -> AsyncIterator[grpc.aio.Channel]:
    """`nexus serve` in its own process, sharing the test server's database."""
    settings = server[0].settings
    port = _free_port()
    env = {
        **os.environ,
        "NEXUS_DATABASE_URL": settings.database_url,
        "NEXUS_PORT": str(port),
        "NEXUS_METRICS_PORT": "off",
        "NEXUS_VAR_DIR": str(tmp_path),
        "NEXUS_SECRET_KEY": settings.secret_key,
        "NEXUS_ALLOW_DEV_SECRET_KEY": "1",  # the test server's key may be the built-in one
        "NEXUS_LOG_LEVEL": "WARNING",
        "NEXUS_BCRYPT_ROUNDS": "4",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nexus_server.cli", "serve", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            yield channel
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _seen_within(probe: Probe, expected: tuple[grpc.StatusCode, str], seconds: float) -> float:
    """How long until `probe` answers `expected`; fails if it takes longer than `seconds`."""
    start = time.monotonic()
    while True:
        answer = await probe()
        elapsed = time.monotonic() - start
        if answer == expected:
            return elapsed
        assert elapsed < seconds, f"still {answer} after {elapsed:.2f}s"
        await asyncio.sleep(0.02)


async def test_suspension_and_reactivation_reach_another_process_within_a_second(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, replica: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    key = await issue_key(server[0], t.tenant_id, ["tenants:read"])
    admin = await platform_admin(server[0], channel)
    there = tenants(replica)

    async def by_token() -> tuple[grpc.StatusCode, str]:
        return await refusal(
            there.ListMembers(pb.ListMembersRequest(tenant_id=t.tenant_id), metadata=t.owner.metadata())
        )

    async def by_key() -> tuple[grpc.StatusCode, str]:
        return await refusal(
            there.ResolveTenant(pb.ResolveTenantRequest(id=t.tenant_id), metadata=key_metadata(key))
        )

    ok = (grpc.StatusCode.OK, "")
    suspended = (grpc.StatusCode.PERMISSION_DENIED, "TENANT_SUSPENDED")
    # Warm the replica's caches, so only the revocation feed can tell it of the change.
    assert await by_token() == ok and await by_key() == ok
    await tenants(channel).SuspendTenant(
        pb.SuspendTenantRequest(id=t.tenant_id, reason="unpaid"), metadata=admin.metadata()
    )
    await _seen_within(by_token, suspended, 1.0)
    await _seen_within(by_key, suspended, 1.0)
    still = await there.GetTenant(pb.GetTenantRequest(id=t.tenant_id), metadata=t.owner.metadata())
    assert still.suspend_reason == "unpaid"  # members may still see why
    await tenants(channel).ReactivateTenant(
        pb.ReactivateTenantRequest(id=t.tenant_id), metadata=admin.metadata()
    )
    await _seen_within(by_token, ok, 1.0)
    await _seen_within(by_key, ok, 1.0)


async def test_check_permission_on_another_process_follows_changes_within_a_second(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, replica: grpc.aio.Channel
) -> None:
    t = await team(server[0], channel)
    key = await issue_key(server[0], t.tenant_id, ["tenants:read"])
    here, there = tenants(channel), tenants(replica)
    await here.GrantProjectAccess(
        pb.GrantProjectAccessRequest(
            tenant_id=t.tenant_id,
            user_id=t.member.user_id,
            project="nexus-sales",
            role=project_pb2.PROJECT_ROLE_USER,
        ),
        metadata=t.owner.metadata(),
    )

    def asking(permission: str = "", project: str = "") -> Probe:
        async def probe() -> tuple[grpc.StatusCode, str]:
            request = pb.CheckPermissionRequest(
                subject=t.member.user_id, permission=permission, project=project
            )
            try:
                answer = await there.CheckPermission(request, metadata=key_metadata(key))
            except grpc.aio.AioRpcError as error:
                return error.code(), ""
            return grpc.StatusCode.OK, pb.CheckPermissionResponse.Reason.Name(answer.reason)

        return probe

    publish, sales = asking(permission="events.publish"), asking(project="nexus-sales")
    # Warm the replica's cache, so only the revocation feed can tell it of the changes.
    assert await publish() == (grpc.StatusCode.OK, "REASON_GRANTED_BY_ROLE")
    assert await sales() == (grpc.StatusCode.OK, "REASON_GRANTED_BY_PROJECT_ACCESS")

    await here.UpdateMember(
        pb.UpdateMemberRequest(
            tenant_id=t.tenant_id,
            member=member_pb2.Member(user_id=t.member.user_id, roles=["read_only"]),
            update_mask=field_mask_pb2.FieldMask(paths=["roles"]),
        ),
        metadata=t.owner.metadata(),
    )
    await _seen_within(publish, (grpc.StatusCode.OK, "REASON_PERMISSION_NOT_GRANTED"), 1.0)

    await here.RevokeProjectAccess(
        pb.RevokeProjectAccessRequest(tenant_id=t.tenant_id, user_id=t.member.user_id, project="nexus-sales"),
        metadata=t.owner.metadata(),
    )
    await _seen_within(sales, (grpc.StatusCode.OK, "REASON_NO_PROJECT_ACCESS"), 1.0)

    admin = await platform_admin(server[0], channel)
    await here.SuspendTenant(
        pb.SuspendTenantRequest(id=t.tenant_id, reason="audit"), metadata=admin.metadata()
    )
    # A suspended tenant's key is refused before CheckPermission runs.
    await _seen_within(sales, (grpc.StatusCode.PERMISSION_DENIED, ""), 1.0)
