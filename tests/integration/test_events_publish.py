"""PublishEvent, GetEvent and ListEvents through the real server and real credentials."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2, timestamp_pb2

from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer
from nexus_server.events.envelope import Draft
from tests.support import User, field_violations, issue_key, key_metadata, make_tenant, reason, register_user


@dataclass(frozen=True)
class Tenant:
    id: str
    owner: User
    publisher: tuple[tuple[str, str], ...]  # metadata of a key with events:publish
    reader: tuple[tuple[str, str], ...]  # metadata of a key with events:subscribe


async def new_tenant(server: NexusServer, channel: grpc.aio.Channel) -> Tenant:
    owner = await register_user(channel)
    tenant_id = await make_tenant(server, owner.user_id)
    publisher = key_metadata(await issue_key(server, tenant_id, ["events:publish"]))
    reader = key_metadata(await issue_key(server, tenant_id, ["events:subscribe"]))
    return Tenant(tenant_id, owner, publisher, reader)


@pytest.fixture
async def tenant(server: tuple[NexusServer, int], channel: grpc.aio.Channel) -> Tenant:
    return await new_tenant(server[0], channel)


def _data(**fields: Any) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(fields)
    return struct


async def test_publish_returns_the_event_with_the_next_sequence(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.EventsServiceStub(channel)
    first = await stub.PublishEvent(
        pb.PublishEventRequest(type="deal.won", source="nexus-sales", subject="deal_1", data=_data(amount=5)),
        metadata=tenant.publisher,
    )
    second = await stub.PublishEvent(
        pb.PublishEventRequest(type="deal.lost", source="nexus-sales"), metadata=tenant.publisher
    )
    assert second.sequence == first.sequence + 1
    assert (first.tenant_id, first.type, first.subject, first.data["amount"]) == (
        tenant.id,
        "deal.won",
        "deal_1",
        5,
    )
    assert first.id.startswith("evt_") and first.publisher_api_key_id.startswith("eco_api_")
    assert first.time == first.create_time


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_event(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.EventsServiceStub(channel)
    request = pb.PublishEventRequest(
        type="deal.won", source="crm", data=_data(n=1, nested={"a": [1, "x", None]}), idempotency_key="k-1"
    )
    first = await stub.PublishEvent(request, metadata=tenant.publisher)
    again = await stub.PublishEvent(request, metadata=tenant.publisher)
    listed = await stub.ListEvents(pb.ListEventsRequest(), metadata=tenant.reader)
    assert again == first
    assert [e.id for e in listed.events if e.idempotency_key == "k-1"] == [first.id]


async def test_reusing_a_key_for_another_envelope_is_refused(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.EventsServiceStub(channel)
    await stub.PublishEvent(
        pb.PublishEventRequest(type="deal.won", source="crm", idempotency_key="k-2"),
        metadata=tenant.publisher,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishEvent(
            pb.PublishEventRequest(type="deal.won", source="other", idempotency_key="k-2"),
            metadata=tenant.publisher,
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(caught.value) == "IDEMPOTENCY_KEY_REUSED"


async def test_a_reserved_source_is_refused(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    stub = rpc.EventsServiceStub(channel)
    for source in ("nexus", "nexus/billing"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.PublishEvent(
                pb.PublishEventRequest(type="a.b", source=source), metadata=tenant.publisher
            )
        assert (caught.value.code(), reason(caught.value)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "SOURCE_RESERVED",
        )


async def test_malformed_envelope_fields_are_each_named(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    stub = rpc.EventsServiceStub(channel)
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishEvent(
            pb.PublishEventRequest(
                type="Deal", source="-x", subject="a\nb", time=future, idempotency_key="has space"
            ),
            metadata=tenant.publisher,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {"type", "source", "subject", "time", "idempotency_key"}


@pytest.mark.parametrize("hidden", ["\u202e", "\u2066", "\u200b", "\u200f", "\ufeff", "\u00ad"])
async def test_a_subject_with_bidi_or_zero_width_characters_is_refused(
    channel: grpc.aio.Channel, tenant: Tenant, hidden: str
) -> None:
    stub = rpc.EventsServiceStub(channel)
    before = await stub.ListEvents(pb.ListEventsRequest(), metadata=tenant.reader)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishEvent(
            pb.PublishEventRequest(type="deal.won", source="crm", subject=f"deal_1{hidden}"),
            metadata=tenant.publisher,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["subject"]
    after = await stub.ListEvents(pb.ListEventsRequest(), metadata=tenant.reader)
    assert after == before, "a refused publish appended nothing"


async def test_data_over_64_kib_is_too_large(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    stub = rpc.EventsServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PublishEvent(
            pb.PublishEventRequest(type="a.b", source="s", data=_data(blob="x" * 70_000)),
            metadata=tenant.publisher,
        )
    assert (caught.value.code(), reason(caught.value)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "EVENT_DATA_TOO_LARGE",
    )


async def test_get_event_finds_only_the_callers_tenants_events(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.EventsServiceStub(channel)
    other = await new_tenant(server[0], channel)
    event = await stub.PublishEvent(pb.PublishEventRequest(type="a.b", source="s"), metadata=tenant.publisher)
    assert await stub.GetEvent(pb.GetEventRequest(id=event.id), metadata=tenant.reader) == event
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetEvent(pb.GetEventRequest(id=event.id), metadata=other.reader)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_member_lists_events_with_filters_and_pages(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.EventsServiceStub(channel)
    for i in range(5):
        await stub.PublishEvent(
            pb.PublishEventRequest(type="deal.won" if i % 2 else "lead.new", source="crm", subject=f"s{i}"),
            metadata=tenant.publisher,
        )
    member = tenant.owner.metadata(tenant.id)
    first = await stub.ListEvents(pb.ListEventsRequest(types=["lead.*"], page_size=2), metadata=member)
    second = await stub.ListEvents(
        pb.ListEventsRequest(types=["lead.*"], page_size=2, page_token=first.next_page_token), metadata=member
    )
    newest = await stub.ListEvents(
        pb.ListEventsRequest(order_by="sequence desc", page_size=1), metadata=member
    )
    assert [e.subject for e in first.events] + [e.subject for e in second.events] == ["s0", "s2", "s4"]
    assert second.next_page_token == ""
    assert newest.events[0].subject == "s4"


async def test_a_page_token_from_another_query_is_refused(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    stub = rpc.EventsServiceStub(channel)
    for _ in range(2):
        await stub.PublishEvent(pb.PublishEventRequest(type="a.b", source="s"), metadata=tenant.publisher)
    page = await stub.ListEvents(pb.ListEventsRequest(page_size=1), metadata=tenant.reader)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEvents(
            pb.ListEventsRequest(page_size=1, types=["x.*"], page_token=page.next_page_token),
            metadata=tenant.reader,
        )
    assert reason(caught.value) == "PAGE_TOKEN_INVALID"


async def test_nexus_own_events_are_in_the_tenants_log(channel: grpc.aio.Channel, tenant: Tenant) -> None:
    listed = await rpc.EventsServiceStub(channel).ListEvents(
        pb.ListEventsRequest(sources=["nexus"]), metadata=tenant.reader
    )
    assert "tenant.created" in {e.type for e in listed.events}
    assert listed.events[0].sequence == 1


async def test_concurrent_publishes_share_commits_and_each_gets_its_own_event(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    """Group commit (events/appender.py): calls that arrive while the tenant's commit runs
    go together in the next one; each still gets its own event, in one gap-free run."""
    appender = server[0].capabilities.event_appender
    stub = rpc.EventsServiceStub(channel)
    commits_before, appended_before = appender.commits, appender.appended
    calls = [
        stub.PublishEvent(
            pb.PublishEventRequest(type="deal.won", source="crm", data=_data(i=i)), metadata=tenant.publisher
        )
        for i in range(40)
    ]
    events = await asyncio.gather(*calls)
    assert len({e.id for e in events}) == 40
    assert sorted(e.sequence for e in events) == list(
        range(min(e.sequence for e in events), min(e.sequence for e in events) + 40)
    )
    assert sorted(e.data["i"] for e in events) == list(range(40))
    assert appender.appended - appended_before == 40
    # 40 calls in flight at once cannot have needed 40 transactions.
    assert appender.commits - commits_before < 40


async def test_in_one_group_a_repeated_key_returns_the_first_event_and_a_reused_one_fails_alone(
    channel: grpc.aio.Channel, tenant: Tenant
) -> None:
    stub = rpc.EventsServiceStub(channel)

    def call(key: str, type: str = "deal.won") -> Any:
        return stub.PublishEvent(
            pb.PublishEventRequest(type=type, source="crm", idempotency_key=key), metadata=tenant.publisher
        )

    # Concurrent first uses of one key: whichever commits first, every call gets that event.
    first_uses = await asyncio.gather(*(call("same-key") for _ in range(6)))
    assert len({e.id for e in first_uses}) == 1
    results = await asyncio.gather(
        *(call("same-key") for _ in range(5)),
        call("same-key", type="deal.lost"),  # the key again, with another envelope
        *(call(f"own-{i}") for i in range(6)),
        return_exceptions=True,
    )
    repeated, reused, own = results[:5], results[5], results[6:]
    assert [r.id for r in repeated] == [first_uses[0].id] * 5  # type: ignore[union-attr]
    assert isinstance(reused, grpc.aio.AioRpcError)
    assert reused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(reused) == "IDEMPOTENCY_KEY_REUSED"
    # The refusal failed that call alone: its group's other events were stored.
    # gather(return_exceptions=True) types each result as event-or-exception; none is one here.
    assert len({r.id for r in own}) == 6 and not any(isinstance(r, BaseException) for r in own)  # type: ignore[union-attr]
    listed = await stub.ListEvents(
        pb.ListEventsRequest(page_size=100, sources=["crm"]), metadata=tenant.reader
    )
    keys = [e.idempotency_key for e in listed.events]
    assert keys.count("same-key") == 1 and len(keys) == 7  # nothing stored twice, nothing lost


async def test_a_publish_given_up_while_waiting_for_its_group_stores_nothing(
    server: tuple[NexusServer, int], tenant: Tenant
) -> None:
    appender = server[0].capabilities.event_appender
    first = asyncio.create_task(
        appender.publish(tenant_id=tenant.id, publisher_key_id="", draft=Draft("deal.won", "crm"))
    )
    for _ in range(3):
        await asyncio.sleep(0)  # the first call's transaction is under way
    given_up = asyncio.create_task(
        appender.publish(tenant_id=tenant.id, publisher_key_id="", draft=Draft("deal.lost", "crm"))
    )
    await asyncio.sleep(0)  # queued behind it
    given_up.cancel()
    stored = await first
    with pytest.raises(asyncio.CancelledError):
        await given_up
    after = await appender.publish(tenant_id=tenant.id, publisher_key_id="", draft=Draft("deal.won", "crm"))
    assert after.sequence == stored.sequence + 1  # nothing between: the cancelled one was not stored
