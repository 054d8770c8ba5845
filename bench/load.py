"""The load generator: N client processes, each with its own grpc.aio channel(s) and event loop,
running `concurrency` workers that call the server back to back (closed loop) or on a fixed
schedule (open loop, `rate`).

Timeline of one measurement (all processes share CLOCK_MONOTONIC, so one schedule serves all):

    spawn clients → each connects and says ready → parent sets t_start = now + warmup,
    t_end = t_start + duration → everyone calls from now on → only calls that *complete* in
    [t_start, t_end) are counted → the parent reads the server's CPU time at t_start and t_end,
    each client reads its own.

Requests go out as pre-serialized bytes and responses come back as bytes (no serializers), so
the clients spend their CPU on gRPC itself, not on protobuf.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from bench.procs import client_process, reap, tree_cpu, tree_rss_bytes

CallFn = Callable[[], Awaitable[Any]]
_STRAGGLERS = 5.0  # seconds


class Workload(Protocol):
    """What one worker does per call. Must pickle: it is sent to the client processes.

    `bind` runs once per worker inside a client process and returns the call to repeat; a
    stateful workload (say, a refresh token that each call replaces) keeps its state in the
    closure. `worker` is unique across all clients (0 .. clients × concurrency − 1), so
    pre-seeded data can be split between workers. A call that raises grpc.aio.AioRpcError
    is counted as an error under its status code.
    """

    def bind(self, channel: Any, worker: int) -> CallFn: ...


@dataclass(frozen=True)
class Unary:
    """One unary RPC with a fixed request (serialized bytes) and metadata."""

    method: str  # "/grpc.health.v1.Health/Check"
    request: bytes = b""
    metadata: tuple[tuple[str, str], ...] = ()

    def bind(self, channel: Any, worker: int) -> CallFn:
        call = channel.unary_unary(self.method)
        request, metadata = self.request, (self.metadata or None)

        def once() -> Awaitable[Any]:
            return call(request, metadata=metadata)  # type: ignore[no-any-return]

        return once


@dataclass(frozen=True)
class LoadOptions:
    clients: int = 2  # client processes
    concurrency: int = 16  # workers (in-flight calls) per client process
    channels: int = 1  # channels (TCP connections) per client process
    duration: float = 5.0  # measured seconds
    warmup: float = 1.0  # seconds of load before measuring
    rate: float | None = None  # total calls/s for open loop; None = as fast as answered
    # Pin the server to one CPU and the clients to the others, so the server's share is
    # exactly one core and the clients can be seen not to be the bottleneck.
    pin: bool = True
    client_cpus: str = ""  # comma-separated CPUs the clients run on ("" = anywhere); set from `pin`


@dataclass
class LoadResult:
    calls: int  # successful calls completed in the window
    errors: dict[str, int]  # status code name → count, in the window
    window: float  # seconds the server CPU was measured over
    latencies: array[float]  # seconds, sorted, successful calls only
    server_cpu: float  # seconds of server CPU (all threads) in the window
    client_cpu: float  # seconds of CPU of all client processes in the window
    server_rss: int  # bytes, at the end of the window
    options: LoadOptions = field(default_factory=LoadOptions)
    # server_cpu split over the server's processes (the process started, then its workers)
    # when it has several (bench.runner's nexus-workers); () for a single process.
    server_parts: tuple[float, ...] = ()

    @property
    def throughput(self) -> float:
        return self.calls / self.window if self.window > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile of successful calls' latency, in seconds (nan if none)."""
        if not self.latencies:
            return math.nan
        rank = max(1, math.ceil(q / 100 * len(self.latencies)))
        return self.latencies[rank - 1]

    @property
    def cpu_per_call(self) -> float:
        """Server CPU seconds per successful call."""
        return self.server_cpu / self.calls if self.calls else math.nan

    @property
    def server_cores(self) -> float:
        return self.server_cpu / self.window if self.window > 0 else 0.0

    @property
    def client_cores(self) -> float:
        return self.client_cpu / self.window if self.window > 0 else 0.0


class LoadFailed(RuntimeError):
    pass


def run_load(address: str, workload: Workload, server_pid: int, options: LoadOptions) -> LoadResult:
    """Drive `address` with `workload` from `options.clients` processes; measure `server_pid`."""
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked grpc state
    procs: list[Any] = []
    conns: list[Connection] = []
    try:
        for index in range(options.clients):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_client_main,
                args=(theirs, address, workload, options, index),
                name=f"bench-client-{index}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            procs.append(proc)
            conns.append(mine)
        for conn in conns:
            _expect(conn, "ready", 60.0)

        window = measure_window(conns, options, server_pid)

        calls, client_cpu = 0, 0.0
        errors: Counter[str] = Counter()
        latencies: array[float] = array("d")
        for conn in conns:
            report = _expect(conn, "done", 60.0 + options.duration)
            calls += report["calls"]
            client_cpu += report["cpu"]
            errors.update(report["errors"])
            latencies.frombytes(report["latencies"])
        for proc in procs:
            proc.join(10)
        ordered: array[float] = array("d", sorted(latencies))
        return LoadResult(
            calls,
            dict(errors),
            window.wall,
            ordered,
            window.server_cpu,
            client_cpu,
            window.rss,
            options,
            window.parts if len(window.parts) > 1 else (),
        )
    finally:
        reap(procs, conns)


def _expect(conn: Connection, kind: str, timeout: float) -> dict[str, Any]:
    if not conn.poll(timeout):
        raise LoadFailed(f"a client process sent no {kind!r} within {timeout:.0f} s")
    try:
        message: dict[str, Any] = conn.recv()
    except EOFError:
        raise LoadFailed(f"a client process died before {kind!r}") from None
    if message.get("kind") == "error":
        raise LoadFailed(f"a client process failed: {message['error']}")
    if message.get("kind") != kind:
        raise LoadFailed(f"expected {kind!r} from a client, got {message!r}")
    return message


@dataclass(frozen=True)
class Window:
    """What the server did during the measured window: wall and CPU seconds, RSS at its end.
    The server is its process and that process's descendants (a supervisor's workers);
    `parts` is each one's CPU seconds, the process itself first."""

    wall: float
    server_cpu: float
    rss: int
    parts: tuple[float, ...] = ()


def measure_window(conns: list[Connection], options: LoadOptions, server_pid: int) -> Window:
    """Tell every client process when the window starts and ends (after the warm-up), and
    read the server's CPU and memory (its process and any children's) around it."""
    t_start = time.monotonic() + options.warmup
    t_end = t_start + options.duration
    for conn in conns:
        conn.send((t_start, t_end))
    _sleep_until(t_start)
    cpu0, w0 = tree_cpu(server_pid), time.monotonic()
    _sleep_until(t_end)
    cpu1, w1 = tree_cpu(server_pid), time.monotonic()
    parts = tuple(cpu - cpu0.get(pid, 0.0) for pid, cpu in cpu1.items())
    return Window(w1 - w0, sum(parts), tree_rss_bytes(server_pid), parts)


def _sleep_until(when: float) -> None:
    while (left := when - time.monotonic()) > 0:
        time.sleep(left)


# ---- client process side -------------------------------------------------------------------


def _client_main(
    conn: Connection, address: str, workload: Workload, options: LoadOptions, index: int
) -> None:
    client_process(
        conn, options.client_cpus, lambda: asyncio.run(_client(conn, address, workload, options, index))
    )


async def _client(
    conn: Connection, address: str, workload: Workload, options: LoadOptions, index: int
) -> None:
    import grpc  # only client processes load grpc

    # A local subchannel pool gives each channel its own TCP connection.
    channels = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(options.channels)
    ]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 30)
        first = index * options.concurrency
        calls = [workload.bind(channels[k % len(channels)], first + k) for k in range(options.concurrency)]
        conn.send({"kind": "ready"})
        t_start, t_end = await asyncio.to_thread(conn.recv)

        latencies: array[float] = array("d")
        errors: Counter[str] = Counter()
        interval = options.concurrency * options.clients / options.rate if options.rate else 0.0
        workers: list[asyncio.Task[None]] = []
        for k, call in enumerate(calls):
            # Open loop: stagger the workers' schedules evenly over one interval.
            phase = (first + k) / (options.concurrency * options.clients) * interval
            worker = _worker(call, t_start, t_end, latencies, errors, interval, phase)
            workers.append(asyncio.create_task(worker))
        cpu = asyncio.create_task(_own_cpu(t_start, t_end))
        # Calls still out this long after the window are abandoned: they no longer count, and
        # a server that hangs must not hang the bench.
        _, stuck = await asyncio.wait(workers, timeout=max(0.0, t_end - time.monotonic()) + _STRAGGLERS)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        conn.send(
            {
                "kind": "done",
                "calls": len(latencies),
                "errors": dict(errors),
                "cpu": await cpu,
                "latencies": latencies.tobytes(),
            }
        )
    finally:
        for channel in channels:
            await channel.close()


async def _worker(
    call: CallFn,
    t_start: float,
    t_end: float,
    latencies: array[float],
    errors: Counter[str],
    interval: float,
    phase: float,
) -> None:
    import grpc

    now = time.monotonic
    scheduled = now() + phase
    while True:
        if interval:
            # Latency counts from when the call was due, not when it went out, so a server
            # that falls behind shows it (no coordinated omission).
            scheduled += interval
            delay = scheduled - now()
            if delay > 0:
                await asyncio.sleep(delay)
            began = scheduled
        else:
            began = now()
        if began >= t_end:
            return
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            done = now()
            if t_start <= done < t_end:
                errors[error.code().name] += 1
            continue
        done = now()
        if t_start <= done < t_end:
            latencies.append(done - began)


async def _own_cpu(t_start: float, t_end: float) -> float:
    await asyncio.sleep(max(0.0, t_start - time.monotonic()))
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, t_end - time.monotonic()))
    return time.process_time() - cpu0
