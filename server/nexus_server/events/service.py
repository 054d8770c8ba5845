"""EventsService: proto <-> domain for the log's RPCs (webhooks come in a later issue)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from nexus.events.v1 import event_pb2, events_service_pb2
from nexus_server.app.context import AppContext
from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.events import convert, listing, subscription, workflows
from nexus_server.events.appender import Appender
from nexus_server.events.filters import build_filter
from nexus_server.events.hub import Entry, Hub
from nexus_server.interceptors.call import current_call


class EventsServicer:
    def __init__(self, ctx: AppContext, hub: Hub, appender: Appender):
        self.ctx = ctx
        self.db = ctx.db
        self.hub = hub
        self.appender = appender

    async def PublishEvent(
        self, request: events_service_pb2.PublishEventRequest, context: Any
    ) -> event_pb2.Event:
        call = current_call()
        draft = convert.draft(request)
        # Calls arriving while this tenant's last commit runs share the next one (appender.py).
        stored = await self.appender.publish(
            tenant_id=call.tenant_id, publisher_key_id=call.principal.key_id, draft=draft
        )
        return convert.event(stored)

    async def Subscribe(
        self, request: events_service_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[events_service_pb2.SubscribeResponse | bytes]:
        call = current_call()
        violations: list[FieldViolation] = []
        flt = build_filter(request.types, request.sources, violations)
        if violations:
            raise InvalidArgument(violations)
        max_batch = convert.max_batch(request)
        max_batch_delay = convert.max_batch_delay(request)
        stream = subscription.subscribe(
            self.hub,
            self.ctx.clock,
            tenant_id=call.tenant_id,
            flt=flt,
            start=convert.start(request),
            heartbeat=subscription.heartbeat_seconds(convert.heartbeat_request(request)),
            # Ends the stream when its credential stops holding (interceptors/streams.py).
            ending=call.watch,
            max_batch=max_batch,
            max_batch_delay=max_batch_delay,
        )
        async for item in stream:
            # An event's message is bytes serialized once for every subscriber (hub.Entry).
            if isinstance(item, Entry):
                yield item.message
            elif isinstance(item, subscription.Batch):
                yield convert.batch_message(item.entries)
            else:
                yield convert.heartbeat(item)

    async def ListEvents(
        self, request: events_service_pb2.ListEventsRequest, context: Any
    ) -> events_service_pb2.ListEventsResponse:
        call = current_call()
        query = convert.list_query(request)
        async with self.db.unit_of_work(readonly=True) as uow:
            page = await listing.list_events(uow, tenant_id=call.tenant_id, query=query)
        return events_service_pb2.ListEventsResponse(
            events=[convert.event(e) for e in page.events], next_page_token=page.next_page_token
        )

    async def GetEvent(self, request: events_service_pb2.GetEventRequest, context: Any) -> event_pb2.Event:
        call = current_call()
        async with self.db.unit_of_work(readonly=True) as uow:
            stored = await workflows.get_event(uow, tenant_id=call.tenant_id, event_id=request.id)
        return convert.event(stored)
