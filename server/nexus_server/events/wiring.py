"""Builds the events capability: the servicer, the live fan-out hub and its wake-ups, and
the webhook sender."""

from __future__ import annotations

from dataclasses import dataclass

from nexus_server.app.context import AppContext
from nexus_server.common import periodic
from nexus_server.events import convert
from nexus_server.events.appender import Appender
from nexus_server.events.hub import Hub
from nexus_server.events.service import EventsServicer
from nexus_server.events.wakeups import PgWakeups
from nexus_server.events.webhooks import secrets
from nexus_server.events.webhooks.sender import Sender
from nexus_server.events.webhooks.worker import Admins, Deliverer, Mail


@dataclass(frozen=True)
class Built:
    servicer: EventsServicer
    hub: Hub
    appender: Appender
    webhooks: Deliverer


def build(ctx: AppContext, *, mail: Mail | None = None, admins: Admins | None = None) -> Built:
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
    webhooks = _webhooks(ctx, mail, admins)
    sealer = webhooks.sealer
    return Built(EventsServicer(ctx, hub, appender, sealer), hub, appender, webhooks)


def _webhooks(ctx: AppContext, mail: Mail | None, admins: Admins | None) -> Deliverer:
    settings = ctx.settings
    sealer = secrets.sealer(settings)
    sender = Sender(timeout=settings.webhooks_timeout, allow_private=settings.webhooks_allow_private_urls)
    deliverer = Deliverer(
        ctx.db,
        ctx.clock,
        sealer,
        sender,
        lease=settings.webhooks_lease,
        concurrency=settings.webhooks_concurrency,
        mail=mail,
        admins=admins,
    )
    ctx.db.event_listeners.append(deliverer.on_commit)
    interval = settings.webhooks_poll_interval.total_seconds()

    async def send_forever() -> None:
        if settings.secret_key_previous:
            await secrets.reseal_all(ctx.db, sealer)
        # Woken at once by this process's commits; polling finds what other replicas'
        # commits and retries falling due need.
        await periodic.every("webhooks.deliver", interval, deliverer.step, wake=deliverer.wake)

    async def sweep_forever() -> None:
        await periodic.every("webhooks.sweep", 3600.0, deliverer.sweep)

    ctx.background += [send_forever, sweep_forever]
    ctx.on_stop.append(deliverer.close)
    return deliverer
