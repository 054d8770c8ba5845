"""EventsService: proto <-> domain for the log's RPCs (webhooks come in a later issue)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from nexus.events.v1 import event_pb2, events_service_pb2
from nexus.events.v1.events_service_pb2_grpc import EventsServiceServicer
from nexus_server.app.context import AppContext
from nexus_server.common.unimplemented import UNIMPLEMENTED
from nexus_server.events import convert, listing, subscription, visibility, workflows
from nexus_server.events.appender import Appender
from nexus_server.events.hub import Hub
from nexus_server.interceptors.call import Call, ServicerContext, current_call


class EventsServicer(EventsServiceServicer):
    def __init__(self, ctx: AppContext, hub: Hub, appender: Appender):
        self.ctx = ctx
        self.db = ctx.db
        self.hub = hub
        self.appender = appender

    # Webhooks come in a later issue; until then they answer UNIMPLEMENTED naming the RPC.
    CreateWebhookEndpoint = UNIMPLEMENTED
    GetWebhookEndpoint = UNIMPLEMENTED
    ListWebhookEndpoints = UNIMPLEMENTED
    UpdateWebhookEndpoint = UNIMPLEMENTED
    DeleteWebhookEndpoint = UNIMPLEMENTED
    RotateWebhookEndpointSecret = UNIMPLEMENTED
    ListWebhookDeliveries = UNIMPLEMENTED
    RedeliverEvents = UNIMPLEMENTED

    async def PublishEvent(
        self, request: events_service_pb2.PublishEventRequest, context: ServicerContext
    ) -> event_pb2.Event:
        call = current_call()
        draft = convert.draft(request)
        # Calls arriving while this tenant's last commit runs share the next one (appender.py).
        stored = await self.appender.publish(
            tenant_id=call.tenant_id, publisher_key_id=call.require_principal().key_id, draft=draft
        )
        return convert.event(stored)

    # The base says SubscribeResponse only; an event goes out as the bytes serialized once
    # for every subscriber (hub.Entry, app/handlers.py's stream serializer).
    async def Subscribe(  # type: ignore[override]
        self, request: events_service_pb2.SubscribeRequest, context: ServicerContext
    ) -> AsyncIterator[events_service_pb2.SubscribeResponse | bytes]:
        call = current_call()
        flt, options = convert.subscription(request)
        # Narrowed when a membership or role change re-admits the stream (the stream guard).
        view = await visibility.open_view(
            self.ctx.tenants, call.require_principal(), call.tenant_id, call.watch
        )
        stream = subscription.subscribe(
            self.hub,
            self.ctx.clock,
            tenant_id=call.tenant_id,
            flt=replace(flt, hidden=view.hidden),
            ending=call.watch,  # ends the stream when its credential stops holding
            **options,
        )
        async for item in stream:
            message = convert.stream_message(subscription.visible(item, view))
            if message is not None:
                yield message

    async def ListEvents(
        self, request: events_service_pb2.ListEventsRequest, context: ServicerContext
    ) -> events_service_pb2.ListEventsResponse:
        call, query = current_call(), convert.list_query(request)
        hidden = await self._hidden(call)
        async with self.db.unit_of_work(readonly=True) as uow:
            page = await listing.list_events(uow, tenant_id=call.tenant_id, query=query, hidden=hidden)
        return convert.list_response(page)

    async def GetEvent(
        self, request: events_service_pb2.GetEventRequest, context: ServicerContext
    ) -> event_pb2.Event:
        call = current_call()
        hidden = await self._hidden(call)
        async with self.db.unit_of_work(readonly=True) as uow:
            stored = await workflows.get_event(
                uow, tenant_id=call.tenant_id, event_id=request.id, hidden=hidden
            )
        return convert.event(stored)

    async def _hidden(self, call: Call) -> tuple[str, ...]:
        """What of Nexus's own events this caller may not read (visibility.py)."""
        return await visibility.hidden_from(self.ctx.tenants, call.require_principal(), call.tenant_id)
