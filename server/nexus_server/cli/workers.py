"""`nexus serve --workers N`: N server processes sharing one port, so one machine uses all
its cores (a grpc.aio server is one Python interpreter: one core at most).

Each worker is `nexus serve` itself, started with NEXUS_REUSE_PORT=1 so it binds the port
with SO_REUSEPORT and the kernel spreads connections over the workers. They are replicas in
every other sense already: state in PostgreSQL, wake-ups through LISTEN/NOTIFY, rate-limit
counters and the revocation feed in Redis or the database, leases for background work. The
embedded SQLite default is one process by design (its caches and wake-ups do not cross
processes), so several workers on it are refused.

Worker i (from 0) serves metrics on NEXUS_METRICS_PORT + i. SIGTERM or SIGINT goes to every
worker, which stops gracefully; if one worker dies on its own the others are stopped and the
command exits non-zero, so the service manager restarts the whole set with one state.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from nexus_server.config import Settings

log = logging.getLogger("nexus")
STOP_TIMEOUT = 30.0  # seconds workers get to stop gracefully before SIGKILL


class WorkersRefused(Exception):
    """Why these settings cannot run several workers."""


def check(settings: Settings, workers: int) -> None:
    if workers < 1:
        raise WorkersRefused("--workers must be at least 1")
    if workers == 1:
        return
    if settings.is_sqlite:
        raise WorkersRefused(
            "several workers need PostgreSQL (NEXUS_DATABASE_URL): the embedded SQLite database "
            "is one process's, and its caches and wake-ups do not cross processes"
        )
    if settings.port == 0:
        raise WorkersRefused("several workers share one port: set NEXUS_PORT to a fixed port, not 0")
    if settings.redis_url is None:
        log.warning(
            "several workers without NEXUS_REDIS_URL: each keeps its own rate-limit counters, "
            "so a limit is enforced per worker"
        )


def supervise(settings: Settings, workers: int) -> int:
    """Run `workers` copies of `nexus serve` until a stop signal or one of them dies."""
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    for index in range(workers):
        env = dict(os.environ, NEXUS_REUSE_PORT="1", NEXUS_WORKER_INDEX=str(index))
        if settings.metrics_port:
            env["NEXUS_METRICS_PORT"] = str(settings.metrics_port + index)
        children.append(subprocess.Popen([sys.executable, "-m", "nexus_server.cli", "serve"], env=env))
    log.info("nexus is serving with workers", extra={"workers": workers, "pids": [c.pid for c in children]})
    while not stopping and all(child.poll() is None for child in children):
        time.sleep(0.2)
    status = 0
    if not stopping:
        dead = next(c for c in children if c.poll() is not None)
        log.error("a worker exited on its own; stopping the others", extra={"pid": dead.pid})
        status = 1
        stop(signal.SIGTERM, None)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return status
