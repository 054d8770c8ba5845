"""The webhook driver: a receiver process counting POSTs, a sender (Nexus, or the bare httpx
floor) told to deliver a round of events to every endpoint, and the sender's CPU.

Timeline (CLOCK_MONOTONIC is shared by every process):

    spawn the receiver (pinned to the client CPUs) → it listens on 127.0.0.1:0 and says its
    port → the sender's side is set up with one endpoint per path /hook/<n> of the
    receiver → warm-up round: `warmup_events` events to every endpoint, wait until the
    receiver counted them all and the sender is done (Nexus: every delivery recorded as
    succeeded) → measured round: arm the receiver for the new total, read the sender's CPU,
    t0 = now, trigger `events` events to every endpoint → the receiver reports the
    monotonic time of the request that completed the total → the sender's CPU again →
    deliveries/s = endpoints × events ÷ (t_last − t0).

So the figure is from the first append (Nexus: the first PublishEvent going out) to the
last delivery's arrival, connection setup included only where the warm-up did not already
leave a kept-alive connection. The receiver answers 204 as soon as a request's body is in,
with HTTP/1.1 keep-alive, on its own core: a minimal asyncio Protocol on uvloop (a few µs a
request), counting requests per path, so a sender that skips or repeats an endpoint's
delivery shows as an error under the row.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol, cast

from bench.load import LoadFailed, LoadOptions, LoadResult, _expect
from bench.procs import client_process, cpu_seconds, reap, rss_bytes

_ARRIVAL_TIMEOUT = 120.0  # seconds for a round's deliveries to arrive
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
EVENT_TYPE = "deal.won"
EVENT_SOURCE = "bench-sales"


def event_data(n: int) -> dict[str, Any]:
    """Event n's data: a small business payload (both rows' bodies carry it)."""
    return {
        "deal_id": f"deal_{n:08d}",
        "stage": "won",
        "amount_cents": 125_000 + n,
        "currency": "EUR",
        "owner_user_id": "usr_0123456789abcdefghij",
        "tags": ["bench", "webhook"],
    }


def hook_path(endpoint: int) -> str:
    return f"/hook/{endpoint}"


@dataclass(frozen=True)
class WebhookPlan:
    """`events` events (after `warmup_events`) delivered to each of `endpoints` endpoints."""

    endpoints: int = 100
    events: int = 50
    warmup_events: int = 5


@dataclass
class WebhookResult(LoadResult):
    """A LoadResult whose `calls` are deliveries counted by the receiver in the measured
    round and whose window runs from the first append to the last arrival; no latencies
    (p50/p99 show `-`); `notes` are printed under the row."""

    notes: list[str] = field(default_factory=list)


class Side(Protocol):
    """The sender under test, seen from the driver."""

    def setup(self, urls: Sequence[str]) -> None:
        """Make one endpoint per URL, in order (endpoint n is urls[n])."""

    def start(self, first: int, last: int) -> None:
        """Begin delivering events first..last-1 to every endpoint; return at once."""

    def finish(self, expected: int) -> tuple[dict[str, int], float]:
        """After the receiver counted the round: wait until the sender is done with it
        (`expected`: deliveries so far); its errors, and its own CPU seconds (the
        driver-side processes' that are not the server's)."""

    def notes(self) -> list[str]: ...

    def diagnose(self) -> str:
        """What the sender's side can tell about a round that did not arrive."""

    def close(self) -> None: ...


class Receiver:
    """The receiver process and its pipe."""

    def __init__(self, procs: list[Any], conns: list[Connection], cpus: str):
        ctx = mp.get_context("spawn")
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_receiver_main, args=(theirs, cpus), name="bench-receiver", daemon=True)
        proc.start()
        theirs.close()
        procs.append(proc)
        conns.append(mine)
        self.conn = mine
        self.port = int(_expect(mine, "ready", 60.0)["port"])

    def arm(self, total: int) -> dict[str, Any]:
        """Ask to be told when `total` requests have arrived; the receiver's state now."""
        self.conn.send(("expect", total))
        return _expect(self.conn, "armed", 10.0)

    def reached(self, total: int, timeout: float = _ARRIVAL_TIMEOUT) -> dict[str, Any]:
        if not self.conn.poll(timeout):
            counts = self.counts()
            raise LoadFailed(
                f"only {counts['count']} of {total} webhook deliveries reached the receiver "
                f"in {timeout:.0f} s"
            )
        return _expect(self.conn, "reached", 1.0)

    def counts(self) -> dict[str, Any]:
        self.conn.send(("counts",))
        return _expect(self.conn, "counts", 10.0)


def run_webhooks(
    server_pid: int, side: Side, plan: WebhookPlan, options: LoadOptions, log_tail: Callable[[], str]
) -> WebhookResult:
    procs: list[Any] = []
    conns: list[Connection] = []
    try:
        receiver = Receiver(procs, conns, options.client_cpus)
        urls = [f"http://127.0.0.1:{receiver.port}{hook_path(n)}" for n in range(plan.endpoints)]
        side.setup(urls)
        n, warm = plan.endpoints, plan.warmup_events
        try:
            if warm:
                receiver.arm(n * warm)
                side.start(0, warm)
                receiver.reached(n * warm)
                side.finish(n * warm)
            total = n * (warm + plan.events)
            before = receiver.arm(total)
            cpu0 = cpu_seconds(server_pid)
            t0 = time.monotonic()
            side.start(warm, warm + plan.events)
            after = receiver.reached(total)
        except LoadFailed as error:
            raise LoadFailed(f"{error}; {side.diagnose()}; the server's log:\n{log_tail()}") from None
        cpu1 = cpu_seconds(server_pid)
        rss = rss_bytes(server_pid)
        errors, side_cpu = side.finish(total)
        counts = receiver.counts()
        receiver.conn.send(("stop",))
    finally:
        reap(procs, conns)

    window = after["at"] - t0
    errors = dict(errors)
    per_path: dict[str, int] = counts["paths"]
    wrong = {p: c for p, c in per_path.items() if c != warm + plan.events}
    missing = [hook_path(k) for k in range(n) if hook_path(k) not in per_path]
    if wrong or missing or counts["count"] != total:
        extra = counts["count"] - total
        errors["receiver: endpoints with a wrong count"] = len(wrong) + len(missing)
        if extra:
            errors[f"receiver: {'extra' if extra > 0 else 'missing'} requests"] = abs(extra)
    if counts["bad"]:
        errors["receiver: malformed requests"] = counts["bad"]
    deliveries = n * plan.events
    result = WebhookResult(
        deliveries,
        errors,
        window,
        array("d"),
        cpu1 - cpu0,
        (after["cpu"] - before["cpu"]) + side_cpu,
        rss,
        options,
    )
    body = counts["bytes"] / counts["count"] if counts["count"] else math.nan
    first = after["first"] - t0 if after["first"] else math.nan
    result.notes.append(
        f"{n} endpoints × {plan.events} events = {deliveries:,} deliveries in {window:.2f} s "
        f"(after a warm-up of {warm} each); calls/s = deliveries/s; srv µs/call = sender CPU per "
        f"delivery; bodies {body:.0f} bytes on average; first arrival {first * 1e3:.0f} ms after t0"
    )
    result.notes += side.notes()
    return result


# ---- the receiver process --------------------------------------------------------------------


def _receiver_main(conn: Connection, cpus: str) -> None:
    client_process(conn, cpus, lambda: _run_receiver(conn))


def _run_receiver(conn: Connection) -> None:
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_receive(conn))
    finally:
        loop.close()


class _Tally:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.count = 0
        self.bytes = 0
        self.bad = 0
        self.first = 0.0  # monotonic time of the first request after the last arm
        self.paths: Counter[bytes] = Counter()
        self.target = math.inf

    def hit(self, path: bytes, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.paths[path] += 1
        if not self.first:
            self.first = time.monotonic()
        if self.count >= self.target:
            self.target = math.inf
            self.conn.send(
                {
                    "kind": "reached",
                    "at": time.monotonic(),
                    "first": self.first,
                    "count": self.count,
                    "cpu": time.process_time(),
                }
            )


class _Http(asyncio.Protocol):
    """HTTP/1.1 requests with Content-Length bodies (what httpx sends for bytes), answered
    204 as each one's body is complete; pipelined requests answered in one write."""

    def __init__(self, tally: _Tally):
        self.tally = tally
        self.buffer = b""
        self.left = -1  # body bytes still to come; -1 while waiting for a request's head
        self.path = b""
        self.size = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        at, answers = 0, 0
        while True:
            if self.left >= 0:
                take = min(self.left, len(buffer) - at)
                at += take
                self.left -= take
                if self.left:
                    break
                self.left = -1
                self.tally.hit(self.path, self.size)
                answers += 1
                continue
            end = buffer.find(b"\r\n\r\n", at)
            if end < 0:
                break
            raw = buffer[at:end]
            head = raw.lower()
            at = end + 4
            line = raw.split(b"\r\n", 1)[0].split(b" ")
            length = head.find(b"\r\ncontent-length:")
            if len(line) != 3 or line[0] != b"POST" or b"\r\ntransfer-encoding:" in head or length < 0:
                self._refuse()
                return
            stop = head.find(b"\r\n", length + 2)
            self.size = int(head[length + 17 : stop if stop >= 0 else len(head)])
            self.path, self.left = line[1], self.size
        self.buffer = buffer[at:]
        if answers and self.transport is not None:
            self.transport.write(_NO_CONTENT * answers)

    def _refuse(self) -> None:
        self.tally.bad += 1
        if self.transport is not None:
            self.transport.write(_BAD_REQUEST)
            self.transport.close()


async def _receive(conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    tally = _Tally(conn)
    server = await loop.create_server(lambda: _Http(tally), "127.0.0.1", 0, backlog=1024)
    stopped = loop.create_future()

    def command() -> None:
        try:
            message = conn.recv()
        except EOFError:
            message = ("stop",)
        if message[0] == "expect":
            tally.first = 0.0
            tally.target = message[1]
            conn.send({"kind": "armed", "count": tally.count, "cpu": time.process_time()})
            if tally.count >= tally.target:
                tally.target = math.inf
                conn.send(
                    {
                        "kind": "reached",
                        "at": time.monotonic(),
                        "first": 0.0,
                        "count": tally.count,
                        "cpu": time.process_time(),
                    }
                )
        elif message[0] == "counts":
            paths = {path.decode(): count for path, count in tally.paths.items()}
            conn.send(
                {
                    "kind": "counts",
                    "count": tally.count,
                    "bytes": tally.bytes,
                    "bad": tally.bad,
                    "paths": paths,
                }
            )
        elif not stopped.done():
            stopped.set_result(None)

    loop.add_reader(conn.fileno(), command)
    port = server.sockets[0].getsockname()[1]
    conn.send({"kind": "ready", "port": port})
    try:
        await stopped
    finally:
        loop.remove_reader(conn.fileno())
        server.close()
