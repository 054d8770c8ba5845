"""Bad input never becomes INTERNAL or UNKNOWN: hypothesis drives PublishEvent, Subscribe,
ListEvents and GetEvent with generated messages (random and huge strings, unicode, extreme
numbers, missing fields, unknown fields), and a rejected publish leaves the log unchanged.

Hypothesis runs synchronously, so it runs on a thread with a blocking channel while the
session's server keeps serving on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.events.v1 import events_service_pb2 as pb
from nexus_server.app.server import NexusServer
from tests.fuzzing import check_refusal
from tests.support import issue_key, key_metadata, make_tenant, register_user

SERVICE = "/nexus.events.v1.EventsService/"
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

int64 = st.integers(-(2**63), 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
names = st.one_of(
    st.text(max_size=40),
    st.text(max_size=3000),
    st.sampled_from(
        ["deal.won", "deal.*", "*", "nexus", "nexus/x", "crm", "a.b", "evt_x", "sequence desc", ""]
    ),
    st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8}){1,3}", fullmatch=True),
)
timestamps = st.builds(timestamp_pb2.Timestamp, seconds=int64, nanos=int32) | st.builds(
    timestamp_pb2.Timestamp, seconds=st.integers(0, 4_000_000_000), nanos=st.integers(0, 999_999_999)
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50)
    | st.just("x" * 70_000),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


data = st.dictionaries(st.text(max_size=10), json_values, max_size=5) | st.integers(30, 90).map(_deep)
unknown = st.binary(max_size=0) | st.sampled_from([b"\xf8\x06\x01", b"\xfa\x06\x03abc", b"\x98\x3e\x05"])


@st.composite
def publish_requests(draw: st.DrawFn) -> pb.PublishEventRequest:
    request = pb.PublishEventRequest()
    for field in ("type", "source", "subject", "idempotency_key"):
        if draw(st.booleans()):
            setattr(request, field, draw(names))
    if draw(st.booleans()):
        request.time.CopyFrom(draw(timestamps))
    if draw(st.booleans()):
        request.data.CopyFrom(_struct(draw(data)))
    return request


@st.composite
def subscribe_requests(draw: st.DrawFn) -> pb.SubscribeRequest:
    request = pb.SubscribeRequest(
        types=draw(st.lists(names, max_size=25)), sources=draw(st.lists(names, max_size=25))
    )
    start = draw(st.sampled_from(["none", "after", "since"]))
    if start == "after":
        request.after_sequence = draw(int64 | st.integers(0, 5))
    elif start == "since":
        request.since.CopyFrom(draw(timestamps))
    if draw(st.booleans()):
        request.heartbeat_interval.CopyFrom(duration_pb2.Duration(seconds=draw(int64), nanos=draw(int32)))
    return request


@st.composite
def list_requests(draw: st.DrawFn) -> pb.ListEventsRequest:
    request = pb.ListEventsRequest(
        types=draw(st.lists(names, max_size=25)),
        sources=draw(st.lists(names, max_size=25)),
        subject=draw(names),
        min_sequence=draw(int64),
        max_sequence=draw(int64),
        order_by=draw(names),
        page_size=draw(int32),
        page_token=draw(names | st.sampled_from(["eyJxIjoiYWJjIiwicyI6MX0", "!!", "e30"])),
    )
    for field in ("start_time", "end_time"):
        if draw(st.booleans()):
            getattr(request, field).CopyFrom(draw(timestamps))
    return request


class Client:
    """Blocking calls that send the request bytes plus any unknown-field bytes."""

    def __init__(self, port: int, publisher: Any, reader: Any):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.publisher = publisher
        self.reader = reader

    def unary(self, method: str, payload: bytes, metadata: Any) -> grpc.StatusCode:
        call = self.channel.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
        try:
            call(payload, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return check_refusal(error, ALLOWED)
        return grpc.StatusCode.OK

    def stream(self, payload: bytes) -> grpc.StatusCode:
        call = self.channel.unary_stream(
            SERVICE + "Subscribe", request_serializer=None, response_deserializer=None
        )
        responses = call(payload, metadata=self.reader, timeout=30)
        try:
            next(responses)  # the opening heartbeat, or the refusal
        except grpc.RpcError as error:
            return check_refusal(error, ALLOWED)
        finally:
            responses.cancel()
        return grpc.StatusCode.OK

    def head(self) -> int:
        call = self.channel.unary_unary(
            SERVICE + "ListEvents",
            request_serializer=pb.ListEventsRequest.SerializeToString,
            response_deserializer=pb.ListEventsResponse.FromString,
        )
        page = call(
            pb.ListEventsRequest(order_by="sequence desc", page_size=1), metadata=self.reader, timeout=30
        )
        return page.events[0].sequence if page.events else 0


async def _client(server: NexusServer, port: int, channel: grpc.aio.Channel) -> Client:
    owner = await register_user(channel)
    tenant_id = await make_tenant(server, owner.user_id)
    publisher = key_metadata(await issue_key(server, tenant_id, ["events:publish"]))
    reader = key_metadata(await issue_key(server, tenant_id, ["events:subscribe"]))
    return Client(port, publisher, reader)


async def test_publish_fuzz_finds_no_internal_error_and_rejections_change_nothing(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    client = await _client(server[0], server[1], channel)

    @FUZZ
    @given(publish_requests(), unknown)
    def check(request: pb.PublishEventRequest, extra: bytes) -> None:
        before = client.head()
        code = client.unary("PublishEvent", request.SerializeToString() + extra, client.publisher)
        if code != grpc.StatusCode.OK:
            assert client.head() == before, "a rejected publish appended nothing"

    try:
        await asyncio.to_thread(check)
    finally:
        client.channel.close()


async def test_subscribe_list_and_get_fuzz_find_no_internal_error(
    server: tuple[NexusServer, int], channel: grpc.aio.Channel
) -> None:
    client = await _client(server[0], server[1], channel)

    @FUZZ
    @given(subscribe_requests(), list_requests(), names, unknown)
    def check(
        subscribe: pb.SubscribeRequest, listing: pb.ListEventsRequest, event_id: str, extra: bytes
    ) -> None:
        client.stream(subscribe.SerializeToString() + extra)
        client.unary("ListEvents", listing.SerializeToString() + extra, client.reader)
        client.unary("GetEvent", pb.GetEventRequest(id=event_id).SerializeToString() + extra, client.reader)

    try:
        await asyncio.to_thread(check)
    finally:
        client.channel.close()
