"""Fan-out: each enabled endpoint follows its tenant's log from its own cursor.

A step locks the endpoints that are behind their tenant's head (skipping those another
replica holds), reads each tenant's events after the lowest of its endpoints' cursors once,
creates a delivery for every event an endpoint's filters match, and moves the cursors, all
in one transaction. Because the cursor is in the database, nothing published is missed
whatever happened to the process that was fanning out; because it moves in the same
transaction as the deliveries it accounts for, nothing is fanned out twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from itertools import groupby
from typing import Any

from nexus_server.common import ids
from nexus_server.common.validation import Violations
from nexus_server.db.uow import StoredEvent, UnitOfWork
from nexus_server.events import store as log
from nexus_server.events.filters import Filter, build_filter
from nexus_server.events.webhooks import store
from nexus_server.events.webhooks.rules import Status
from nexus_server.events.webhooks.store import EndpointRow

EVENTS_PER_STEP = 1000
ENDPOINTS_PER_STEP = 200


def endpoint_filter(row: EndpointRow) -> Filter:
    """The stored patterns as a Filter (they were checked when saved)."""
    return build_filter(row.types, row.sources, Violations())


def delivery(
    row: EndpointRow, event: StoredEvent, now: datetime, *, redelivery: bool = False
) -> dict[str, Any]:
    return {
        "id": ids.new_id("dlv", at=now),
        "tenant_id": row.tenant_id,
        "endpoint_id": row.id,
        "event_id": event.id,
        "event_sequence": event.sequence,
        "event_type": event.type,
        "status": Status.PENDING.value,
        "attempt_count": 0,
        "response_status_code": 0,
        "last_error": "",
        "last_attempt_time": None,
        "next_attempt_time": now,
        "create_time": now,
        "redelivery": redelivery,
    }


async def step(uow: UnitOfWork) -> int:
    """One fan-out step over the endpoints that are behind; the number of deliveries made
    (0 when every endpoint has caught up or is being fanned out elsewhere)."""
    behind = await store.endpoints_behind(uow.session, ENDPOINTS_PER_STEP)
    if not behind:
        return 0
    heads = await log.heads(uow.session, {row.tenant_id for row in behind})
    made = 0
    for tenant_id, group in groupby(behind, key=lambda row: row.tenant_id):
        rows = list(group)
        _, count = await _advance(uow, rows, min(row.cursor for row in rows), heads.get(tenant_id, 0))
        made += count
    return made


async def catch_up(uow: UnitOfWork, row: EndpointRow) -> None:
    """Bring one endpoint (locked by the caller) to its tenant's head under its current
    filters, before they change (UpdateWebhookEndpoint)."""
    head = await uow.head_sequence(row.tenant_id)
    while row.cursor < head:
        reach, _ = await _advance(uow, [row], row.cursor, head)
        row = replace(row, cursor=reach)


async def _advance(uow: UnitOfWork, rows: Sequence[EndpointRow], low: int, head: int) -> tuple[int, int]:
    """Deliveries for the events in (low, reach], where reach is `head` or the last event
    one read returns; every endpoint's cursor moves to reach. Returns (reach, deliveries)."""
    events = await log.read(
        uow.session, rows[0].tenant_id, after=low, upto=head, flt=None, limit=EVENTS_PER_STEP
    )
    reach = events[-1].sequence if len(events) == EVENTS_PER_STEP else head
    now = uow.clock.now()
    made: list[dict[str, Any]] = []
    for row in rows:
        flt = endpoint_filter(row)
        made += [
            delivery(row, event, now)
            for event in events
            if row.cursor < event.sequence <= reach and flt.matches(event.type, event.source)
        ]
        if reach > row.cursor:  # never back: an endpoint made later starts further on
            await store.set_cursor(uow.session, row.id, reach)
    await store.insert_deliveries(uow.session, made)
    return reach, len(made)
