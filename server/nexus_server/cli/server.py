"""`nexus serve`, `nexus migrate` and `nexus dev` (the server with Envoy in front: dev.py),
and the event loop they run on."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from nexus_server.config import ConfigError, Settings, check_secret_key

log = logging.getLogger("nexus")
T = TypeVar("T")


def add_arguments(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = sub.add_parser("serve", help="run the gRPC server (NEXUS_* settings)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); more than 1 needs PostgreSQL",
    )
    serve.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="bring the database to the latest schema").set_defaults(fn=cmd_migrate)
    sub.add_parser("dev", help="migrate, then run the server and Envoy in front of it").set_defaults(
        fn=cmd_dev
    )


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from nexus_server.db.migrate import upgrade

    upgrade(settings.database_url)
    log.info("database is at the latest migration", extra={"database": _redacted(settings.database_url)})
    return 0


async def run_server(settings: Settings, *, on_ready: object = None) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    from prometheus_client import start_http_server

    from nexus_server.app.server import create_server

    server, port = await create_server(settings)
    await server.start()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=server.registry)
    log.info(
        "nexus is serving",
        extra={
            "address": f"{settings.host}:{port}",
            "metrics": f"http://{settings.host}:{settings.metrics_port}/metrics"
            if settings.metrics_port
            else None,
            "database": _redacted(settings.database_url),
        },
    )
    if callable(on_ready):
        on_ready(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight calls, ending streams with UNAVAILABLE")
    await server.stop()
    log.info("stopped")


def run_loop(settings: Settings, main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on the event loop the settings choose (NEXUS_EVENT_LOOP)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if settings.event_loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from nexus_server.cli import workers

    try:
        check_secret_key(settings)
        workers.check(settings, args.workers)
    except (ConfigError, workers.WorkersRefused) as error:
        sys.exit(f"nexus serve: refusing to start: {error}")
    if settings.uses_dev_secret_key:
        _warn_dev_secret_key("NEXUS_ALLOW_DEV_SECRET_KEY=1")
    _private_var_dir(settings)
    if args.workers > 1:
        return workers.supervise(settings, args.workers)
    run_loop(settings, run_server(settings))
    return 0


def cmd_dev(settings: Settings, _args: argparse.Namespace) -> int:
    from nexus_server.cli.dev import run_dev

    if settings.uses_dev_secret_key:
        _warn_dev_secret_key("nexus dev")
    if "NEXUS_WEBHOOKS_ALLOW_PRIVATE_URLS" not in os.environ:
        # A developer points webhook endpoints at a receiver on this machine (`nexus webhooks
        # listen`); `nexus serve` never allows it unless told to.
        settings = replace(settings, webhooks_allow_private_urls=True)
        log.warning("development: webhook endpoints may be plain http and private or loopback addresses")
    _private_var_dir(settings)
    cmd_migrate(settings, _args)
    return run_dev(settings)


def _warn_dev_secret_key(allowed_by: str) -> None:
    log.warning(
        "*** DEVELOPMENT SECRET KEY: signing keys are sealed with the built-in key that every "
        "checkout shares; anyone who reads the database can forge any token. Never expose this "
        "server; set NEXUS_SECRET_KEY (docs/operations.md). ***",
        extra={"allowed_by": allowed_by},
    )


def _private_var_dir(settings: Settings) -> None:
    from nexus_server.common.private_files import private_dir

    private_dir(settings.var_dir)


def _redacted(url: str) -> str:
    """The URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
