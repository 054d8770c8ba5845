"""Proto messages to domain values and back, for EventsService."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

from google.protobuf import struct_pb2

from nexus.events.v1 import event_pb2, events_service_pb2
from nexus_server.common import structs, timestamps
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.validation import Violations
from nexus_server.db.uow import StoredEvent
from nexus_server.events.envelope import Draft
from nexus_server.events.filters import Filter, build_filter
from nexus_server.events.hub import Entry
from nexus_server.events.listing import ListQuery, Page
from nexus_server.events.subscription import (
    MAX_BATCH,
    MAX_BATCH_DELAY,
    Batch,
    Heartbeat,
    Start,
    heartbeat_seconds,
)


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    try:
        return structs.struct_to_dict(struct)
    except structs.NotJson as error:
        raise InvalidArgument(FieldViolation("data", str(error))) from None


def _time(request: Any, name: str, bad: Violations) -> datetime | None:
    """Timestamp field `name` of `request`, None when unset."""
    if not request.HasField(name):
        return None
    return timestamps.to_datetime(getattr(request, name), name, bad)


def draft(request: events_service_pb2.PublishEventRequest) -> Draft:
    with Violations() as bad:
        time = _time(request, "time", bad)
    return Draft(
        type=request.type,
        source=request.source,
        subject=request.subject,
        time=time,
        data=struct_to_dict(request.data),
        idempotency_key=request.idempotency_key,
    )


def event(stored: StoredEvent) -> event_pb2.Event:
    message = event_pb2.Event(
        id=stored.id,
        tenant_id=stored.tenant_id,
        sequence=stored.sequence,
        source=stored.source,
        type=stored.type,
        subject=stored.subject,
        time=timestamps.timestamp(stored.time),
        idempotency_key=stored.idempotency_key or "",
        create_time=timestamps.timestamp(stored.create_time),
        publisher_api_key_id=stored.publisher_api_key_id,
    )
    message.data.update(stored.data)
    return message


def subscribe_event(stored: StoredEvent) -> tuple[bytes, int]:
    """The stream message for an event, serialized once and sent as these bytes to every
    subscriber (the streams' serializer passes bytes through: app/handlers.py)."""
    data = events_service_pb2.SubscribeResponse(event=event(stored)).SerializeToString()
    return data, len(data)


def batch_message(entries: list[Entry]) -> bytes:
    """SubscribeResponse{events: EventBatch{events: [...]}} from the events' shared bytes,
    without parsing or serializing them again. Each entry's bytes are
    SubscribeResponse{event: e}, field 1 length-delimited, which is exactly how
    EventBatch's repeated field 1 encodes e: the batch's body is their concatenation."""
    body = b"".join(entry.message for entry in entries)
    return _BATCH_TAG + _varint(len(body)) + body


# SubscribeResponse.events: field 3, wire type 2 (length-delimited).
_BATCH_TAG = bytes([3 << 3 | 2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def max_batch(request: events_service_pb2.SubscribeRequest, bad: Violations) -> int:
    if not 0 <= request.max_batch <= MAX_BATCH:
        bad.add("max_batch", f"must be between 0 and {MAX_BATCH}")
    return max(1, request.max_batch)


def max_batch_delay(request: events_service_pb2.SubscribeRequest, bad: Violations) -> float:
    """The delay in seconds, whole milliseconds (streams with one delay share one timer)."""
    delay = request.max_batch_delay
    seconds = delay.seconds + delay.nanos / 1e9
    if delay.seconds < 0 or not 0 <= delay.nanos < 1_000_000_000 or seconds > MAX_BATCH_DELAY:
        bad.add("max_batch_delay", f"must be between 0 and {MAX_BATCH_DELAY:g} second")
        return 0.0
    return round(seconds * 1000) / 1000


def heartbeat(beat: Heartbeat) -> events_service_pb2.SubscribeResponse:
    return events_service_pb2.SubscribeResponse(
        heartbeat=events_service_pb2.Heartbeat(
            head_sequence=beat.head_sequence,
            cursor_sequence=beat.cursor_sequence,
            lag=beat.lag,
            server_time=timestamps.timestamp(beat.server_time),
        )
    )


def start(request: events_service_pb2.SubscribeRequest, bad: Violations) -> Start:
    which = request.WhichOneof("start")
    if which == "after_sequence":
        if request.after_sequence < 0:
            bad.add("after_sequence", "must not be negative")
        return Start(after_sequence=request.after_sequence)
    if which == "since":
        return Start(since=timestamps.to_datetime(request.since, "since", bad))
    return Start()


def heartbeat_request(request: events_service_pb2.SubscribeRequest) -> float:
    interval = request.heartbeat_interval
    return float(interval.seconds) + interval.nanos / 1e9


def list_query(request: events_service_pb2.ListEventsRequest) -> ListQuery:
    with Violations() as bad:
        start_time, end_time = _time(request, "start_time", bad), _time(request, "end_time", bad)
    return ListQuery(
        types=list(request.types),
        sources=list(request.sources),
        subject=request.subject,
        start_time=start_time,
        end_time=end_time,
        min_sequence=request.min_sequence,
        max_sequence=request.max_sequence,
        order_by=request.order_by,
        page_size=request.page_size,
        page_token=request.page_token,
    )


class StreamOptions(TypedDict):
    """subscription.subscribe's arguments that a SubscribeRequest chooses."""

    start: Start
    heartbeat: float
    max_batch: int
    max_batch_delay: float


def subscription(request: events_service_pb2.SubscribeRequest) -> tuple[Filter, StreamOptions]:
    """The filter and stream options a Subscribe asks for; every bad field is reported
    together, the filter's first."""
    with Violations() as bad:
        flt = build_filter(request.types, request.sources, bad)
        options = StreamOptions(
            max_batch=max_batch(request, bad),
            max_batch_delay=max_batch_delay(request, bad),
            start=start(request, bad),
            heartbeat=heartbeat_seconds(heartbeat_request(request)),
        )
    return flt, options


def stream_message(
    item: Entry | Batch | Heartbeat | None,
) -> events_service_pb2.SubscribeResponse | bytes | None:
    """What a stream sends for an item: an event's bytes, serialized once for every
    subscriber (hub.Entry), a batch built from those bytes, or a heartbeat."""
    if item is None:
        return None
    if isinstance(item, Entry):
        message: bytes = item.message  # subscribe_event's bytes (the hub's renderer)
        return message
    if isinstance(item, Batch):
        return batch_message(item.entries)
    return heartbeat(item)


def list_response(page: Page) -> events_service_pb2.ListEventsResponse:
    return events_service_pb2.ListEventsResponse(
        events=[event(e) for e in page.events], next_page_token=page.next_page_token
    )
