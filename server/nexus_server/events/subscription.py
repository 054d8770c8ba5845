"""One subscription: replay from the log, then follow the tenant's tailer, with heartbeats.

The switch from replay to live is exact because both sides count in sequences: a
subscriber reads the log (after `through`, up to the tailer's `position`, which is known
committed) until `through` reaches `position`, then attaches to the tailer in the same
step of the event loop (no await between the check and the attach), and from then on
takes only sequences above `through`. The same path serves a subscriber detached for
overflowing its buffer, so falling behind never drops an event and never grows memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from nexus_server.common.clock import Clock
from nexus_server.common.errors import OutOfRange
from nexus_server.events import store
from nexus_server.events.filters import Filter
from nexus_server.events.hub import Entry, Hub, Subscriber, Tailer
from nexus_server.events.visibility import View

DEFAULT_HEARTBEAT = 5.0
MIN_HEARTBEAT = 1.0
MAX_HEARTBEAT = 60.0
_REPLAY_BATCH = 256
MAX_BATCH = 1000
MAX_BATCH_DELAY = 1.0  # seconds
# A batch message stays well under gRPC's default 4 MiB receive limit, whatever the events'
# sizes: a larger event goes alone.
MAX_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Start:
    """Where a stream starts: after a sequence, at a time, or (both None) from now."""

    after_sequence: int | None = None
    since: datetime | None = None


class Ending(Protocol):
    """What ends a stream from outside (its credential stopped holding): `error` is set,
    then every waker registered with `on_end` is called."""

    def on_end(self, wake: Callable[[], None]) -> None: ...

    def raise_if_ended(self) -> None: ...


@dataclass(frozen=True)
class Batch:
    """Consecutive events sent in one message (a stream that asked for batches)."""

    entries: list[Entry]


@dataclass(frozen=True)
class Heartbeat:
    head_sequence: int
    cursor_sequence: int
    lag: int
    server_time: datetime


def heartbeat_seconds(requested: float) -> float:
    """The interval to use for a requested one: 0 means the default, others are clamped."""
    if requested == 0:
        return DEFAULT_HEARTBEAT
    return min(MAX_HEARTBEAT, max(MIN_HEARTBEAT, requested))


async def subscribe(
    hub: Hub,
    clock: Clock,
    *,
    tenant_id: str,
    flt: Filter,
    start: Start,
    heartbeat: float,
    ending: Ending | None = None,
    max_batch: int = 1,
    max_batch_delay: float = 0.0,
) -> AsyncIterator[Entry | Batch | Heartbeat]:
    """The stream's messages: a heartbeat at once, then events and periodic heartbeats.
    `ending` wakes the stream and raises (e.g. Unauthenticated) when it must end. With
    `max_batch` above 1, events already waiting together go as one Batch; with a
    `max_batch_delay` too, the tailer holds live events up to that long (hub.Tailer's
    pacing) so that more wait together."""
    since: datetime | None = None
    # A tenant already followed here has a known committed head: the tailer's position.
    # Starting from it costs no read (a reconnect storm of thousands of subscribers is
    # thousands of reads otherwise), and the first heartbeat reports it, so "from now"
    # still means "after the head the stream reported".
    known = hub.position(tenant_id)
    if known is not None and start.since is None and (start.after_sequence or 0) <= known:
        head = known
        through = known if start.after_sequence is None else start.after_sequence
    else:
        head, through, since = await _start(hub, tenant_id, start)
    subscriber = Subscriber(
        tenant_id,
        flt,
        through=through,
        since=since,
        max_events=hub.max_events,
        max_bytes=hub.max_bytes,
    )
    subscriber.delay = max_batch_delay if max_batch > 1 else 0.0
    tailer = hub.open(subscriber, head)
    loop = asyncio.get_running_loop()
    beat: asyncio.TimerHandle | None = None
    try:
        if ending is not None:
            ending.on_end(subscriber.wake)
        yield _heartbeat(max(head, tailer.position), subscriber, clock)
        # One timer per interval rings the subscriber (not a timeout per wait: the fan-out
        # wakes every stream for every event, and a timer each time costs as much as the send).
        beat = loop.call_later(heartbeat, subscriber.ring)
        while True:
            if ending is not None:
                ending.raise_if_ended()  # before anything more is sent
            if subscriber.beat_due:
                subscriber.beat_due = False
                yield _heartbeat(tailer.position, subscriber, clock)
                beat = loop.call_later(heartbeat, subscriber.ring)
            elif subscriber.buffer and subscriber.may_send(max_batch):
                if max_batch > 1 and len(subscriber.buffer) > 1:
                    entries = subscriber.take_batch(max_batch, MAX_BATCH_BYTES)
                    if not subscriber.buffer:
                        subscriber.released = False
                    yield Batch(entries) if len(entries) > 1 else entries[0]
                else:
                    subscriber.released = False
                    yield subscriber.take()
            elif not subscriber.live:
                if subscriber.through >= tailer.position:
                    tailer.attach(subscriber)
                else:
                    await _read_log(hub, tailer, subscriber)
            else:
                await subscriber.wait()
    finally:
        if beat is not None:
            beat.cancel()
        hub.close(subscriber)


async def _start(hub: Hub, tenant_id: str, start: Start) -> tuple[int, int, datetime | None]:
    """(head, through, since) for a stream, from the log: its head, the sequence the stream
    starts after, and a `since` not reached yet."""
    async with hub.db.unit_of_work(readonly=True) as uow:
        head = await store.head(uow.session, tenant_id)
        if start.after_sequence is not None:
            if start.after_sequence > head:
                raise OutOfRange(
                    f"after_sequence {start.after_sequence} is beyond this tenant's head {head}",
                    reason="SEQUENCE_BEYOND_HEAD",
                    metadata={"head_sequence": str(head)},
                )
            return head, start.after_sequence, None
        if start.since is not None:
            first = await store.first_sequence_since(uow.session, tenant_id, after=0, since=start.since)
            if first is None:
                return head, head, start.since
            return head, first - 1, None
        return head, head, None


def _heartbeat(head: int, subscriber: Subscriber, clock: Clock) -> Heartbeat:
    cursor = subscriber.cursor
    head = max(head, cursor)
    return Heartbeat(head, cursor, head - cursor, clock.now())


async def _read_log(hub: Hub, tailer: Tailer, subscriber: Subscriber) -> None:
    """Fill the subscriber's buffer from the log, after `through` and up to the tailer."""
    upto = tailer.position
    batch = min(_REPLAY_BATCH, subscriber.max_events)
    async with hub.db.unit_of_work(readonly=True) as uow:
        if subscriber.since is not None:
            first = await store.first_sequence_since(
                uow.session, subscriber.tenant_id, after=subscriber.through, since=subscriber.since
            )
            if first is None or first > upto:
                subscriber.through = upto
                return
            subscriber.through, subscriber.since = first - 1, None
        rows = await store.read(
            uow.session,
            subscriber.tenant_id,
            after=subscriber.through,
            upto=upto,
            flt=subscriber.filter,
            limit=batch,
        )
    for row in rows:
        subscriber.push(Entry(row, hub.render))
    subscriber.through = rows[-1].sequence if len(rows) == batch else upto


def visible(item: Entry | Batch | Heartbeat, view: View) -> Entry | Batch | Heartbeat | None:
    """What of `item` the stream's view lets through: the item, a Batch without the events
    it hides (None if it hides them all), or None for a hidden event."""
    if isinstance(item, Entry):
        return None if view.hides(item.event.type, item.event.source) else item
    if isinstance(item, Batch):
        entries = [e for e in item.entries if not view.hides(e.event.type, e.event.source)]
        return Batch(entries) if entries else None
    return item
