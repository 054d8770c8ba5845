"""An open Subscribe stream ends, with the refusal's status and reason, once its credential
stops holding: API key revoked or expired, a rotated secret's grace over, member removed,
tenant suspended, session logged out, account disabled; on the replica that made the change
and on another. Each test waits the contract's second after the change, appends an event,
and shows the stream ended without delivering it (timings are never asserted tightly)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from nexus.apikey.v1 import apikey_service_pb2 as keys_pb
from nexus.apikey.v1 import apikey_service_pb2_grpc as keys_rpc
from nexus.events.v1 import event_pb2
from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus.identity.v1 import identity_service_pb2 as identity_pb
from nexus.identity.v1 import identity_service_pb2_grpc as identity_rpc
from nexus.tenant.v1 import tenant_pb2
from nexus.tenant.v1 import tenant_service_pb2 as tenant_pb
from nexus_server.apikeys import key_format
from nexus_server.apikeys.workflows import issue_key as issue
from nexus_server.app.server import NexusServer
from tests.integration.tenants_support import Team, team, tenants
from tests.support import free_port, issue_key, key_metadata, platform_admin, reason, unique

Metadata = tuple[tuple[str, str], ...]
ENDS_WITHIN = 5.0  # generous: the contract's bound is 1 s, which the probe event checks
CONTRACT_BOUND = 1.0


class Stream:
    """A Subscribe stream drained on a task: its events, and how it ended."""

    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata):
        self.call = rpc.EventsServiceStub(channel).Subscribe(pb.SubscribeRequest(), metadata=metadata)
        self.events: list[event_pb2.Event] = []
        self.heartbeats = 0
        self.error: grpc.aio.AioRpcError | None = None
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for message in self.call:
                if message.HasField("event"):
                    self.events.append(message.event)
                elif message.HasField("events"):
                    self.events.extend(message.events.events)
                else:
                    self.heartbeats += 1
        except grpc.aio.AioRpcError as error:
            self.error = error

    async def open(self) -> Stream:
        """Returns once the server has admitted the stream (its first heartbeat came)."""
        for _ in range(500):
            if self.heartbeats or self._task.done():
                break
            await asyncio.sleep(0.01)
        assert self.heartbeats, f"the stream did not open: {self.error}"
        return self

    async def ended(self) -> grpc.aio.AioRpcError:
        await asyncio.wait_for(asyncio.shield(self._task), ENDS_WITHIN)
        assert self.error is not None, "the stream ended without a status"
        return self.error

    def close(self) -> None:
        self.call.cancel()


@pytest.fixture
async def streams() -> AsyncIterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.close()


async def _open(channel: grpc.aio.Channel, metadata: Metadata, streams: list[Stream]) -> Stream:
    stream = Stream(channel, metadata)
    streams.append(stream)
    return await stream.open()


async def _probe(server: NexusServer, tenant_id: str) -> int:
    """Append an event to the tenant's log (straight through the log, so a suspended tenant
    gets one too) and return its sequence."""
    async with server.db.unit_of_work() as uow:
        stored = await uow.append_event("probe.after_change", {}, tenant_id=tenant_id, source="test")
    return stored.sequence


async def _ends_before_later_events(
    server: NexusServer, tenant_id: str, *opened: Stream
) -> list[tuple[grpc.StatusCode, str]]:
    """Wait the contract's bound, append an event, and return how each stream ended; fails
    if any delivered that event (it should have ended before)."""
    await asyncio.sleep(CONTRACT_BOUND)
    sequence = await _probe(server, tenant_id)
    endings = []
    for stream in opened:
        error = await stream.ended()
        assert sequence not in [e.sequence for e in stream.events], "delivered after the change"
        endings.append((error.code(), reason(error)))
    return endings


CREDENTIALS_INVALID = (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")


async def _keyed(server: NexusServer, channel: grpc.aio.Channel) -> tuple[Team, str]:
    t = await team(server, channel)
    return t, await issue_key(server, t.tenant_id, ["events:subscribe"])


async def test_a_revoked_keys_stream_ends_unauthenticated(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t, key = await _keyed(server[0], channel)
    stream = await _open(channel, key_metadata(key), streams)
    await keys_rpc.ApiKeyServiceStub(channel).RevokeApiKey(
        keys_pb.RevokeApiKeyRequest(id=key_format.key_id_of(key) or ""),
        metadata=t.owner.metadata(t.tenant_id),
    )
    assert await _ends_before_later_events(server[0], t.tenant_id, stream) == [CREDENTIALS_INVALID]


async def test_an_expiring_keys_stream_ends_at_its_expire_time(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t = await team(server[0], channel)
    async with server[0].db.unit_of_work() as uow:
        _, key = await issue(
            uow,
            tenant_id=t.tenant_id,
            name=unique("key"),
            scopes=["events:subscribe"],
            expire_time=uow.clock.now() + timedelta(seconds=1.5),
        )
    stream = await _open(channel, key_metadata(key), streams)
    await asyncio.sleep(1.5)  # now expired; no feed row says so
    assert await _ends_before_later_events(server[0], t.tenant_id, stream) == [CREDENTIALS_INVALID]


async def test_a_rotated_keys_stream_on_the_old_secret_ends_with_its_grace(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t, key = await _keyed(server[0], channel)
    stream = await _open(channel, key_metadata(key), streams)
    await keys_rpc.ApiKeyServiceStub(channel).RotateApiKey(
        keys_pb.RotateApiKeyRequest(
            id=key_format.key_id_of(key) or "", grace_period=duration_pb2.Duration(seconds=1)
        ),
        metadata=t.owner.metadata(t.tenant_id),
    )
    await asyncio.sleep(1.0)  # the grace is over
    assert await _ends_before_later_events(server[0], t.tenant_id, stream) == [CREDENTIALS_INVALID]


async def test_a_removed_members_stream_ends_permission_denied(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t = await team(server[0], channel)
    stream = await _open(channel, t.member.metadata(t.tenant_id), streams)
    await tenants(channel).RemoveMember(
        tenant_pb.RemoveMemberRequest(tenant_id=t.tenant_id, user_id=t.member.user_id),
        metadata=t.owner.metadata(),
    )
    assert await _ends_before_later_events(server[0], t.tenant_id, stream) == [
        (grpc.StatusCode.PERMISSION_DENIED, "TENANT_ACCESS_DENIED")
    ]


async def test_a_suspended_tenants_streams_end_permission_denied(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t, key = await _keyed(server[0], channel)
    by_key = await _open(channel, key_metadata(key), streams)
    by_token = await _open(channel, t.member.metadata(t.tenant_id), streams)
    admin = await platform_admin(server[0], channel)
    await tenants(channel).SuspendTenant(
        tenant_pb.SuspendTenantRequest(id=t.tenant_id, reason="unpaid"), metadata=admin.metadata()
    )
    suspended = (grpc.StatusCode.PERMISSION_DENIED, "TENANT_SUSPENDED")
    assert await _ends_before_later_events(server[0], t.tenant_id, by_key, by_token) == [suspended] * 2


async def test_a_logged_out_sessions_stream_ends_unauthenticated(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t = await team(server[0], channel)
    stream = await _open(channel, t.member.metadata(t.tenant_id), streams)
    other = await _open(channel, t.owner.metadata(t.tenant_id), streams)
    await identity_rpc.IdentityServiceStub(channel).Logout(
        identity_pb.LogoutRequest(), metadata=t.member.metadata()
    )
    assert await _ends_before_later_events(server[0], t.tenant_id, stream) == [CREDENTIALS_INVALID]
    assert other.error is None  # another person's stream goes on


async def test_a_disabled_accounts_stream_ends_unauthenticated(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t = await team(server[0], channel)
    stream = await _open(channel, t.member.metadata(t.tenant_id), streams)
    admin = await platform_admin(server[0], channel)
    await identity_rpc.IdentityServiceStub(channel).DisableUser(
        identity_pb.DisableUserRequest(id=t.member.user_id, reason="abuse"), metadata=admin.metadata()
    )
    assert await _ends_before_later_events(server[0], t.tenant_id, stream) == [CREDENTIALS_INVALID]


async def test_a_change_that_leaves_the_credential_standing_ends_no_stream(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, streams: list[Stream]
) -> None:
    t, key = await _keyed(server[0], channel)
    by_key = await _open(channel, key_metadata(key), streams)
    by_token = await _open(channel, t.member.metadata(t.tenant_id), streams)
    # A tenant feed row names both streams: each is checked again, and each still holds.
    await tenants(channel).UpdateTenant(
        tenant_pb.UpdateTenantRequest(
            tenant=tenant_pb2.Tenant(id=t.tenant_id, display_name="Renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=t.owner.metadata(),
    )
    await asyncio.sleep(CONTRACT_BOUND)
    sequence = await _probe(server[0], t.tenant_id)
    for stream in (by_key, by_token):
        for _ in range(500):
            if sequence in [e.sequence for e in stream.events] or stream.error is not None:
                break
            await asyncio.sleep(0.01)
        assert stream.error is None
        assert sequence in [e.sequence for e in stream.events]


@pytest.fixture
async def replica(server: tuple[NexusServer, int], tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    """`nexus serve` in its own process, sharing the test server's database."""
    settings = server[0].settings
    port = free_port()
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


async def test_streams_on_another_replica_end_when_the_change_is_made_here(
    server: tuple[NexusServer, int],
    channel: grpc.aio.Channel,
    replica: grpc.aio.Channel,
    streams: list[Stream],
) -> None:
    t, key = await _keyed(server[0], channel)
    by_key = await _open(replica, key_metadata(key), streams)
    by_token = await _open(replica, t.member.metadata(t.tenant_id), streams)
    await keys_rpc.ApiKeyServiceStub(channel).RevokeApiKey(
        keys_pb.RevokeApiKeyRequest(id=key_format.key_id_of(key) or ""),
        metadata=t.owner.metadata(t.tenant_id),
    )
    await tenants(channel).RemoveMember(
        tenant_pb.RemoveMemberRequest(tenant_id=t.tenant_id, user_id=t.member.user_id),
        metadata=t.owner.metadata(),
    )
    assert await _ends_before_later_events(server[0], t.tenant_id, by_key, by_token) == [
        CREDENTIALS_INVALID,
        (grpc.StatusCode.PERMISSION_DENIED, "TENANT_ACCESS_DENIED"),
    ]
