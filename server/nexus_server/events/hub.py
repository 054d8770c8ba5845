"""Live fan-out: one tailer per tenant reads new events once and hands them to subscribers.

    commit in this process ──► Hub.on_commit ─┐
    NOTIFY from a replica  ──► Hub.on_remote ─┼─► Tailer (per tenant): position, pending
    periodic head poll     ──► Hub.poll_once ─┘        │ reads the log after `position`
                                                       ▼ in sequence order, once
                                              Subscriber.offer × N (bounded buffers)

The log is the truth and wake-ups are only hints: a tailer advances `position` strictly by
one sequence at a time, from events committed here (handed over by the unit of work, which
may arrive out of order: held in `pending` until the gap fills) or from reading the log
(which, per tenant, is always a gap-free prefix: see db/uow.py). A subscriber whose buffer
would overflow is detached and reads the log itself until it catches up with the tailer
(subscription.py), so a slow reader costs a bounded buffer, never a dropped event.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from nexus_server.common import periodic
from nexus_server.db.uow import Database, StoredEvent
from nexus_server.events import store
from nexus_server.events.filters import Filter

log = logging.getLogger("nexus.events")

# Renders an event once per process into what streams send (the servicer's message) and
# its encoded size, which the buffers' byte bound counts.
Render = Callable[[StoredEvent], tuple[Any, int]]

_READ_BATCH = 1000
# Locally committed events held while an earlier one is missing; past this, drop them and
# let the log reading fill in (they are committed, so it will).
_MAX_PENDING = 10_000


class Entry:
    """An event and its rendering, shared by every subscriber that receives it."""

    __slots__ = ("event", "message", "sequence", "size")

    def __init__(self, event: StoredEvent, render: Render):
        self.event = event
        self.sequence = event.sequence
        self.message, self.size = render(event)


class Subscriber:
    """One stream's position and buffer. `through`: every event with a sequence up to it
    is in the buffer, already sent, or filtered out.

    The fan-out touches every subscriber for every event, so this is the hot path: no
    per-event timer or Event object (a bare future wakes the stream; heartbeats come from
    one timer per interval, see subscription.py), and no filter call when the filter takes
    everything."""

    __slots__ = (
        "_waiter",
        "beat_due",
        "buffer",
        "buffered_bytes",
        "delay",
        "filter",
        "live",
        "max_bytes",
        "max_events",
        "overflows",
        "released",
        "since",
        "takes_all",
        "tenant_id",
        "through",
    )

    def __init__(
        self,
        tenant_id: str,
        flt: Filter,
        *,
        through: int,
        since: datetime | None,
        max_events: int,
        max_bytes: int,
    ):
        self.tenant_id = tenant_id
        self.filter = flt
        self.takes_all = flt.any_type and not flt.sources and not flt.hidden
        self.through = through
        # A `since` start not reached yet: skip events appended before it until one is not.
        self.since = since
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.buffer: deque[Entry] = deque()
        self.buffered_bytes = 0
        self.live = False
        self.overflows = 0
        self.beat_due = False  # set by the stream's heartbeat timer
        # SubscribeRequest.max_batch_delay in seconds (0: never held): the tailer may hold
        # this stream's wake-up that long so that events close together share a message.
        self.delay = 0.0
        self.released = True  # a held stream may send what it has (until it has sent it all)
        self._waiter: asyncio.Future[None] | None = None

    @property
    def cursor(self) -> int:
        """Every matching event up to this sequence has been taken from the buffer."""
        return self.buffer[0].sequence - 1 if self.buffer else self.through

    def has_room(self, size: int) -> bool:
        if not self.buffer:
            return True  # one event always fits, however large
        return len(self.buffer) < self.max_events and self.buffered_bytes + size <= self.max_bytes

    def push(self, entry: Entry) -> None:
        self.buffer.append(entry)
        self.buffered_bytes += entry.size

    def take(self) -> Entry:
        entry = self.buffer.popleft()
        self.buffered_bytes -= entry.size
        return entry

    def take_batch(self, max_events: int, max_bytes: int) -> list[Entry]:
        """The first waiting events, as many as fit in `max_events` and `max_bytes` (the
        first one always)."""
        batch = [self.take()]
        size = batch[0].size
        buffer = self.buffer
        while buffer and len(batch) < max_events and size + buffer[0].size <= max_bytes:
            entry = self.take()
            size += entry.size
            batch.append(entry)
        return batch

    def may_send(self, max_batch: int) -> bool:
        """Whether the stream sends what it has now: always, unless it asked for a delay, is
        live, has not been released since its last send and is short of a full batch."""
        return not self.delay or self.released or not self.live or len(self.buffer) >= max_batch

    def wants(self, event: StoredEvent) -> bool:
        if self.since is not None:
            if event.create_time < self.since:
                return False
            self.since = None
        return self.filter.matches(event.type, event.source)

    def wait(self) -> asyncio.Future[None]:
        """A future done at the next wake(): new events, a detach, or a heartbeat due.
        The stream calls it with nothing to do, in the same step as its last check."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def ring(self) -> None:
        """The heartbeat timer's callback."""
        self.beat_due = True
        self.wake()

    def offer(self, entries: Sequence[Entry], wake: bool = True) -> bool:
        """Take the tailer's next events; False when they do not fit (or do not follow on)
        and the subscriber must go back to reading the log from `through`. With `wake`
        false the caller wakes the stream later (pacing); an overflow wakes it at once."""
        accepted = True
        through = self.through
        buffer = self.buffer
        takes_all = self.takes_all and self.since is None
        for entry in entries:
            sequence = entry.sequence
            if sequence <= through:
                continue
            if sequence != through + 1:
                accepted = False
                break
            if takes_all or self.wants(entry.event):
                if buffer and (
                    len(buffer) >= self.max_events or self.buffered_bytes + entry.size > self.max_bytes
                ):
                    self.overflows += 1
                    accepted = False
                    break
                buffer.append(entry)
                self.buffered_bytes += entry.size
            through = sequence
        self.through = through
        if wake or not accepted:
            self.wake()
        return accepted


class Tailer:
    """A tenant's shared reader of new events, in this process."""

    def __init__(self, hub: Hub, tenant_id: str, position: int):
        self.hub = hub
        self.tenant_id = tenant_id
        self.position = position  # every event up to here has been handed to live subscribers
        self.live: set[Subscriber] = set()
        self.users = 0  # subscriptions open on this tenant, live or catching up
        self.pending: dict[int, StoredEvent] = {}
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        # Streams with a max_batch_delay, by delay: offered events but not woken yet, when
        # their delay's group was last released (loop time), and its pending release.
        self._held: dict[float, set[Subscriber]] = {}
        self._released_at: dict[float, float] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}

    def attach(self, subscriber: Subscriber) -> None:
        subscriber.live = True
        subscriber.released = True  # what it read from the log goes at once
        self.live.add(subscriber)

    def detach(self, subscriber: Subscriber) -> None:
        subscriber.live = False
        self.live.discard(subscriber)

    def wake(self) -> None:
        """Read the log after `position` soon (coalesced: one reader per tenant)."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_log())

    def on_local(self, batch: Iterable[StoredEvent]) -> None:
        for event in batch:
            if event.sequence > self.position:
                self.pending[event.sequence] = event
        self._advance()
        if self.pending:
            # Something committed before these has not reached us (another transaction's
            # hand-over still to come, or another replica): the log has it.
            if len(self.pending) > _MAX_PENDING:
                self.pending.clear()
            self.wake()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for delay in list(self._held):
            self._release(delay)

    async def _read_log(self) -> None:
        while self._dirty and self.users > 0:
            self._dirty = False
            try:
                async with self.hub.db.unit_of_work(readonly=True) as uow:
                    rows = await store.read(
                        uow.session,
                        self.tenant_id,
                        after=self.position,
                        upto=None,
                        flt=None,
                        limit=_READ_BATCH,
                    )
            except Exception:
                # The poll re-wakes us; subscribers meanwhile wait (their heartbeats go on).
                log.exception("reading the event log failed", extra={"tenant_id": self.tenant_id})
                return
            for row in rows:
                if row.sequence > self.position:
                    self.pending[row.sequence] = row
            self._advance()
            if len(rows) == _READ_BATCH:
                self._dirty = True

    def _advance(self) -> None:
        batch: list[StoredEvent] = []
        following = self.position + 1
        while following in self.pending:
            batch.append(self.pending.pop(following))
            following += 1
        if self.pending:
            for stale in [s for s in self.pending if s <= self.position]:
                del self.pending[stale]
        if batch:
            self._dispatch(batch)

    def _dispatch(self, batch: list[StoredEvent]) -> None:
        render = self.hub.render
        entries = [Entry(event, render) for event in batch]
        self.position = batch[-1].sequence
        held = self._held
        for subscriber in list(self.live):
            delay = subscriber.delay
            if not subscriber.offer(entries, wake=not delay):
                self.detach(subscriber)
                self.hub.detached += 1
            elif delay:
                group = held.get(delay)
                if group is None:
                    group = held[delay] = set()
                group.add(subscriber)
        if held:
            loop = asyncio.get_running_loop()
            now = loop.time()
            for delay in list(held):
                if delay in self._timers:
                    continue  # its release is already due
                due = self._released_at.get(delay, -delay) + delay
                if due <= now:
                    self._release(delay)  # quiet for a delay or more: these go at once
                else:
                    self._timers[delay] = loop.call_at(due, self._release, delay)

    def _release(self, delay: float) -> None:
        """Wake the held streams of one delay: one wake-up each, for all offered meanwhile."""
        timer = self._timers.pop(delay, None)
        if timer is not None:
            timer.cancel()
        self._released_at[delay] = asyncio.get_running_loop().time()
        for subscriber in self._held.pop(delay, ()):
            subscriber.released = True
            subscriber.wake()


class Hub:
    """Every tailer of this process, and the wake-ups that drive them."""

    def __init__(
        self,
        db: Database,
        render: Render,
        *,
        max_events: int,
        max_bytes: int,
        poll_interval: float,
    ):
        self.db = db
        self.render = render
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.poll_interval = poll_interval
        self.tailers: dict[str, Tailer] = {}
        self.detached = 0  # times a live subscriber fell behind and went back to the log

    def open(self, subscriber: Subscriber, head: int) -> Tailer:
        """Register a subscription on its tenant's tailer (created at `head` if absent)."""
        tailer = self.tailers.get(subscriber.tenant_id)
        if tailer is None:
            tailer = self.tailers[subscriber.tenant_id] = Tailer(self, subscriber.tenant_id, head)
            # Commits between reading `head` and now were handed to no tailer: read the log.
            tailer.wake()
        elif head > tailer.position:
            # The log is ahead of what this process has seen (another replica's commits).
            tailer.wake()
        tailer.users += 1
        return tailer

    def position(self, tenant_id: str) -> int | None:
        """How far this process has followed `tenant_id`'s log (None if it does not)."""
        tailer = self.tailers.get(tenant_id)
        return None if tailer is None else tailer.position

    def close(self, subscriber: Subscriber) -> None:
        tailer = self.tailers.get(subscriber.tenant_id)
        if tailer is None:
            return
        tailer.detach(subscriber)
        tailer.users -= 1
        if tailer.users <= 0:
            del self.tailers[subscriber.tenant_id]
            tailer.cancel()

    def on_commit(self, batch: list[StoredEvent]) -> None:
        """The unit of work's after-commit listener: events just committed here."""
        by_tenant: dict[str, list[StoredEvent]] = {}
        for event in batch:
            if event.tenant_id in self.tailers:
                by_tenant.setdefault(event.tenant_id, []).append(event)
        for tenant_id, events in by_tenant.items():
            self.tailers[tenant_id].on_local(events)

    def on_remote(self, tenant_id: str, head: int) -> None:
        """Another process says `tenant_id`'s log reached `head`."""
        tailer = self.tailers.get(tenant_id)
        if tailer is not None and head > tailer.position:
            tailer.wake()

    def wake_all(self) -> None:
        for tailer in self.tailers.values():
            tailer.wake()

    def subscriber_count(self) -> int:
        return sum(t.users for t in self.tailers.values())

    def buffered_events(self) -> int:
        return sum(len(s.buffer) for t in self.tailers.values() for s in t.live)

    async def poll_once(self) -> None:
        if not self.tailers:
            return
        async with self.db.unit_of_work(readonly=True) as uow:
            heads = await store.heads(uow.session, list(self.tailers))
        for tenant_id, head in heads.items():
            self.on_remote(tenant_id, head)

    async def poll_forever(self) -> None:
        """Catch what every wake-up missed (a lost NOTIFY, a replica that died mid-way)."""
        await periodic.every("events.heads", self.poll_interval, self.poll_once, logger=log)

    async def close_all(self) -> None:
        for tailer in self.tailers.values():
            tailer.cancel()
        tasks = [t._task for t in self.tailers.values() if t._task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
