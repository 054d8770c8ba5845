"""A stream's max_batch_delay: the tailer wakes such a stream at most once per delay while
events keep coming, a lone event after a quiet delay goes at once, and nothing is lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from nexus_server.db.uow import StoredEvent
from nexus_server.events.filters import Filter
from nexus_server.events.hub import Entry, Hub, Subscriber, Tailer

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DELAY = 0.2


def _event(sequence: int) -> StoredEvent:
    return StoredEvent(f"evt_{sequence}", "ten_x", sequence, "a.b", "s", "", NOW, {}, None, NOW)


def _tailer() -> Tailer:
    # Events handed over in order never make the tailer read the log, so no database.
    hub = Hub(None, lambda e: (e, 10), max_events=100, max_bytes=10**6, poll_interval=1.0)  # type: ignore[arg-type]
    return Tailer(hub, "ten_x", 0)


def _live(tailer: Tailer, delay: float) -> Subscriber:
    subscriber = Subscriber("ten_x", Filter(), through=0, since=None, max_events=100, max_bytes=10**6)
    subscriber.delay = delay
    tailer.attach(subscriber)
    return subscriber


def _drain(subscriber: Subscriber) -> list[int]:
    """What the stream does when it may send: take everything, then wait for a release."""
    taken = [subscriber.take().sequence for _ in range(len(subscriber.buffer))]
    subscriber.released = False
    return taken


async def test_a_lone_event_goes_at_once_and_a_flow_is_gathered_per_delay() -> None:
    tailer = _tailer()
    held = _live(tailer, DELAY)
    plain = _live(tailer, 0.0)

    waiting: Any = held.wait()
    tailer.on_local([_event(1)])
    assert waiting.done() and held.may_send(100)  # quiet before it: no wait
    assert _drain(held) == [1] and _drain(plain) == [1]

    waiting, plain_waiting = held.wait(), plain.wait()
    tailer.on_local([_event(2)])
    tailer.on_local([_event(3)])
    assert plain_waiting.done()  # a stream without a delay is woken at once
    assert not waiting.done() and not held.may_send(100)  # within the delay: held
    await asyncio.wait_for(waiting, 5)
    assert held.may_send(100) and _drain(held) == [2, 3]  # one wake-up for both


async def test_a_full_batch_goes_without_waiting_for_the_release() -> None:
    tailer = _tailer()
    held = _live(tailer, DELAY)
    tailer.on_local([_event(1)])
    _drain(held)
    tailer.on_local([_event(2), _event(3)])
    assert held.may_send(2) and not held.may_send(3)


async def test_a_stream_catching_up_from_the_log_is_not_held() -> None:
    subscriber = Subscriber("ten_x", Filter(), through=0, since=None, max_events=100, max_bytes=10**6)
    subscriber.delay = DELAY
    subscriber.released = False
    subscriber.push(Entry(_event(1), lambda e: (e, 10)))
    assert subscriber.may_send(100)  # not live: what it read goes at once
    tailer = _tailer()
    tailer.attach(subscriber)
    assert subscriber.may_send(100)  # attaching releases what it still has


async def test_closing_the_tailer_releases_held_streams() -> None:
    tailer = _tailer()
    held = _live(tailer, DELAY)
    tailer.on_local([_event(1)])
    _drain(held)
    waiting = held.wait()
    tailer.on_local([_event(2)])
    assert not waiting.done()
    tailer.cancel()
    assert waiting.done() and held.may_send(100)
