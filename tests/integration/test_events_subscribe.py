"""Subscribe: replay then live with no gap or duplicate, resume, filters, heartbeats,
isolation between tenants, bounded buffers and graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2

from nexus.events.v1 import event_pb2
from nexus.events.v1 import events_service_pb2 as pb
from nexus.events.v1 import events_service_pb2_grpc as rpc
from nexus_server.app.server import NexusServer, create_server
from nexus_server.config import Settings
from nexus_server.events.hub import Hub
from tests.support import error_info, field_violations, issue_key, key_metadata, make_tenant, register_user

WAIT = 60.0
Metadata = tuple[tuple[str, str], ...]


async def _keys(server: NexusServer, channel: grpc.aio.Channel) -> tuple[str, Metadata, Metadata, Any]:
    owner = await register_user(channel)
    tenant_id = await make_tenant(server, owner.user_id)
    publisher = key_metadata(await issue_key(server, tenant_id, ["events:publish"]))
    reader = key_metadata(await issue_key(server, tenant_id, ["events:subscribe"]))
    return tenant_id, publisher, reader, owner


class Reader:
    """Drains a Subscribe stream on a task, keeping events and heartbeats apart."""

    def __init__(self, call: Any):
        self.call = call
        self.events: list[event_pb2.Event] = []
        self.heartbeats: list[pb.Heartbeat] = []
        self.batch_sizes: list[int] = []  # events per `events` message
        self.error: grpc.aio.AioRpcError | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for message in self.call:
                if message.HasField("event"):
                    self.events.append(message.event)
                elif message.HasField("events"):
                    self.events.extend(message.events.events)
                    self.batch_sizes.append(len(message.events.events))
                else:
                    self.heartbeats.append(message.heartbeat)
                self._changed.set()
        except grpc.aio.AioRpcError as error:
            self.error = error
        self._changed.set()

    async def until(self, predicate: Any, limit: float = WAIT) -> None:
        async def wait() -> None:
            while not predicate(self):
                if self._task.done():
                    raise AssertionError(f"stream ended: {self.error}")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(wait(), limit)

    async def close(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def readers() -> AsyncIterator[list[Reader]]:
    opened: list[Reader] = []
    yield opened
    for reader in opened:
        await reader.close()


def subscribe(channel: grpc.aio.Channel, metadata: Metadata, readers: list[Reader], **fields: Any) -> Reader:
    reader = Reader(
        rpc.EventsServiceStub(channel).Subscribe(pb.SubscribeRequest(**fields), metadata=metadata)
    )
    readers.append(reader)
    return reader


async def publish(
    channel: grpc.aio.Channel,
    metadata: Metadata,
    n: int,
    *,
    type: str = "deal.won",
    source: str = "crm",
    **data: Any,
) -> list[event_pb2.Event]:
    stub = rpc.EventsServiceStub(channel)
    published = []
    for i in range(n):
        struct = struct_pb2.Struct()
        struct.update({"i": i, **data})
        published.append(
            await stub.PublishEvent(
                pb.PublishEventRequest(type=type, source=source, data=struct), metadata=metadata
            )
        )
    return published


def assert_gap_free(events: list[event_pb2.Event], first: int) -> None:
    sequences = [e.sequence for e in events]
    assert sequences == list(range(first, first + len(sequences)))


async def test_eight_concurrent_publishers_reach_every_subscriber_in_order_without_gaps(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    tenant_id, publisher, reader_md, _ = await _keys(server[0], channel)
    live = subscribe(channel, reader_md, readers)
    replaying = subscribe(channel, reader_md, readers, after_sequence=0)
    await live.until(lambda r: r.heartbeats)
    start = live.heartbeats[0].head_sequence
    batches = [publish(channel, publisher, 1000, publisher_no=p) for p in range(8)]
    publishing = asyncio.gather(*batches)
    await asyncio.sleep(0.2)
    # Joins mid-way: replays what is already there, then switches to live under load.
    late = subscribe(channel, reader_md, readers, after_sequence=start)
    published = [e for batch in await publishing for e in batch]
    for reader in (live, replaying, late):
        await reader.until(lambda r: len([e for e in r.events if e.source == "crm"]) >= 8000)
    expected = sorted(e.id for e in published)
    for reader in (live, late, replaying):
        # Before `start` lie Nexus's own events, some of which this key may not see
        # (events/visibility.py): from there on, every sequence.
        assert_gap_free([e for e in reader.events if e.sequence > start], start + 1)
        assert sorted(e.id for e in reader.events if e.source == "crm") == expected
    assert replaying.events[0].sequence == 1
    assert tenant_id


async def test_resuming_after_a_sequence_starts_exactly_after_it(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    published = await publish(channel, publisher, 10)
    cut = published[4].sequence
    reader = subscribe(channel, reader_md, readers, after_sequence=cut)
    await reader.until(lambda r: len(r.events) >= 5)
    more = await publish(channel, publisher, 3)
    await reader.until(lambda r: len(r.events) >= 8)
    assert [e.id for e in reader.events] == [e.id for e in published[5:] + more]


async def test_a_stream_from_now_skips_the_past_and_reports_the_head_first(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    past = await publish(channel, publisher, 3)
    reader = subscribe(channel, reader_md, readers)
    await reader.until(lambda r: r.heartbeats)
    beat = reader.heartbeats[0]
    assert (beat.head_sequence, beat.cursor_sequence, beat.lag) == (past[-1].sequence, past[-1].sequence, 0)
    new = await publish(channel, publisher, 2)
    await reader.until(lambda r: len(r.events) >= 2)
    assert [e.id for e in reader.events] == [e.id for e in new]


async def test_since_starts_at_the_first_event_appended_at_or_after_it(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    before = await publish(channel, publisher, 2)
    after = await publish(channel, publisher, 2)
    since = after[0].create_time
    reader = subscribe(channel, reader_md, readers, since=since)
    await reader.until(lambda r: len(r.events) >= 2)
    assert [e.id for e in reader.events][:2] == [e.id for e in after]
    assert before[-1].create_time.ToDatetime() <= since.ToDatetime()


async def test_since_in_the_future_streams_nothing_until_then(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    later = timestamp_pb2.Timestamp()
    later.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    reader = subscribe(
        channel, reader_md, readers, since=later, heartbeat_interval=duration_pb2.Duration(seconds=1)
    )
    await publish(channel, publisher, 3)
    await reader.until(lambda r: len(r.heartbeats) >= 2)
    assert reader.events == [] and reader.heartbeats[-1].cursor_sequence >= 1


async def test_filters_pick_types_by_pattern_and_sources(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    reader = subscribe(channel, reader_md, readers, types=["deal.*", "lead.new"], sources=["crm"])
    await reader.until(lambda r: r.heartbeats)
    for type, source in [
        ("deal.won", "crm"),
        ("dealer.won", "crm"),
        ("deal.stage.changed", "crm"),
        ("lead.new", "crm"),
        ("lead.lost", "crm"),
        ("deal.won", "other"),
        ("lead.new", "crm"),
    ]:
        await publish(channel, publisher, 1, type=type, source=source)
    await reader.until(lambda r: len(r.events) >= 4)
    await asyncio.sleep(0.3)
    assert [(e.type, e.source) for e in reader.events] == [
        ("deal.won", "crm"),
        ("deal.stage.changed", "crm"),
        ("lead.new", "crm"),
        ("lead.new", "crm"),
    ]


async def test_another_tenants_subscriber_receives_nothing(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher_a, _, _ = await _keys(server[0], channel)
    _, publisher_b, reader_b, _ = await _keys(server[0], channel)
    spy = subscribe(channel, reader_b, readers, after_sequence=0)
    await publish(channel, publisher_a, 20, type="secret.thing")
    marker = await publish(channel, publisher_b, 1, type="marker.sent")
    await spy.until(lambda r: any(e.id == marker[0].id for e in r.events))
    assert "secret.thing" not in {e.type for e in spy.events}


async def test_a_member_may_subscribe_with_an_access_token(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    tenant_id, publisher, _, owner = await _keys(server[0], channel)
    reader = subscribe(channel, owner.metadata(tenant_id), readers, after_sequence=0)
    published = await publish(channel, publisher, 1)
    await reader.until(lambda r: any(e.id == published[0].id for e in r.events))


async def test_heartbeats_carry_the_cursor_even_when_filters_skip_everything(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    reader = subscribe(
        channel, reader_md, readers, types=["never.seen"], heartbeat_interval=duration_pb2.Duration(seconds=1)
    )
    await reader.until(lambda r: r.heartbeats)
    published = await publish(channel, publisher, 5)
    await reader.until(lambda r: r.heartbeats[-1].cursor_sequence == published[-1].sequence)
    beat = reader.heartbeats[-1]
    assert (beat.head_sequence, beat.lag) == (published[-1].sequence, 0)


async def test_resuming_beyond_the_head_is_out_of_range(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, _, reader_md, _ = await _keys(server[0], channel)
    reader = subscribe(channel, reader_md, readers, after_sequence=10**9)
    await reader.until(lambda r: r.error is not None)
    assert reader.error is not None and reader.error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert error_info(reader.error).reason == "SEQUENCE_BEYOND_HEAD"


async def test_a_malformed_filter_is_invalid_argument(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, _, reader_md, _ = await _keys(server[0], channel)
    reader = subscribe(channel, reader_md, readers, types=["Deal.*"], sources=["x y"])
    await reader.until(lambda r: r.error is not None)
    assert reader.error is not None and reader.error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stream_that_asks_for_batches_gets_waiting_events_together_and_in_order(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    published = await publish(channel, publisher, 300)
    first = published[0].sequence - 1
    batched = subscribe(channel, reader_md, readers, after_sequence=first, max_batch=50)
    single = subscribe(channel, reader_md, readers, after_sequence=first)
    for reader in (batched, single):
        await reader.until(lambda r: len(r.events) >= 300)
        assert [e.id for e in reader.events] == [e.id for e in published]
        assert_gap_free(reader.events, first + 1)
    # The replay had all 300 waiting: they came in batches, none above the asked size.
    assert batched.batch_sizes and max(batched.batch_sizes) <= 50 and min(batched.batch_sizes) >= 2
    assert single.batch_sizes == []  # without max_batch, one event a message, always
    # Live, a lone event is not held back to make a batch.
    more = await publish(channel, publisher, 1)
    await batched.until(lambda r: len(r.events) >= 301)
    assert batched.events[-1].id == more[0].id


@pytest.mark.parametrize("max_batch", [-1, 1001])
async def test_a_batch_size_out_of_range_is_invalid_argument(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader], max_batch: int
) -> None:
    _, _, reader_md, _ = await _keys(server[0], channel)
    reader = subscribe(channel, reader_md, readers, max_batch=max_batch)
    await reader.until(lambda r: r.error is not None)
    assert reader.error is not None and reader.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(reader.error) == ["max_batch"]


async def test_a_batch_delay_gathers_a_steady_flow_into_few_messages_and_loses_nothing(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, readers: list[Reader]
) -> None:
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    one_second = duration_pb2.Duration(seconds=1)
    gathered = subscribe(channel, reader_md, readers, max_batch=100, max_batch_delay=one_second)
    plain = subscribe(channel, reader_md, readers, max_batch=100)
    for reader in (gathered, plain):
        await reader.until(lambda r: r.heartbeats)
    start = gathered.heartbeats[0].head_sequence
    # Published one after another (each waits for its answer): without a delay nothing is
    # ever waiting, so each event is a message of its own.
    published = await publish(channel, publisher, 30)
    for reader in (gathered, plain):
        await reader.until(lambda r: len(r.events) >= 30)
        assert [e.id for e in reader.events] == [e.id for e in published]
        assert_gap_free(reader.events, start + 1)
    messages = len(gathered.events) - sum(gathered.batch_sizes) + len(gathered.batch_sizes)
    # The first event went at once; the rest came at most one message per second.
    assert messages < 30 and gathered.batch_sizes


@pytest.mark.parametrize(("seconds", "nanos"), [(1, 1), (2, 0), (-1, 0), (0, -5)])
async def test_a_batch_delay_out_of_range_is_invalid_argument(
    server: tuple[NexusServer, int],
    channel: grpc.aio.Channel,
    readers: list[Reader],
    seconds: int,
    nanos: int,
) -> None:
    _, _, reader_md, _ = await _keys(server[0], channel)
    delay = duration_pb2.Duration(seconds=seconds, nanos=nanos)
    reader = subscribe(channel, reader_md, readers, max_batch=10, max_batch_delay=delay)
    await reader.until(lambda r: r.error is not None)
    assert reader.error is not None and reader.error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(reader.error) == ["max_batch_delay"]


@pytest.fixture
async def small_server(settings: Settings) -> AsyncIterator[tuple[NexusServer, grpc.aio.Channel]]:
    """A second server on the same database whose subscribers buffer at most 8 events."""
    srv, port = await create_server(replace(settings, events_buffer_events=8, events_buffer_bytes=65_536))
    await srv.start()
    # No BDP probing: the client's receive window stays small, so a reader that stops
    # reading pushes back on the server quickly.
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)]
    ) as channel:
        yield srv, channel
    await srv.stop(grace=1)


async def test_a_stalled_subscriber_holds_no_more_than_its_buffer_and_loses_nothing(
    server: tuple[NexusServer, int],
    channel: grpc.aio.Channel,
    small_server: tuple[NexusServer, grpc.aio.Channel],
) -> None:
    srv, small = small_server
    hub: Hub = srv.capabilities.event_hub
    _, publisher, reader_md, _ = await _keys(server[0], channel)
    call = rpc.EventsServiceStub(small).Subscribe(pb.SubscribeRequest(), metadata=reader_md)
    first = await call.read()  # the opening heartbeat; then the client stops reading
    assert first.HasField("heartbeat")
    high_water = 0
    published: list[event_pb2.Event] = []
    for _ in range(40):
        published += await publish(small, publisher, 25, blob="x" * 4000)
        high_water = max(high_water, hub.buffered_events())
    assert high_water <= 8
    assert hub.detached > 0  # it did fall behind and went back to reading the log
    received: list[event_pb2.Event] = []
    while len(received) < len(published):
        message = await asyncio.wait_for(call.read(), WAIT)
        if message.HasField("event"):
            received.append(message.event)
    call.cancel()
    assert [e.id for e in received] == [e.id for e in published]


async def test_a_graceful_stop_ends_streams_with_unavailable(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel, settings: Settings
) -> None:
    _, _, reader_md, _ = await _keys(server[0], channel)
    srv, port = await create_server(settings)
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as other:
        reader = Reader(rpc.EventsServiceStub(other).Subscribe(pb.SubscribeRequest(), metadata=reader_md))
        await reader.until(lambda r: r.heartbeats)
        await srv.stop(grace=1)
        await reader.until(lambda r: r.error is not None)
    assert reader.error is not None and reader.error.code() == grpc.StatusCode.UNAVAILABLE
