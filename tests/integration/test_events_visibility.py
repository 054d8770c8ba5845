"""Reading the log shows no more than the reader's other RPCs would: Nexus's member,
invitation (and group, role, project-access) events go only to readers who may list
members, through ListEvents, GetEvent and Subscribe alike; a program's own events with
the same type names are not Nexus's and stay visible; a reader who loses the permission
mid-stream stops receiving them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from nexus.events.v1 import event_pb2
from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus.tenant.v1 import tenant_service_pb2 as tenant_pb
from nexus_server.app.server import NexusServer
from nexus_server.auth.principal import Principal, PrincipalKind
from nexus_server.events import visibility
from nexus_server.tenants.permissions import BY_NAME
from tests.integration.tenants_support import Team, team, tenants
from tests.support import User, issue_key, key_metadata, register_user, set_roles, unique

Metadata = tuple[tuple[str, str], ...]
WAIT = 10.0
ROSTER = ("member.", "invitation.")


def _roster(events: list[event_pb2.Event]) -> list[event_pb2.Event]:
    return [e for e in events if e.source == "nexus" and e.type.startswith(ROSTER)]


@dataclass
class Tenant:
    team: Team
    reader: User  # a read_only member
    subscriber: str  # a key holding only events:subscribe
    publisher: str
    invitee: str  # the email of an invitation AddMember sent

    @property
    def id(self) -> str:
        return self.team.tenant_id


async def _invite(channel: grpc.aio.Channel, t: Team) -> str:
    email = f"{unique('invitee')}@example.com"
    await tenants(channel).AddMember(
        tenant_pb.AddMemberRequest(tenant_id=t.tenant_id, email=email, roles=["member"]),
        metadata=t.owner.metadata(),
    )
    return email


@pytest.fixture
async def tenant(server: tuple[NexusServer, int], channel: grpc.aio.Channel) -> Tenant:
    t = await team(server[0], channel)
    reader = await register_user(channel)
    await set_roles(server[0], t.tenant_id, reader.user_id, ["read_only"])
    subscriber = await issue_key(server[0], t.tenant_id, ["events:subscribe"])
    publisher = await issue_key(server[0], t.tenant_id, ["events:publish"])
    invitee = await _invite(channel, t)
    return Tenant(t, reader, subscriber, publisher, invitee)


async def _list(channel: grpc.aio.Channel, metadata: Metadata) -> list[event_pb2.Event]:
    response = await rpc.EventsServiceStub(channel).ListEvents(
        pb.ListEventsRequest(page_size=1000), metadata=metadata
    )
    return list(response.events)


async def _publish(channel: grpc.aio.Channel, key: str, type: str) -> event_pb2.Event:
    event: event_pb2.Event = await rpc.EventsServiceStub(channel).PublishEvent(
        pb.PublishEventRequest(type=type, source="crm", data=struct_pb2.Struct()),
        metadata=key_metadata(key),
    )
    return event


async def test_list_events_leaves_the_roster_out_for_readers_who_may_not_list_members(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    owners_view = await _list(channel, tenant.team.owner.metadata(tenant.id))
    assert {e.type for e in _roster(owners_view)} >= {"member.added", "invitation.created"}
    assert tenant.invitee in str(owners_view)
    for metadata in (
        tenant.reader.metadata(tenant.id),
        tenant.team.member.metadata(tenant.id),
        key_metadata(tenant.subscriber),
    ):
        seen = await _list(channel, metadata)
        assert seen, "the reader sees the rest of the log"
        assert _roster(seen) == []
        assert tenant.invitee not in str(seen)


async def test_get_event_of_a_hidden_event_is_not_found(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    owners_view = await _list(channel, tenant.team.owner.metadata(tenant.id))
    invitation = next(e for e in owners_view if e.type == "invitation.created")
    stub = rpc.EventsServiceStub(channel)
    got = await stub.GetEvent(
        pb.GetEventRequest(id=invitation.id), metadata=tenant.team.owner.metadata(tenant.id)
    )
    assert got.id == invitation.id
    for metadata in (tenant.reader.metadata(tenant.id), key_metadata(tenant.subscriber)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetEvent(pb.GetEventRequest(id=invitation.id), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_programs_own_member_events_are_not_nexuss_and_stay_visible(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    published = await _publish(channel, tenant.publisher, "member.added")
    seen = await _list(channel, key_metadata(tenant.subscriber))
    assert published.id in [e.id for e in seen]


class Stream:
    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata, **fields: Any):
        self.call = rpc.EventsServiceStub(channel).Subscribe(pb.SubscribeRequest(**fields), metadata=metadata)
        self.events: list[event_pb2.Event] = []
        self.heartbeats = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for message in self.call:
            if message.HasField("event"):
                self.events.append(message.event)
            elif message.HasField("events"):
                self.events.extend(message.events.events)
            else:
                self.heartbeats += 1

    async def until(self, predicate: Any) -> None:
        async def wait() -> None:
            while not predicate(self):
                if self._task.done():
                    await self._task  # raises how it ended
                    raise AssertionError("the stream ended")
                await asyncio.sleep(0.01)

        await asyncio.wait_for(wait(), WAIT)

    def has(self, event: event_pb2.Event) -> bool:
        return event.id in [e.id for e in self.events]

    def close(self) -> None:
        self.call.cancel()


@pytest.fixture
async def streams() -> AsyncIterator[list[Stream]]:
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        stream.close()


async def _open(
    channel: grpc.aio.Channel, metadata: Metadata, streams: list[Stream], **fields: Any
) -> Stream:
    stream = Stream(channel, metadata, **fields)
    streams.append(stream)
    await stream.until(lambda s: s.heartbeats > 0)
    return stream


async def test_subscribe_replays_and_follows_without_the_roster_for_readers_who_may_not_list_members(
    channel: grpc.aio.Channel, tenant: Tenant, streams: list[Stream]
) -> None:
    owner = await _open(channel, tenant.team.owner.metadata(tenant.id), streams, after_sequence=0)
    hidden_from = [
        await _open(channel, metadata, streams, after_sequence=0)
        for metadata in (tenant.reader.metadata(tenant.id), key_metadata(tenant.subscriber))
    ]
    later = await _invite(channel, tenant.team)  # live, while the streams follow
    marker = await _publish(channel, tenant.publisher, "deal.won")
    for stream in (owner, *hidden_from):
        await stream.until(lambda s: s.has(marker))
    assert later in str(owner.events) and tenant.invitee in str(owner.events)
    for stream in hidden_from:
        assert _roster(stream.events) == []
        assert tenant.invitee not in str(stream.events) and later not in str(stream.events)


async def test_a_reader_who_loses_the_permission_mid_stream_stops_receiving_the_roster(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant, streams: list[Stream]
) -> None:
    admin = await register_user(channel)
    await set_roles(server[0], tenant.id, admin.user_id, ["admin"])
    stream = await _open(channel, admin.metadata(tenant.id), streams)
    before = await _invite(channel, tenant.team)
    await stream.until(lambda s: before in str(s.events))
    # Demoted: the membership feed row re-admits the stream, with less to see.
    await set_roles(server[0], tenant.id, admin.user_id, ["read_only"])
    await asyncio.sleep(1.0)  # the contract's bound for a change to reach every replica
    after = await _invite(channel, tenant.team)
    marker = await _publish(channel, tenant.publisher, "deal.won")
    await stream.until(lambda s: s.has(marker))
    assert after not in str(stream.events)


def test_every_restricted_family_names_a_permission_of_the_catalog() -> None:
    assert all(rule.permission in BY_NAME for rule in visibility.RESTRICTED.values())
    everything = Principal(PrincipalKind.USER, "usr_x", platform_admin=True)
    assert visibility.hidden_for(everything, frozenset()) == ()
