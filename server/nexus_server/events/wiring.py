"""Builds the events capability: the servicer, the live fan-out hub and its wake-ups."""

from __future__ import annotations

from dataclasses import dataclass

from nexus_server.app.context import AppContext
from nexus_server.events import convert
from nexus_server.events.appender import Appender
from nexus_server.events.hub import Hub
from nexus_server.events.service import EventsServicer
from nexus_server.events.wakeups import PgWakeups


@dataclass(frozen=True)
class Built:
    servicer: EventsServicer
    hub: Hub
    appender: Appender


def build(ctx: AppContext) -> Built:
    settings = ctx.settings
    hub = Hub(
        ctx.db,
        convert.subscribe_event,
        max_events=settings.events_buffer_events,
        max_bytes=settings.events_buffer_bytes,
        poll_interval=settings.events_poll_interval.total_seconds(),
    )
    ctx.db.event_listeners.append(hub.on_commit)
    ctx.background.append(hub.poll_forever)
    ctx.on_stop.append(hub.close_all)
    if not settings.is_sqlite:
        # Other replicas' commits wake our tailers; the embedded SQLite default is one process.
        wakeups = PgWakeups(settings.database_url, hub)
        ctx.db.event_listeners.append(wakeups.on_commit)
        ctx.background.append(wakeups.listen_forever)
        ctx.on_stop.append(wakeups.close)
    appender = Appender(ctx.db)
    ctx.on_stop.append(appender.close)
    return Built(EventsServicer(ctx, hub, appender), hub, appender)
