"""EventsService: proto <-> domain for the log's RPCs and the webhook endpoints'."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from google.protobuf import empty_pb2

from nexus.events.v1 import event_pb2, events_service_pb2, webhook_pb2
from nexus.events.v1.events_service_pb2_grpc import EventsServiceServicer
from nexus_server.app.context import AppContext
from nexus_server.common.sealing import Sealer
from nexus_server.events import convert, listing, subscription, visibility, workflows
from nexus_server.events.appender import Appender
from nexus_server.events.hub import Hub
from nexus_server.events.webhooks import convert as hooks_convert
from nexus_server.events.webhooks import workflows as hooks
from nexus_server.interceptors.call import Call, ServicerContext, current_call


class EventsServicer(EventsServiceServicer):
    def __init__(self, ctx: AppContext, hub: Hub, appender: Appender, sealer: Sealer):
        self.ctx = ctx
        self.db = ctx.db
        self.hub = hub
        self.appender = appender
        self.sealer = sealer  # webhook signing secrets at rest
        self.allow_private = ctx.settings.webhooks_allow_private_urls

    async def CreateWebhookEndpoint(
        self, request: events_service_pb2.CreateWebhookEndpointRequest, context: ServicerContext
    ) -> webhook_pb2.WebhookEndpoint:
        call = current_call()
        fields = hooks_convert.create_fields(request, allow_private=self.allow_private)
        async with self.db.unit_of_work() as uow:
            made = await hooks.create(uow, self.sealer, call.tenant_id, fields)
        return hooks_convert.shown(made)

    async def GetWebhookEndpoint(
        self, request: events_service_pb2.GetWebhookEndpointRequest, context: ServicerContext
    ) -> webhook_pb2.WebhookEndpoint:
        call, endpoint_id = current_call(), hooks_convert.endpoint_id(request.id)
        async with self.db.unit_of_work(readonly=True) as uow:
            row = await hooks.get(uow, call.tenant_id, endpoint_id)
        return hooks_convert.endpoint(row)

    async def ListWebhookEndpoints(
        self, request: events_service_pb2.ListWebhookEndpointsRequest, context: ServicerContext
    ) -> events_service_pb2.ListWebhookEndpointsResponse:
        call, size = current_call(), hooks_convert.endpoints_page_size(request)
        async with self.db.unit_of_work(readonly=True) as uow:
            rows, token = await hooks.list_endpoints(uow, call.tenant_id, size, request.page_token)
        return hooks_convert.endpoints_response(rows, token)

    async def UpdateWebhookEndpoint(
        self, request: events_service_pb2.UpdateWebhookEndpointRequest, context: ServicerContext
    ) -> webhook_pb2.WebhookEndpoint:
        call = current_call()
        endpoint_id, fields, changing = hooks_convert.update_fields(request, allow_private=self.allow_private)
        async with self.db.unit_of_work() as uow:
            row = await hooks.update(uow, call.tenant_id, endpoint_id, fields, changing)
        return hooks_convert.endpoint(row)

    async def DeleteWebhookEndpoint(
        self, request: events_service_pb2.DeleteWebhookEndpointRequest, context: ServicerContext
    ) -> empty_pb2.Empty:
        call, endpoint_id = current_call(), hooks_convert.endpoint_id(request.id)
        async with self.db.unit_of_work() as uow:
            await hooks.delete(uow, call.tenant_id, endpoint_id)
        return empty_pb2.Empty()

    async def RotateWebhookEndpointSecret(
        self, request: events_service_pb2.RotateWebhookEndpointSecretRequest, context: ServicerContext
    ) -> webhook_pb2.WebhookEndpoint:
        call, endpoint_id = current_call(), hooks_convert.endpoint_id(request.id)
        grace = hooks_convert.grace_period(request)
        async with self.db.unit_of_work() as uow:
            made = await hooks.rotate_secret(uow, self.sealer, call.tenant_id, endpoint_id, grace)
        return hooks_convert.shown(made)

    async def ListWebhookDeliveries(
        self, request: events_service_pb2.ListWebhookDeliveriesRequest, context: ServicerContext
    ) -> events_service_pb2.ListWebhookDeliveriesResponse:
        call = current_call()
        endpoint_id, status, event_id, size = hooks_convert.deliveries_query(request)
        async with self.db.unit_of_work(readonly=True) as uow:
            page = await hooks.list_deliveries(
                uow, call.tenant_id, endpoint_id, status, event_id, size, request.page_token
            )
        return hooks_convert.deliveries_response(page)

    async def RedeliverEvents(
        self, request: events_service_pb2.RedeliverEventsRequest, context: ServicerContext
    ) -> events_service_pb2.RedeliverEventsResponse:
        call = current_call()
        endpoint_id, bounds, key = hooks_convert.redelivery(request)
        async with self.db.unit_of_work() as uow:
            answer = await hooks.redeliver(uow, call.tenant_id, endpoint_id, bounds, key)
        return hooks_convert.redelivered(answer)

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
