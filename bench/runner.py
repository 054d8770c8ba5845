"""The measured server processes: `python -m bench.runner KIND [--settings JSON] [--var-dir DIR]`.

KIND is `echo` (a bare grpc.aio server with a trivial Health servicer: no interceptors, no
other service, default options), `nexus` (Nexus as `nexus serve` builds it: create_server,
its full interceptor chain, on a freshly migrated SQLite file), or a floor: `events-bare`
(bench/stream_bare.py), `webhooks-bare` (bench/webhook_bare.py: its port is a control
port). All bind 127.0.0.1:0, print `READY <port>` on stdout once serving, and then send
stdout to stderr (the parent's log file), so nothing they print later can block on a pipe
nobody reads. They stop on SIGTERM/SIGINT or when the bench that started them dies.
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
from typing import Any

from bench.procs import die_with_parent


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


async def serve_nexus(args: argparse.Namespace) -> None:
    from nexus_server import logs
    from nexus_server.app.server import create_server
    from nexus_server.config import Settings
    from nexus_server.db.migrate import upgrade

    var_dir = Path(args.var_dir)
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
    overrides = json.loads(args.settings)
    settings = dataclasses.replace(
        settings, **{k: _convert(getattr(settings, k), v) for k, v in overrides.items()}
    )
    # Migrate here rather than in the parent: Alembic stays out of the load generator's process.
    await asyncio.to_thread(upgrade, settings.database_url)
    logs.configure(settings.log_level)
    server, port = await create_server(settings)
    await server.start()
    _ready(port)
    await _until_signalled()
    await server.stop(1)


async def serve_events_bare(args: argparse.Namespace) -> None:
    from bench.stream_bare import serve  # issue 7's fan-out floor: grpc.aio alone

    await serve(args)


async def serve_webhooks_bare(args: argparse.Namespace) -> None:
    from bench.webhook_bare import serve  # the webhook floor: httpx alone

    await serve(args)


SERVERS = {
    "echo": serve_echo,
    "nexus": serve_nexus,
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
    args = parser.parse_args()
    if args.cpus:
        # Before grpc starts its threads, so they all inherit the mask.
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    # The loop: Nexus's own setting (NEXUS_EVENT_LOOP's default unless the spec overrides
    # event_loop); the bare floors run the standard loop unless their spec asks for uvloop.
    from nexus_server.cli.server import run_loop
    from nexus_server.config import Settings

    default = Settings.event_loop if args.kind == "nexus" else "asyncio"
    loop = json.loads(args.settings).get("event_loop", default)
    run_loop(dataclasses.replace(Settings(), event_loop=loop), SERVERS[args.kind](args))


if __name__ == "__main__":
    main()
