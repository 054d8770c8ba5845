"""The measured server processes: `python -m bench.runner KIND [--settings JSON] [--var-dir DIR]`.

KIND is `echo` (a bare grpc.aio server with a trivial Health servicer: no interceptors, no
other service, default options), `nexus` (Nexus as `nexus serve` builds it: create_server,
its full interceptor chain, on a freshly migrated SQLite file), `nexus-workers` (as `nexus
serve --workers N`: N `nexus` processes sharing one port with SO_REUSEPORT, under this one),
or a floor: `events-bare` (bench/stream_bare.py), `webhooks-bare` (bench/webhook_bare.py: its
port is a control port). All bind 127.0.0.1:0, print `READY <port>` on stdout once serving,
and then send stdout to stderr (the parent's log file), so nothing they print later can block
on a pipe nobody reads. They stop on SIGTERM/SIGINT or when the bench that started them dies.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.procs import die_with_parent

if TYPE_CHECKING:
    from nexus_server.config import Settings


def _ready(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_echo(_args: argparse.Namespace) -> None:
    import grpc  # each server kind imports only what it serves
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    class Health(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
        """The same messages as Nexus's health RPC, and nothing else."""

        async def Check(self, request: Any, context: Any) -> Any:
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    _ready(port)
    await _until_signalled()
    await server.stop(1)


def _convert(current: Any, value: Any) -> Any:
    """JSON value → the type of the Settings field it replaces."""
    if isinstance(current, timedelta):
        return timedelta(seconds=float(value))
    if isinstance(current, Path):
        return Path(value)
    return value


def _nexus_settings(var_dir: Path, overrides: dict[str, Any]) -> Settings:
    """The Settings a bench Nexus runs with: the environment's, a fresh SQLite file in
    `var_dir`, a free port, no metrics port, then the scenario's `overrides`."""
    from nexus_server.config import Settings

    base = Settings()
    settings = dataclasses.replace(
        base,
        database_url=f"sqlite+aiosqlite:///{var_dir / 'nexus.db'}",
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        var_dir=var_dir,
        # The rows seed hundreds of accounts from 127.0.0.1; the sign-up limit is not measured.
        signups_per_address=10_000_000,
    )
    return dataclasses.replace(
        settings, **{k: _convert(getattr(settings, k), v) for k, v in overrides.items()}
    )


async def serve_nexus(args: argparse.Namespace) -> None:
    from nexus_server import logs
    from nexus_server.app.server import create_server
    from nexus_server.db.migrate import upgrade

    settings = _nexus_settings(Path(args.var_dir), json.loads(args.settings))
    if not args.no_migrate:
        # Here rather than in the parent: Alembic stays out of the load generator's process.
        await asyncio.to_thread(upgrade, settings.database_url)
    logs.configure(settings.log_level)
    server, port = await create_server(settings)
    await server.start()
    _ready(port)
    await _until_signalled()
    await server.stop(1)


async def serve_nexus_workers(args: argparse.Namespace) -> None:
    """`nexus serve --workers N` for the bench: N `nexus` children on one port (SO_REUSEPORT),
    this process their supervisor (it serves nothing itself).

    Its settings are the `nexus` kind's plus `workers` (default 2). It migrates the database
    once, then starts the workers one after another, each with `--no-migrate` and
    `reuse_port`: the first on a free port, the rest on the port the first says READY with
    (so nothing else can take it in between), and says READY itself when all are. Each worker
    dies with this process (bench.procs.die_with_parent, in main); SIGTERM stops them all,
    and if one ends on its own the others are stopped and this process exits 1, so the bench
    reports a server that exited during the run. The bench reads the CPU of this process and
    its descendants (bench.procs.tree_cpu), so the workers' is the server's.
    """
    from nexus_server.cli.workers import WorkersRefused, check
    from nexus_server.db.migrate import upgrade

    overrides = json.loads(args.settings)
    workers = int(overrides.pop("workers", 2))
    var_dir = Path(args.var_dir)
    settings = _nexus_settings(var_dir, overrides)
    try:  # the server's own refusals (SQLite with several workers, …), with a port to share
        check(dataclasses.replace(settings, port=1), workers)
    except WorkersRefused as error:
        raise SystemExit(f"nexus-workers: {error}") from None

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.to_thread(upgrade, settings.database_url)

    children: list[asyncio.subprocess.Process] = []
    port = 0
    try:
        for index in range(workers):
            if stop.is_set():
                return  # stopped while starting: the finally stops those started
            mine = {**overrides, "port": port, "reuse_port": True}
            # Spawned from the loop's (main) thread: PR_SET_PDEATHSIG fires when the *thread*
            # that forked a child ends, so a worker forked from a helper thread would die
            # with that thread. Workers share this process's stderr (the row's server.log).
            child = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "bench.runner", "nexus", "--no-migrate"),
                *("--var-dir", str(var_dir), "--settings", json.dumps(mine)),
                env={**os.environ, "NEXUS_WORKER_INDEX": str(index)},
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )
            children.append(child)
            assert child.stdout is not None
            line = (await child.stdout.readline()).decode()
            if not line.startswith("READY "):
                raise SystemExit(f"nexus-workers: worker {index} gave no READY: {line!r}")
            said = int(line.split()[1])
            if port and said != port:
                raise SystemExit(f"nexus-workers: worker {index} bound port {said}, not {port}")
            port = said
        _ready(port)
        waits = [asyncio.ensure_future(child.wait()) for child in children]
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopping, *waits], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        dead = [(i, c.returncode) for i, c in enumerate(children) if c.returncode is not None]
        if dead and not stop.is_set():
            raise SystemExit(f"nexus-workers: worker {dead[0][0]} exited ({dead[0][1]}) on its own")
    finally:
        await _stop_all(children)


async def _stop_all(children: list[asyncio.subprocess.Process], grace: float = 4.0) -> None:
    """SIGTERM every child at once, give them `grace` seconds together, then SIGKILL; reap all."""
    for child in children:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    waits = [asyncio.ensure_future(child.wait()) for child in children]
    _, late = await asyncio.wait(waits, timeout=grace)
    for child in children:
        if child.returncode is None:
            child.kill()
    await asyncio.gather(*late)


async def serve_events_bare(args: argparse.Namespace) -> None:
    from bench.stream_bare import serve  # issue 7's fan-out floor: grpc.aio alone

    await serve(args)


async def serve_webhooks_bare(args: argparse.Namespace) -> None:
    from bench.webhook_bare import serve  # the webhook floor: httpx alone

    await serve(args)


SERVERS = {
    "echo": serve_echo,
    "nexus": serve_nexus,
    "nexus-workers": serve_nexus_workers,
    "events-bare": serve_events_bare,
    "webhooks-bare": serve_webhooks_bare,
}


def main() -> None:
    die_with_parent()
    parser = argparse.ArgumentParser(prog="python -m bench.runner")
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--settings", default="{}", help="JSON object of nexus Settings overrides")
    parser.add_argument("--var-dir", default=".", help="where nexus keeps its SQLite file")
    parser.add_argument("--cpus", default="", help="comma-separated CPUs to pin the server to")
    parser.add_argument(
        "--no-migrate", action="store_true", help="nexus: the database is migrated already (a worker's)"
    )
    args = parser.parse_args()
    if args.cpus:
        # Before grpc starts its threads, so they all inherit the mask.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    # The loop: Nexus's own setting (NEXUS_EVENT_LOOP's default unless the spec overrides
    # event_loop); the bare floors run the standard loop unless their spec asks for uvloop.
    from bench.probe import from_env
    from nexus_server.cli.server import run_loop
    from nexus_server.config import Settings

    default = Settings.event_loop if args.kind == "nexus" else "asyncio"
    loop = json.loads(args.settings).get("event_loop", default)
    probe = from_env() if args.kind == "nexus" else None
    if probe is not None:
        loop = "asyncio"  # the probe times asyncio's handles; uvloop's are out of its reach
    run_loop(dataclasses.replace(Settings(), event_loop=loop), SERVERS[args.kind](args))
    if probe is not None:
        probe.write()


if __name__ == "__main__":
    main()
