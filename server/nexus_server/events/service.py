"""EventsService: proto <-> domain for the log's RPCs (webhooks come in a later issue)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

from nexus.events.v1 import event_pb2, events_service_pb2
from nexus.events.v1.events_service_pb2_grpc import EventsServiceServicer
from nexus_server.app.context import AppContext
from nexus_server.auth.principal import Principal
from nexus_server.common.errors import FieldViolation, InvalidArgument, NotFound
from nexus_server.common.unimplemented import UNIMPLEMENTED
from nexus_server.events import convert, listing, subscription, visibility, workflows
from nexus_server.events.appender import Appender
from nexus_server.events.filters import build_filter
from nexus_server.events.hub import Entry, Hub
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
        violations: list[FieldViolation] = []
        flt = build_filter(request.types, request.sources, violations)
        if violations:
            raise InvalidArgument(violations)
        view = visibility.View(await self._hidden(call.require_principal(), call.tenant_id))
        flt = replace(flt, hidden=view.hidden)
        self._follow_view(call, view)
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
                if not view.hides(item.event.type, item.event.source):
                    yield item.message
            elif isinstance(item, subscription.Batch):
                entries = [e for e in item.entries if not view.hides(e.event.type, e.event.source)]
                if entries:
                    yield convert.batch_message(entries)
            else:
                yield convert.heartbeat(item)

    async def ListEvents(
        self, request: events_service_pb2.ListEventsRequest, context: ServicerContext
    ) -> events_service_pb2.ListEventsResponse:
        call = current_call()
        query = convert.list_query(request)
        async with self.db.unit_of_work(readonly=True) as uow:
            page = await listing.list_events(
                uow,
                tenant_id=call.tenant_id,
                query=query,
                hidden=await self._hidden(call.require_principal(), call.tenant_id),
            )
        return events_service_pb2.ListEventsResponse(
            events=[convert.event(e) for e in page.events], next_page_token=page.next_page_token
        )

    async def GetEvent(
        self, request: events_service_pb2.GetEventRequest, context: ServicerContext
    ) -> event_pb2.Event:
        call = current_call()
        async with self.db.unit_of_work(readonly=True) as uow:
            stored = await workflows.get_event(uow, tenant_id=call.tenant_id, event_id=request.id)
        hidden = await self._hidden(call.require_principal(), call.tenant_id)
        if visibility.is_hidden(stored.type, stored.source, hidden):
            raise NotFound(f"no event {request.id} in this tenant")  # as if it were not there
        return convert.event(stored)

    async def _hidden(self, principal: Principal, tenant_id: str) -> tuple[str, ...]:
        """What of Nexus's own events this caller may not read (visibility.py)."""
        membership = None
        if principal.is_user and not principal.platform_admin and self.ctx.tenants is not None:
            membership = await self.ctx.tenants.membership(principal.user_id, tenant_id)
        return visibility.hidden_for(principal, membership.permissions if membership else frozenset())

    def _follow_view(self, call: Call, view: visibility.View) -> None:
        """Narrow the stream's view when a re-admission (a membership or role change: the
        stream guard) finds its reader holding less."""
        watch = call.watch
        if watch is None:
            return
        tasks: set[asyncio.Task[None]] = set()

        async def refresh(principal: Principal) -> None:
            view.update(await self._hidden(principal, call.tenant_id))

        def readmitted(principal: Principal) -> None:
            task = asyncio.create_task(refresh(principal))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        watch.on_admitted(readmitted)
