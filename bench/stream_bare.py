"""The fan-out floor: a bare grpc.aio server that does only what Subscribe's delivery needs.

`python -m bench.runner events-bare` serves EventsService's Subscribe and PublishEvent with
no interceptors, no database and no Nexus code: PublishEvent turns the request into a
SubscribeResponse, serializes it once, appends the bytes to every open stream's buffer and
wakes it; each stream is an async generator yielding its buffer (after one opening
heartbeat, which tells the driver the stream is established). So the row measures what
grpc.aio itself costs per streamed message on this machine — what any Python fan-out
built on it, Nexus's included, cannot go below — with the same driver, messages and load
as the Nexus rows.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

_SERVICE = "nexus.events.v1.EventsService"


class _Stream:
    __slots__ = ("buffer", "waiter")

    def __init__(self) -> None:
        self.buffer: deque[bytes] = deque()
        self.waiter: asyncio.Future[None] | None = None


async def serve(_args: argparse.Namespace) -> None:
    import grpc
    from google.protobuf import timestamp_pb2

    from bench.runner import _ready, _until_signalled
    from nexus.events.v1 import event_pb2
    from nexus.events.v1 import events_service_pb2 as pb

    streams: set[_Stream] = set()
    sequence = [0]
    opening = pb.SubscribeResponse(heartbeat=pb.Heartbeat()).SerializeToString()

    async def subscribe(request: bytes, context: Any) -> AsyncIterator[bytes]:
        me = _Stream()
        streams.add(me)
        loop = asyncio.get_running_loop()
        try:
            yield opening
            while True:
                while me.buffer:
                    yield me.buffer.popleft()
                me.waiter = loop.create_future()
                await me.waiter
        finally:
            streams.discard(me)

    async def publish(request: pb.PublishEventRequest, context: Any) -> event_pb2.Event:
        sequence[0] += 1
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(time.time_ns())
        event = event_pb2.Event(
            id=f"evt_bare{sequence[0]:018d}",
            sequence=sequence[0],
            source=request.source,
            type=request.type,
            subject=request.subject,
            time=now,
            create_time=now,
        )
        event.data.CopyFrom(request.data)
        data = pb.SubscribeResponse(event=event).SerializeToString()
        for stream in streams:
            stream.buffer.append(data)
            waiter = stream.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        return event

    handlers = {
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            subscribe, request_deserializer=None, response_serializer=None
        ),
        "PublishEvent": grpc.unary_unary_rpc_method_handler(
            publish,
            request_deserializer=pb.PublishEventRequest.FromString,
            response_serializer=event_pb2.Event.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _ready(port)
    await _until_signalled()
    await server.stop(1)
