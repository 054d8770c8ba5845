"""The streaming driver: subscriber processes holding many Subscribe streams, a publisher at a
fixed rate (open loop), and the server's CPU and memory — issue 7's fan-out measures.

Timeline (all processes share CLOCK_MONOTONIC for the schedule and CLOCK_REALTIME for the
publish times carried in the events):

    spawn subscriber processes → each opens its streams and waits for every stream's first
    heartbeat (the subscription is registered) → spawn the publisher → parent sets
    t_start = now + warmup, t_end = t_start + duration → the publisher publishes on a fixed
    schedule until t_end → subscribers count what arrives in [t_start, t_end) → the parent
    reads the server's CPU at t_start and t_end and its RSS at t_end.

Each published event carries `{"t": <wall time it was due>}` in its data; a subscriber's
latency for it is its own wall clock on arrival minus that, so the figure covers the whole
path (PublishEvent, commit, fan-out, the write, the read) and a server that falls behind
shows it (no coordinated omission: the time is when the publish was due, not when it went).

The subscriber processes read the streams with `bench.stream_h2`, a minimal HTTP/2 reader
that takes each gRPC message as bytes straight off the socket: a grpc.aio client costs about
as much CPU per message as the server spends sending it, so on a small machine the clients,
not the server, would set the number (measured; see the module's docstring).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import struct
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench import stream_h2
from bench.load import LoadOptions, LoadResult, _expect, measure_window
from bench.procs import client_process, cpu_seconds, reap, rss_bytes

SUBSCRIBE = "/nexus.events.v1.EventsService/Subscribe"
PUBLISH = "/nexus.events.v1.EventsService/PublishEvent"
_OPEN_TIMEOUT = 120.0  # seconds for every stream to be established
_STRAGGLERS = 5.0
_OPENING = 100  # streams a subscriber process has opening at once


@dataclass(frozen=True)
class StreamPlan:
    """What the driver sets up: `subscribers` streams over `clients` processes, each process
    spreading its streams over `channels` connections; a publisher at `rate` events/s (0: the
    streams stay idle and only heartbeats flow)."""

    subscribe_keys: tuple[str, ...]  # stream n authenticates with key n % len
    publish_key: str
    subscribers: int
    rate: float
    clients: int = 1
    channels: int = 4
    heartbeat: float = 5.0  # seconds, requested per stream
    publishers: int = 8  # concurrent PublishEvent calls the publisher may have in flight
    event_type: str = "bench.tick"
    read_batch: float = 0.0005  # seconds a subscriber process waits after a wake-up before reading
    max_batch: int = 0  # SubscribeRequest.max_batch: events one message may carry (0: one each)
    max_batch_delay: float = 0.0  # SubscribeRequest.max_batch_delay, seconds (0: never held)


@dataclass
class StreamResult(LoadResult):
    """A LoadResult whose `calls` are deliveries (event messages received on any stream) and
    whose latencies are publish→deliver; `notes` are printed under the row."""

    notes: list[str] = field(default_factory=list)


def run_streams(address: str, plan: StreamPlan, server_pid: int, options: LoadOptions) -> StreamResult:
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    conns: list[Connection] = []

    def spawn(target: Any, *args: Any) -> Connection:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=target, args=(theirs, *args), daemon=True)
        proc.start()
        theirs.close()
        procs.append(proc)
        conns.append(mine)
        return mine

    try:
        opened0 = time.monotonic()
        cpu_open0 = cpu_seconds(server_pid)
        subs = []
        for index in range(plan.clients):
            first = plan.subscribers * index // plan.clients
            last = plan.subscribers * (index + 1) // plan.clients
            subs.append(spawn(_subscriber_main, address, plan, options, first, last))
        rss_before = rss_bytes(server_pid)
        for conn in subs:
            _expect(conn, "ready", _OPEN_TIMEOUT)
        open_seconds = time.monotonic() - opened0
        open_cpu = cpu_seconds(server_pid) - cpu_open0
        pub = spawn(_publisher_main, address, plan, options) if plan.rate > 0 else None
        if pub is not None:
            _expect(pub, "ready", 60.0)

        measured = measure_window(conns, options, server_pid)

        deliveries, messages, heartbeats, client_cpu = 0, 0, 0, 0.0
        errors: Counter[str] = Counter()
        latencies: array[float] = array("d")
        for conn in subs:
            report = _expect(conn, "done", 60.0 + options.duration)
            deliveries += report["events"]
            messages += report["messages"]
            heartbeats += report["heartbeats"]
            client_cpu += report["cpu"]
            errors.update(report["errors"])
            latencies.frombytes(report["latencies"])
        published = 0
        if pub is not None:
            report = _expect(pub, "done", 60.0 + options.duration)
            published = report["published"]
            client_cpu += report["cpu"]
            errors.update({f"publish {k}": v for k, v in report["errors"].items()})
        for proc in procs:
            proc.join(10)
    finally:
        reap(procs, conns)

    window = measured.wall
    result = StreamResult(
        deliveries if plan.rate > 0 else heartbeats,
        dict(errors),
        window,
        array("d", sorted(latencies)),
        measured.server_cpu,
        client_cpu,
        measured.rss,
        options,
    )
    result.notes += _notes(plan, result, published, heartbeats, open_seconds, open_cpu, rss_before)
    if plan.rate > 0 and messages:
        result.notes.insert(
            1, f"{messages / window:,.0f} event messages/s: {deliveries / messages:.2f} events a message"
        )
    return result


def _notes(
    plan: StreamPlan,
    r: StreamResult,
    published: int,
    heartbeats: int,
    open_seconds: float,
    open_cpu: float,
    rss_before: int,
) -> list[str]:
    mib = r.server_rss / 2**20
    if plan.rate <= 0:
        per_stream = r.server_rss / plan.subscribers / 1024
        return [
            f"{plan.subscribers} streams held idle: server RSS {mib:.0f} MiB ({per_stream:.1f} KiB a stream "
            f"incl. the process's base); opened in {open_seconds:.1f} s "
            f"({open_cpu / plan.subscribers * 1e6:.0f} µs server CPU a stream); "
            f"calls/s here = heartbeats received/s ({heartbeats} in the window)",
        ]
    offered = plan.rate * plan.subscribers
    lines = [
        f"{plan.subscribers} streams, {published / r.window:.1f} events/s published "
        f"(schedule {plan.rate:g}/s, offered {offered:,.0f} deliveries/s); calls/s = deliveries/s; "
        f"latency = publish due → received (includes PublishEvent); server RSS {mib:.0f} MiB",
    ]
    if r.calls and r.server_cpu > 0:
        capacity = r.calls / r.server_cpu
        lines.append(
            f"server CPU per delivery {r.cpu_per_call * 1e6:.1f} µs (publishing included) → one full "
            f"server core would deliver ≈{capacity:,.0f}/s (extrapolated from CPU, not measured)"
        )
        if r.client_cpu > 0:
            lines.append(
                f"client CPU per delivery {r.client_cpu / r.calls * 1e6:.1f} µs (subscribers + publisher)"
            )
    load = os.getloadavg()[0]
    cpus = len(os.sched_getaffinity(0))
    if r.throughput < 0.95 * offered and r.server_cores < 0.85:
        lines.append(
            f"FELL BEHIND WITHOUT A FULL CORE: the server used {r.server_cores:.2f} cores while behind "
            f"schedule; other processes held its CPU (load average {load:.1f} on {cpus} CPUs)"
        )
    elif load > cpus:
        lines.append(f"machine busy: load average {load:.1f} on {cpus} CPUs (numbers are pessimistic)")
    return lines


# ---- subscriber processes --------------------------------------------------------------------


def _subscriber_main(
    conn: Connection, address: str, plan: StreamPlan, options: LoadOptions, first: int, last: int
) -> None:
    client_process(conn, options.client_cpus, lambda: _subscriber(conn, address, plan, first, last))


def subscribe_request(heartbeat: float, max_batch: int = 0, max_batch_delay: float = 0.0) -> bytes:
    from google.protobuf import duration_pb2

    from nexus.events.v1 import events_service_pb2 as pb

    interval = duration_pb2.Duration(seconds=int(heartbeat), nanos=int(heartbeat % 1 * 1e9))
    delay = duration_pb2.Duration(nanos=round(max_batch_delay * 1e9) % 1_000_000_000)
    delay.seconds = int(max_batch_delay)
    return pb.SubscribeRequest(
        heartbeat_interval=interval, max_batch=max_batch, max_batch_delay=delay
    ).SerializeToString()


# In a published event's bytes, the data Struct's entry {"t": <double>}: key "t" (field 1),
# value (field 2) a Value whose number_value (field 1, fixed64) follows.
_T_MARK = b"\x0a\x01t\x12\x09\x11"
_DOUBLE = struct.Struct("<d")


def due_time(raw: bytes) -> float:
    """The `t` an event message carries (the wall time its publish was due); nan if none."""
    at = raw.find(_T_MARK)
    return _DOUBLE.unpack_from(raw, at + len(_T_MARK))[0] if at >= 0 else math.nan


def _varint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def batch_events(raw: bytes) -> list[bytes]:
    """A batch message's events (SubscribeResponse.events: field 3 holding EventBatch, whose
    field 1 repeats Event), each as its bytes."""
    length, at = _varint(raw, 1)
    end = at + length
    events = []
    while at < end:
        at += 1  # EventBatch.events' tag (field 1, length-delimited)
        size, at = _varint(raw, at)
        events.append(raw[at : at + size])
        at += size
    return events


class _Tally:
    """What one subscriber process counts, over all its streams."""

    def __init__(self) -> None:
        self.t_start = math.inf
        self.t_end = math.inf
        self.established = 0  # streams whose first message (a heartbeat) arrived
        self.events = 0
        self.messages = 0  # messages that carried events (one, or a batch)
        self.heartbeats = 0
        self.latencies: array[float] = array("d")

    def take(self, stream: stream_h2.Stream, raw: bytes) -> None:
        if stream.messages == 1:
            self.established += 1
        now = time.monotonic()
        if not self.t_start <= now < self.t_end:
            return
        # SubscribeResponse: field 1 (event), 2 (heartbeat) or 3 (a batch of events),
        # length-delimited.
        tag = raw[:1]
        if tag == b"\x12":
            self.heartbeats += 1
            return
        self.messages += 1
        if tag == b"\x1a":
            now = time.time()
            for event in batch_events(raw):
                self.events += 1
                self.latencies.append(now - due_time(event))
            return
        self.events += 1
        self.latencies.append(time.time() - due_time(raw))


def _await_established(
    reader: stream_h2.Reader, tally: _Tally, streams: list[stream_h2.Stream], count: int
) -> None:
    """Read until `count` streams are established: their first message (the opening
    heartbeat) arrived, so the server has registered the subscription."""
    deadline = time.monotonic() + _OPEN_TIMEOUT
    while tally.established < count:
        ended = [s.ended for s in streams[-2 * _OPENING :] if s.ended is not None and s.messages == 0]
        if ended:
            raise ConnectionError(f"{len(ended)} stream(s) ended before their first message: {ended[0]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(streams) - tally.established} stream(s) not established")
        reader.poll(0.05)


def _subscriber(conn: Connection, address: str, plan: StreamPlan, first: int, last: int) -> None:
    host, port = address.rsplit(":", 1)
    tally = _Tally()
    reader = stream_h2.Reader(host, int(port), tally.take, batch=plan.read_batch)
    request = subscribe_request(plan.heartbeat, plan.max_batch, plan.max_batch_delay)
    try:
        for _ in range(max(1, plan.channels)):
            reader.connect()
        streams = []
        for n in range(first, last):
            key = plan.subscribe_keys[n % len(plan.subscribe_keys)]
            # Round robin over the connections, adding one when all are at the server's
            # stream limit (SETTINGS_MAX_CONCURRENT_STREAMS).
            c = reader.connections[n % len(reader.connections)]
            if c.room < 1:
                c = next((x for x in reader.connections if x.room >= 1), None) or reader.connect()
            stream, data = c.start(SUBSCRIBE, request, (("authorization", f"Bearer {key}"),))
            reader.send(c, data)
            streams.append(stream)
            # A few at a time: grpc cancels new streams that wait too long to be accepted
            # (measured: a burst of 3,000 on one connection loses a fifth of them).
            if len(streams) - tally.established >= _OPENING:
                _await_established(reader, tally, streams, len(streams) - _OPENING // 2)
        _await_established(reader, tally, streams, len(streams))
        conn.send({"kind": "ready", "streams": len(streams)})
        while not conn.poll(0):
            reader.poll(0.05)
        t_start, t_end = conn.recv()
        tally.t_start, tally.t_end = t_start, t_end
        cpu0: float | None = None
        while (now := time.monotonic()) < t_end:
            if cpu0 is None and now >= t_start:
                cpu0 = time.process_time()
            reader.poll(min(0.05, max(0.0, (t_start if cpu0 is None else t_end) - now)))
        cpu = time.process_time() - (cpu0 if cpu0 is not None else time.process_time())
        errors: Counter[str] = Counter()
        for s in streams:
            if s.ended is not None and s.ended_at < t_end:
                errors[f"stream ended: {s.ended}"] += 1
        conn.send(
            {
                "kind": "done",
                "events": tally.events,
                "messages": tally.messages,
                "heartbeats": tally.heartbeats,
                "errors": dict(errors),
                "cpu": cpu,
                "latencies": tally.latencies.tobytes(),
            }
        )
    finally:
        reader.close()


# ---- the publisher ---------------------------------------------------------------------------


def _publisher_main(conn: Connection, address: str, plan: StreamPlan, options: LoadOptions) -> None:
    client_process(conn, options.client_cpus, lambda: asyncio.run(_publisher(conn, address, plan)))


async def _publisher(conn: Connection, address: str, plan: StreamPlan) -> None:
    import grpc

    from nexus.events.v1 import events_service_pb2 as pb

    channel = grpc.aio.insecure_channel(address)
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_unary(PUBLISH)
        metadata = (("authorization", f"Bearer {plan.publish_key}"),)
        request = pb.PublishEventRequest(type=plan.event_type, source="bench")
        conn.send({"kind": "ready"})
        t_start, t_end = await asyncio.to_thread(conn.recv)
        interval = 1.0 / plan.rate
        errors: Counter[str] = Counter()
        published = [0]
        in_flight = asyncio.Semaphore(plan.publishers)
        # Wall time and monotonic time of the same instant: the schedule is monotonic, the
        # time carried in the event is wall time (the subscribers' clock for latency).
        wall_offset = time.time() - time.monotonic()

        async def publish(due: float) -> None:
            try:
                request.data.Clear()
                request.data.update({"t": due + wall_offset})
                await call(request.SerializeToString(), metadata=metadata)
                if t_start <= time.monotonic() < t_end:
                    published[0] += 1
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
            finally:
                in_flight.release()

        tasks: set[asyncio.Task[None]] = set()
        cpu0, cpu_at = time.process_time(), t_start
        cpu_window = 0.0
        due = time.monotonic()
        while due < t_end:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if cpu_at is not None and time.monotonic() >= cpu_at:
                cpu0, cpu_at = time.process_time(), None
            await in_flight.acquire()
            task = asyncio.create_task(publish(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            due += interval
        cpu_window = time.process_time() - cpu0
        await asyncio.wait(tasks, timeout=_STRAGGLERS) if tasks else None
        conn.send({"kind": "done", "published": published[0], "errors": dict(errors), "cpu": cpu_window})
    finally:
        await channel.close()
