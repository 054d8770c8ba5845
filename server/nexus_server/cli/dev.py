"""`nexus dev` (`make run`): the Nexus server in-process and a real Envoy in front of it.

The caller (server.cmd_dev) has migrated the database. Ctrl-C or SIGTERM stops both: Envoy is
terminated, then the server stops gracefully. If Envoy dies on its own, the server is stopped
too and the command exits non-zero with Envoy's last stderr lines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nexus_server.common.private_files import private_dir, write_private
from nexus_server.config import Settings
from nexus_server.gateway.envoy_config import (
    DESCRIPTOR_PATH,
    envoy_command,
    render_envoy_config,
    upstream_host,
)

log = logging.getLogger("nexus.dev")

READY_TIMEOUT = 20.0  # seconds for Envoy's admin /ready to say LIVE
STOP_TIMEOUT = 5.0  # seconds Envoy gets to exit after SIGTERM before SIGKILL
STDERR_TAIL = 30  # Envoy stderr lines kept for the failure report
# Envoy sharing our terminal gets Ctrl-C too and may exit a moment before our handler runs:
# an exit this soon before a stop signal is a shutdown, not a crash.
_EXIT_GRACE = 0.5


class EnvoyProcess:
    """Envoy as a child process whose stderr is echoed and its tail kept."""

    def __init__(self, config_path: Path, admin_port: int) -> None:
        self.config_path = config_path
        self.admin_port = admin_port
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def process(self) -> asyncio.subprocess.Process:
        assert self._process is not None, "Envoy was not started"
        return self._process

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *envoy_command(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._pump_stderr())

    async def _pump_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self.tail.append(text)
            print(text, file=sys.stderr, flush=True)

    async def wait_ready(self) -> None:
        """Poll admin /ready until LIVE; raise if Envoy exits or READY_TIMEOUT passes."""
        url = f"http://127.0.0.1:{self.admin_port}/ready"
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                while not await asyncio.to_thread(_is_live, url):
                    if self.process.returncode is not None:
                        raise RuntimeError(f"envoy exited with code {self.process.returncode} while starting")
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise TimeoutError(f"envoy was not ready at {url} within {READY_TIMEOUT:.0f}s") from None

    async def wait(self) -> int:
        code = await self.process.wait()
        if self._reader is not None:
            await self._reader  # the last lines, written as Envoy exited
        return code

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if Envoy lingers; always reaps the process."""
        if self._process is None:
            return
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("envoy did not stop within %.0fs; killing it", STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
        await self.wait()


def _is_live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200 and response.read().strip() == b"LIVE")
    except (urllib.error.URLError, OSError):
        return False


def banner(settings: Settings, grpc_port: int) -> str:
    """What `make run` prints once both are up: addresses and commands to paste."""
    host = upstream_host(settings)  # where a local client connects, even when binding 0.0.0.0
    http = f"http://{host}:{settings.envoy_port}"
    grpc_addr = f"{host}:{grpc_port}"
    return "\n".join(
        [
            "",
            "Nexus is running",
            f"  gRPC (server)         {grpc_addr}",
            f"  HTTP/JSON, gRPC-web   {http}   (Envoy; also plain gRPC)",
            f"  Envoy admin           http://127.0.0.1:{settings.envoy_admin_port}",
            *(
                [f"  metrics               http://{host}:{settings.metrics_port}/metrics"]
                if settings.metrics_port
                else []
            ),
            "",
            "Try:",
            f"  curl -s {http}/v1/plans",
            f"  grpcurl -plaintext {grpc_addr} list",
            "",
            "Ctrl-C stops both.",
            "",
        ]
    )


async def _serve(settings: Settings) -> int:
    from prometheus_client import start_http_server  # imported here to keep `nexus --help` fast

    from nexus_server.app.server import create_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    server, port = await create_server(settings)
    await server.start()
    metrics: Any = None
    envoy: EnvoyProcess | None = None
    try:
        if settings.metrics_port:
            registry = server.registry
            metrics, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
        private_dir(settings.var_dir)
        config_path = settings.var_dir / "envoy.yaml"
        rendered = render_envoy_config(settings, upstream_port=port, descriptor_path=DESCRIPTOR_PATH)
        write_private(config_path, rendered.encode())
        envoy = EnvoyProcess(config_path, settings.envoy_admin_port)
        await envoy.start()
        try:
            await envoy.wait_ready()
        except (RuntimeError, TimeoutError) as error:
            await envoy.stop()
            return _envoy_failed(envoy, str(error))
        if stop.is_set():  # Ctrl-C while starting
            return 0
        print(banner(settings, port), flush=True)
        return await _until_stopped(stop, envoy)
    finally:
        if envoy is not None:
            await envoy.stop()
        log.info("stopping: finishing in-flight calls, ending streams with UNAVAILABLE")
        await server.stop()
        if metrics is not None:
            metrics.shutdown()
            metrics.server_close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")


async def _until_stopped(stop: asyncio.Event, envoy: EnvoyProcess) -> int:
    """0 after a stop signal; 1 (with Envoy's last words) if Envoy exits by itself first."""
    stopped = asyncio.create_task(stop.wait())
    exited = asyncio.create_task(envoy.wait())
    await asyncio.wait({stopped, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stopped), _EXIT_GRACE)
    await _cancel(stopped)
    if stop.is_set():
        await _cancel(exited)
        log.info("stop requested: stopping Envoy and the server")
        return 0
    return _envoy_failed(envoy, f"envoy exited unexpectedly with code {exited.result()}")


async def _cancel(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _envoy_failed(envoy: EnvoyProcess, what: str) -> int:
    lines = "\n".join(f"  {line}" for line in envoy.tail) or "  (no output)"
    print(f"nexus dev: {what}; stopping the server. Envoy's last stderr lines:\n{lines}", file=sys.stderr)
    return 1


def run_dev(settings: Settings) -> int:
    """Run the server and Envoy until Ctrl-C/SIGTERM (0) or until Envoy dies (1)."""
    from nexus_server.cli.server import run_loop

    return run_loop(settings, _serve(settings))
